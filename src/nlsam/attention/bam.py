"""BAM, the bottleneck attention module (Park et al., 2018).

A channel branch (global average pool, MLP with batch norm) and a spatial branch (1x1
reduction, two dilated 3x3 convolutions with dilation 4, 1x1 to one channel) are combined into
a 3-D map ``M = sigmoid(M_c + M_s)`` and applied residually: ``x * (1 + M)``. This follows the
BAM paper's equation; the authors' released code multiplies the two branches instead of adding.
BAM is meant for the points between stages, and the networks here put it there.
"""

from __future__ import annotations

import torch
from torch import nn

from .._ranges import Range
from .gate import Gate, apply_init, zero_
from .nlsam import _check_feature_map
from .registry import register_attention
from .se import _reduced_channels

__all__ = ["BAM"]


class BAM(nn.Module):
    """Bottleneck attention module with reduction ``r`` (16 in BAM) and dilation ``d`` (4).

    ``init="identity"``: ``x * 2 sigmoid(M_c + M_s)`` with both branches' last convolutions at
    zero, which starts as the identity (BAM's own ``x * (1 + sigmoid(.))`` cannot: its scale
    lies in (1, 2)).
    """

    DILATION_RANGE = Range(1, 64, integer=True, why_high="BAM uses 4; a wider dilation reads mostly padding")

    def __init__(self, channels: int, reduction: int = 16, dilation: int = 4, init: str = "paper") -> None:
        super().__init__()
        self.DILATION_RANGE.check("dilation", dilation)
        hidden = _reduced_channels(channels, reduction)
        self.channel_branch = nn.Sequential(
            nn.AdaptiveAvgPool2d(1),
            nn.Conv2d(channels, hidden, 1),
            nn.BatchNorm2d(hidden),
            nn.ReLU(inplace=True),
            nn.Conv2d(hidden, channels, 1),
        )
        self.spatial_branch = nn.Sequential(
            nn.Conv2d(channels, hidden, 1),
            nn.BatchNorm2d(hidden),
            nn.ReLU(inplace=True),
            nn.Conv2d(hidden, hidden, 3, padding=dilation, dilation=dilation),
            nn.BatchNorm2d(hidden),
            nn.ReLU(inplace=True),
            nn.Conv2d(hidden, hidden, 3, padding=dilation, dilation=dilation),
            nn.BatchNorm2d(hidden),
            nn.ReLU(inplace=True),
            nn.Conv2d(hidden, 1, 1),
        )
        self.gate = Gate()
        apply_init(self, init)

    def reset_identity(self) -> None:
        zero_(self.channel_branch[-1], self.spatial_branch[-1])
        self.gate.make_identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _check_feature_map(x, "BAM")
        attention = self.gate(self.channel_branch(x) + self.spatial_branch(x))
        return x * attention if self.gate.identity else x * (1.0 + attention)


register_attention("bam", BAM, placement="stage", groups=("channel",))
