"""Squeeze-and-excitation (Hu et al., 2018): global average pooling, then a bottleneck MLP
C -> C/r -> C with ReLU and sigmoid, rescaling each channel."""

from __future__ import annotations

from typing import Tuple

import torch
from torch import nn

from .._ranges import Range
from .gate import Gate, apply_gate, apply_init, zero_
from .nlsam import _check_feature_map
from .registry import register_attention

__all__ = ["SqueezeExcite"]


def _channel_reduction_range(channels: int) -> Range:
    """The valid reductions r of a channel bottleneck C -> C // r (SE, GE, CBAM, BAM): ``1..C``,
    so that it keeps at least one unit."""
    return Range(
        1,
        channels,
        integer=True,
        why=f"the channel bottleneck has C // r units, at least one: here C = {channels} channels",
    )


def _reduced_channels(channels: int, reduction: int) -> int:
    """Hidden width of a channel bottleneck, ``channels // reduction`` for a reduction in
    ``1..channels``; a larger reduction is refused (``ValueError``), not rounded up to one unit."""
    _channel_reduction_range(channels).check("reduction", reduction)
    return channels // reduction


class _Excite(nn.Module):
    """The excite MLP that SE and GE share: ``fc1`` (C -> C/r), ReLU, ``fc2`` (C/r -> C), gate."""

    def _build_excite(self, channels: int, reduction: int, init: str) -> None:
        hidden = _reduced_channels(channels, reduction)
        self.fc1 = nn.Conv2d(channels, hidden, 1)
        self.act = nn.ReLU(inplace=True)
        self.fc2 = nn.Conv2d(hidden, channels, 1)
        self.gate = Gate()
        apply_init(self, init)

    def excite(self, context: torch.Tensor) -> torch.Tensor:
        return self.gate(self.fc2(self.act(self.fc1(context))))

    def reset_identity(self) -> None:
        """Gate ``2 * sigmoid`` after a zeroed ``fc2``: the block starts as the identity."""
        zero_(self.fc2)
        self.gate.make_identity()


class SqueezeExcite(_Excite):
    """SE block. ``reduction`` is r; SENet uses 16, the NL-SAM paper's CIFAR experiments 4.
    ``init``: ``"paper"`` or ``"identity"`` (see :mod:`nlsam.attention.gate`)."""

    def __init__(self, channels: int, reduction: int = 16, init: str = "paper") -> None:
        super().__init__()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self._build_excite(channels, reduction, init)

    def split_gate(self, x: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """``(x, gate)``, the B x C x 1 x 1 channel gate (see :func:`nlsam.attention.add_attended`)."""
        _check_feature_map(x, "SqueezeExcite")
        return x, self.excite(self.pool(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features, gate = self.split_gate(x)
        return apply_gate(features, gate)


register_attention("se", SqueezeExcite, groups=("channel",))
