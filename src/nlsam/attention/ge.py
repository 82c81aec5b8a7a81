"""Gather-excite (Hu et al., 2018), the theta-plus variant with global extent: a depthwise
convolution whose kernel covers the whole feature map (then batch norm) gathers one value per
channel, a bottleneck MLP C -> C/r -> C with ReLU excites it, and a sigmoid gate rescales each
channel. This is the GE the NL-SAM paper combines with NL-SAM ("global depthwise convolution")."""

from __future__ import annotations

from typing import Tuple

import torch
import torch.nn.functional as F
from torch import nn

from .._sizes import SizeLike, to_2tuple
from .gate import apply_gate
from .nlsam import _check_feature_map
from .registry import register_attention
from .se import _Excite

__all__ = ["GatherExcite"]


class GatherExcite(_Excite):
    """GE-theta-plus with a global gather.

    Args:
        channels: input channels C.
        feature_size: (H, W) at the training resolution; the depthwise gather kernel is this size.
        reduction: bottleneck ratio r of the excite MLP (the NL-SAM paper used 4 on CIFAR).
        init: ``"paper"`` or ``"identity"`` (see :mod:`nlsam.attention.gate`).

    At another input size the map is first average-pooled (adaptively) to the trained size, so
    the module runs on any input; at the training size nothing changes.
    """

    def __init__(self, channels: int, feature_size: SizeLike, reduction: int = 16, init: str = "paper") -> None:
        super().__init__()
        self.feature_size = to_2tuple(feature_size)
        self.gather = nn.Conv2d(channels, channels, self.feature_size, groups=channels, bias=False)
        self.gather_norm = nn.BatchNorm2d(channels)
        self._build_excite(channels, reduction, init)

    def split_gate(self, x: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """``(x, gate)``, the B x C x 1 x 1 channel gate (see :func:`nlsam.attention.add_attended`)."""
        _check_feature_map(x, "GatherExcite")
        context = x
        if x.shape[-2] != self.feature_size[0] or x.shape[-1] != self.feature_size[1]:
            context = F.adaptive_avg_pool2d(x, self.feature_size)
        context = self.gather_norm(self.gather(context))
        return x, self.excite(context)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features, gate = self.split_gate(x)
        return apply_gate(features, gate)


register_attention("ge", GatherExcite, groups=("channel",))
