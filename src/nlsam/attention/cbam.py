"""CBAM (Woo et al., 2018): a channel gate (average- and max-pooled descriptors through one
shared MLP, summed, sigmoid) followed by a spatial gate (channel max and mean, 7x7 convolution,
batch norm, sigmoid), as in the authors' official code."""

from __future__ import annotations

from typing import Tuple

import torch
from torch import nn

from .._ranges import Range
from .gate import Gate, apply_gate, apply_init, zero_
from .nlsam import _check_feature_map
from .registry import register_attention, register_composition
from .se import _reduced_channels

__all__ = ["CBAMChannelGate", "CBAMSpatialGate"]


class CBAMChannelGate(nn.Module):
    """CBAM's channel attention: ``sigmoid(MLP(avgpool(x)) + MLP(maxpool(x)))``."""

    def __init__(self, channels: int, reduction: int = 16, init: str = "paper") -> None:
        super().__init__()
        hidden = _reduced_channels(channels, reduction)
        self.mlp = nn.Sequential(
            nn.Conv2d(channels, hidden, 1),
            nn.ReLU(inplace=True),
            nn.Conv2d(hidden, channels, 1),
        )
        self.gate = Gate()
        apply_init(self, init)

    def reset_identity(self) -> None:
        """Gate ``2 * sigmoid`` after a zeroed last MLP layer: both descriptors give 0, gate 1."""
        zero_(self.mlp[2])
        self.gate.make_identity()

    def split_gate(self, x: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """``(x, gate)``, the B x C x 1 x 1 channel gate (see :func:`nlsam.attention.add_attended`)."""
        _check_feature_map(x, "CBAMChannelGate")
        avg = self.mlp(x.mean(dim=(2, 3), keepdim=True))
        mx = self.mlp(x.amax(dim=(2, 3), keepdim=True))
        return x, self.gate(avg + mx)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features, gate = self.split_gate(x)
        return apply_gate(features, gate)


class CBAMSpatialGate(nn.Module):
    """CBAM's spatial attention: ``sigmoid(BN(conv7x7([max_c(x), mean_c(x)])))``.

    This is the local, convolutional spatial gate NL-SAM replaces in ``"cbam+nlsam"``.
    """

    #: odd, so that the padding ``k // 2`` keeps the map's size
    KERNEL_RANGE = Range(
        1,
        63,
        integer=True,
        why="odd: the padding k // 2 keeps the map's size",
        why_high="CBAM uses 7; a wider kernel reads mostly padding",
    )

    def __init__(self, kernel_size: int = 7, init: str = "paper") -> None:
        super().__init__()
        self.KERNEL_RANGE.check("kernel_size", kernel_size)
        if kernel_size % 2 == 0:
            raise ValueError(self.KERNEL_RANGE.message("kernel_size", kernel_size))
        self.conv = nn.Conv2d(2, 1, kernel_size, padding=kernel_size // 2, bias=False)
        self.norm = nn.BatchNorm2d(1, eps=1e-5, momentum=0.01)
        self.gate = Gate()
        apply_init(self, init)

    def reset_identity(self) -> None:
        """Gate ``2 * sigmoid`` after a batch norm with zero scale and shift (the convolution
        keeps its init: zeroing it would leave batch norm normalising a constant)."""
        zero_(self.norm)
        self.gate.make_identity()

    def attention_map(self, x: torch.Tensor) -> torch.Tensor:
        _check_feature_map(x, "CBAMSpatialGate")
        pooled = torch.cat([x.amax(dim=1, keepdim=True), x.mean(dim=1, keepdim=True)], dim=1)
        return self.gate(self.norm(self.conv(pooled)))

    def split_gate(self, x: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """``(x, map)``, the B x 1 x H x W spatial gate (see :func:`nlsam.attention.add_attended`)."""
        return x, self.attention_map(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features, gate = self.split_gate(x)
        return apply_gate(features, gate)


register_attention("cbam_channel", CBAMChannelGate, groups=("channel",), listed=False)
register_attention("cbam_spatial", CBAMSpatialGate, spatial_map=True, groups=("channel",), listed=False)
register_composition("cbam", ("cbam_channel", "cbam_spatial"))
