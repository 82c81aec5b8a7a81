"""The gate of every attention module: the sigmoid that turns attention logits into a scale.

``init="paper"`` is each paper's sigmoid, ``sigmoid(z)`` in (0, 1). ``init="identity"`` is
``2 * sigmoid(z)`` in (0, 2) with the layer that produces ``z`` initialised to zero, so a module
inserted into a pretrained network returns its input unchanged (the gate is exactly 1) and
learns from there; the default stays the paper's gate exactly.
"""
from __future__ import annotations

import torch
from torch import nn

from .registry import INITS


def check_init(init: str) -> str:
    if init not in INITS:
        raise ValueError(f"unknown attention init {init!r}; valid: {', '.join(INITS)}")
    return init


class Gate(nn.Module):
    """``sigmoid(z)``, or ``2 * sigmoid(z)`` once :meth:`make_identity` was called."""

    def __init__(self) -> None:
        super().__init__()
        self.identity = False

    def make_identity(self) -> None:
        self.identity = True

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        gate = torch.sigmoid(z)
        return gate * 2.0 if self.identity else gate

    def extra_repr(self) -> str:
        return "2 * sigmoid" if self.identity else "sigmoid"


def zero_(*modules: nn.Module) -> None:
    """Zero the weight and bias of each module (the layer in front of an identity gate)."""
    for module in modules:
        nn.init.zeros_(module.weight)
        if getattr(module, "bias", None) is not None:
            nn.init.zeros_(module.bias)
