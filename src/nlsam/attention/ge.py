"""Gather-excite (Hu et al., 2018), the theta-plus variant with global extent: a depthwise
convolution whose kernel covers the whole feature map (then batch norm) gathers one value per
channel, a bottleneck MLP C -> C/r -> C with ReLU excites it, and a sigmoid gate rescales each
channel. This is the GE the NL-SAM paper combines with NL-SAM ("global depthwise convolution")."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .gate import Gate, check_init, zero_
from .nlsam import SizeLike, to_2tuple
from .registry import register_attention
from .se import reduced_channels


class GatherExcite(nn.Module):
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
        hidden = reduced_channels(channels, reduction)
        self.gather = nn.Conv2d(
            channels, channels, self.feature_size, groups=channels, bias=False
        )
        self.gather_norm = nn.BatchNorm2d(channels)
        self.fc1 = nn.Conv2d(channels, hidden, 1)
        self.act = nn.ReLU(inplace=True)
        self.fc2 = nn.Conv2d(hidden, channels, 1)
        self.gate = Gate()
        self.init = check_init(init)
        if init == "identity":
            self.reset_identity()

    def reset_identity(self) -> None:
        """Gate ``2 * sigmoid`` after a zeroed ``fc2``: the block starts as the identity."""
        zero_(self.fc2)
        self.gate.make_identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        context = x
        if x.shape[-2] != self.feature_size[0] or x.shape[-1] != self.feature_size[1]:
            context = F.adaptive_avg_pool2d(x, self.feature_size)
        context = self.gather_norm(self.gather(context))
        scale = self.gate(self.fc2(self.act(self.fc1(context))))
        return x * scale


register_attention("ge", GatherExcite, groups=("channel",))
