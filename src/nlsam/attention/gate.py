"""The gate of every attention module: the sigmoid that turns attention logits into a scale.

``init="paper"`` is each paper's sigmoid, ``sigmoid(z)`` in (0, 1). ``init="identity"`` is
``2 * sigmoid(z)`` in (0, 2) with the layer that produces ``z`` initialised to zero, so a module
inserted into a pretrained network returns its input unchanged (the gate is exactly 1) and
learns from there; the default stays the paper's gate exactly.

The gate travels with the weights: its scale (1 for ``sigmoid``, 2 for ``2 * sigmoid``) is the
buffer ``gate.scale`` of the state dict, and loading a state dict restores the gate it was saved
with, whatever gate the receiving module was built with. A state dict saved before the buffer
existed (it has no ``scale`` key) keeps the receiving module's gate.
"""

from __future__ import annotations

from typing import Tuple

import torch
from torch import nn

from .._ranges import short_repr

__all__ = ["Gate", "INITS", "apply_init", "check_init", "zero_"]

#: Gate initialisations every attention part takes as its ``init`` option: ``"paper"``, the
#: paper's modules as they are; ``"identity"``, each module starts as the identity (see above).
#: The one list of them: ``nlsam.attention.INITS`` and ``nlsam.models.INIT_MODES`` are this tuple.
INITS: Tuple[str, ...] = ("paper", "identity")


def check_init(init: str) -> str:
    """Return ``init`` when it is a gate initialisation (:data:`nlsam.attention.INITS`:
    ``"paper"`` or ``"identity"``), else raise a one-line ``ValueError`` naming the valid ones."""
    if init not in INITS:
        raise ValueError(f"unknown attention init {short_repr(init)}; valid: {', '.join(INITS)}")
    return init


def apply_init(module: nn.Module, init: str) -> str:
    """Give the attention ``module`` the gate initialisation ``init`` and return it: the one
    place an initialisation takes effect.

    ``init`` is checked (:func:`check_init`) and kept as ``module.init``; ``"identity"`` then calls
    the module's ``reset_identity()`` (its gate becomes ``2 * sigmoid`` and the layer in front of
    it starts at zero, so the module returns its input unchanged), ``"paper"`` leaves the module
    as built. Every built-in module calls this at the end of its constructor;
    :func:`nlsam.attention.identity_init` calls it on modules already built, and a network calls
    it again after its own weight init, which would undo an identity start.
    """
    # nn.Module's __setattr__ and __getattr__ are annotated for tensors and modules only
    module.init = check_init(init)  # type: ignore[assignment]
    if init == "identity":
        module.reset_identity()  # type: ignore[operator]
    return init


#: The gate's scale by kind: ``scale * sigmoid(z)``.
_SCALES = {1.0: "sigmoid", 2.0: "2 * sigmoid"}


class Gate(nn.Module):
    """``sigmoid(z)``, or ``2 * sigmoid(z)`` once :meth:`make_identity` was called.

    The choice is kept in the persistent buffer ``scale`` so that it is saved and loaded with
    the weights (see the module docstring); ``identity`` is the same choice as a Python flag,
    which the forward pass reads.
    """

    def __init__(self) -> None:
        super().__init__()
        self.identity = False
        self.register_buffer("scale", torch.tensor(1.0))

    def make_identity(self) -> None:
        self._set_identity(True)

    def _set_identity(self, identity: bool) -> None:
        self.identity = identity
        self.get_buffer("scale").fill_(2.0 if identity else 1.0)

    def _load_from_state_dict(
        self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs
    ) -> None:
        key = prefix + "scale"
        saved = state_dict.get(key)
        if saved is None:
            # saved before the gate travelled with the weights: keep this module's gate
            state_dict = dict(state_dict, **{key: self.get_buffer("scale").detach().clone()})
        elif not (isinstance(saved, torch.Tensor) and saved.numel() == 1 and float(saved) in _SCALES):
            error_msgs.append(f"{key} must be 1.0 (sigmoid gate) or 2.0 (2 * sigmoid gate), got {saved!r}")
            return
        super()._load_from_state_dict(
            state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs
        )
        self.identity = float(self.get_buffer("scale")) == 2.0

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        gate = torch.sigmoid(z)
        return gate * 2.0 if self.identity else gate

    def extra_repr(self) -> str:
        return _SCALES[2.0 if self.identity else 1.0]


def zero_(*modules: nn.Module) -> None:
    """Zero the weight and bias of each module (the layer in front of an identity gate)."""
    for module in modules:
        for name in ("weight", "bias"):
            tensor = getattr(module, name, None)
            if isinstance(tensor, torch.Tensor):
                nn.init.zeros_(tensor)
