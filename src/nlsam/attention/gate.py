"""The gate of every attention module: the sigmoid that turns attention logits into a scale.

``init="paper"`` is each paper's sigmoid, ``sigmoid(z)`` in (0, 1). ``init="identity"`` is
``2 * sigmoid(z)`` in (0, 2) with the layer that produces ``z`` initialised to zero, so a module
inserted into a pretrained network returns its input unchanged (the gate is exactly 1) and
learns from there; the default stays the paper's gate exactly.

The gate travels with the weights: its scale (1 for ``sigmoid``, 2 for ``2 * sigmoid``) is the
buffer ``gate.scale`` of the state dict, and loading a state dict restores the gate it was saved
with, whatever gate the receiving module was built with. A state dict saved before the buffer
existed (it has no ``scale`` key) keeps the receiving module's gate.

**The gate at the block's epilogue.** Every gating module here (NL-SAM, SE, GE, CBAM's gates)
ends in ``x * gate``, and a residual block then adds the shortcut. A module that hands out its
gate, ``split_gate(x) -> (x, gate)``, lets the block compute ``shortcut + x * gate`` in one
elementwise pass (:func:`add_attended`, through :func:`apply_gate`) instead of writing the gated
map and reading it again for the addition, forward and backward. NL-SAM's gate is handed out at
its pooled grid, h x w: nearest upsampling by the integer factor k is an expand and reshape of
that grid (the ONNX graph carries these instead of a Resize node).
"""

from __future__ import annotations

from typing import Optional, Tuple

import torch
from torch import nn

from .._ranges import short_repr

__all__ = ["Gate", "INITS", "add_attended", "apply_gate", "apply_init", "check_init", "zero_"]

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


def apply_gate(x: torch.Tensor, gate: torch.Tensor, shortcut: Optional[torch.Tensor] = None) -> torch.Tensor:
    """``x * gate`` (plus ``shortcut`` when given) in one elementwise pass over ``x``.

    ``gate`` broadcasts over ``x`` (B x C x H x W): a channel gate (B x C x 1 x 1), a full spatial
    map (B x 1 x H x W), or a spatial map at a coarser grid h x w with H and W multiples of h and w,
    upsampled here by nearest neighbour (the paper's distribution step, its Table 3 choice) as a
    broadcast of each value over its kh x kw block, equal to ``F.interpolate(gate, (H, W),
    mode="nearest")``. With ``shortcut`` this is ``torch.addcmul(shortcut, x, gate)``: the gated map
    is never written and read again for the residual addition.
    """
    height, width = x.shape[-2], x.shape[-1]
    grid = (gate.shape[-2], gate.shape[-1])
    if gate.dim() == 4 and grid != (height, width) and grid != (1, 1):
        if height % grid[0] or width % grid[1]:
            raise ValueError(
                f"a {grid[0]}x{grid[1]} gate does not tile a {height}x{width} feature map; "
                "valid gates are 1x1, the map's size, or a grid whose sides divide the map's"
            )
        blocks = gate[:, :, :, None, :, None].expand(-1, -1, -1, height // grid[0], -1, width // grid[1])
        gate = blocks.flatten(4, 5).flatten(2, 3)  # one value per position: 1/C of a pass over x
    if shortcut is None:
        return x * gate
    if not torch.jit.is_scripting():  # TorchScript leaves this branch out when it compiles
        if torch.onnx.is_in_onnx_export():
            return shortcut + x * gate  # the TorchScript-based exporter writes addcmul as three nodes
    return torch.addcmul(shortcut, x, gate)


def _runs_own_forward(module: nn.Module) -> bool:
    """Whether ``module`` must run its own forward: hooks watch it, or a module whose forward
    the fused path skips (the last part of a composition, whose gate it takes), or that module
    runs a compiled forward (:func:`nlsam.attention.set_compiled_forward`). Modules the fused
    path calls anyway (an fc layer, the earlier parts of a composition) keep their hooks
    either way. A few attribute reads per block: it runs on every call."""
    from torch.nn.modules import module as module_base

    if module_base._global_forward_hooks or module_base._global_forward_pre_hooks:
        return True
    part: Optional[nn.Module] = module
    while part is not None:
        if (
            part._forward_hooks
            or part._forward_pre_hooks
            or part._backward_hooks
            or part._backward_pre_hooks
            or getattr(part, "compiled_forward", False)
        ):
            return True
        part = next(reversed(part._modules.values()), None) if isinstance(part, nn.Sequential) else None
    return False


@torch.jit.unused
def add_attended(attention: nn.Module, x: torch.Tensor, shortcut: torch.Tensor) -> torch.Tensor:
    """``shortcut + attention(x)``: the residual addition of a block whose branch ``x`` ends in
    ``attention``, fused with the attention's gating when the module hands out its gate.

    A module with ``split_gate(x) -> (features, gate)`` (every gating module of nlsam, and a
    composition of them, whose earlier parts run as usual) gives ``shortcut + features * gate``
    in one pass (:func:`apply_gate`); any other module, one that hooks watch (they must see its
    forward run) and one running a compiled forward, is called as it is. Values and gradients
    equal the unfused sum's within float rounding (tested against each paper's formulation).
    """
    split_gate = getattr(attention, "split_gate", None)
    if split_gate is None or _runs_own_forward(attention):
        return attention(x) + shortcut
    features, gate = split_gate(x)
    return apply_gate(features, gate, shortcut)
