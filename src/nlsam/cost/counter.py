"""The counter: :func:`profile` runs one forward pass (batch 1, eval mode) under a
:class:`~torch.utils._python_dispatch.TorchDispatchMode` that sees every ATen operator and
charges each one's cost (:func:`~nlsam.cost.rules.count_op`) to the modules running when it
executes: forward pre/post hooks on every submodule keep that stack, so each module's figures
are inclusive of its children.
"""

from __future__ import annotations

from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, Type, Union

import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode

from .._ranges import check_model_argument
from .._sizes import check_max_side, to_2tuple
from ..attention import attention_types
from .report import CostReport, ModuleCost, TypeCost
from .rules import _op_name, count_op

__all__ = ["InputSize", "profile"]

#: The input :func:`profile` runs: ``H`` (square), ``(H, W)`` or ``(C, H, W)``.
InputSize = Union[int, Sequence[int]]


class _CostMode(TorchDispatchMode):
    """Runs every operator and charges its cost to the modules currently executing."""

    def __init__(self, num_modules: int) -> None:
        super().__init__()
        self.stack: List[int] = []
        self.macs = [0] * num_modules
        self.extra = [0] * num_modules
        self.calls = [0] * num_modules
        self.total_macs = 0
        self.total_extra = 0
        self.flops_by_op: Dict[str, int] = {}
        self.macs_by_op: Dict[str, int] = {}
        self.uncounted: Dict[str, int] = {}

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        cost = count_op(func, args, kwargs, out)
        name = _op_name(func)
        if cost is None:
            self.uncounted[name] = self.uncounted.get(name, 0) + 1
            return out
        macs, extra = cost
        if macs == 0 and extra == 0:
            return out
        flops = 2 * macs + extra
        self.total_macs += macs
        self.total_extra += extra
        self.flops_by_op[name] = self.flops_by_op.get(name, 0) + flops
        if macs:
            self.macs_by_op[name] = self.macs_by_op.get(name, 0) + macs
        for index in set(self.stack):
            self.macs[index] += macs
            self.extra[index] += extra
        return out


def _input_shape(model: nn.Module, input_size: Optional[InputSize]) -> Tuple[int, int, int]:
    if input_size is None:
        input_size = getattr(model, "input_size", None)
    if input_size is None:
        # a timm model records its resolution, (C, H, W), in its pretrained config
        cfg = getattr(model, "pretrained_cfg", None) or getattr(model, "default_cfg", None)
        if isinstance(cfg, dict) and cfg.get("input_size") is not None:
            input_size = tuple(int(v) for v in cfg["input_size"])
    if input_size is None:
        raise ValueError(
            "input_size is required for a model without an `input_size` attribute or a timm `pretrained_cfg`"
        )
    channels = int(getattr(model, "in_chans", 3) or 3)
    size = [input_size] if isinstance(input_size, int) else list(input_size)
    if not all(isinstance(s, int) and not isinstance(s, bool) and s > 0 for s in size):
        raise ValueError(f"input_size must hold positive ints, got {input_size!r}")
    if len(size) not in (1, 2, 3):
        raise ValueError(f"input_size must be an int, (H, W) or (C, H, W), got {input_size!r}")
    if len(size) == 3:
        channels = size[0]
    height, width = to_2tuple(size[-2:] if len(size) > 1 else size[0], "input_size")
    check_max_side(height, width, "profile: input_size")
    return channels, height, width


def profile(
    model: nn.Module,
    input_size: Optional[InputSize] = None,
    *,
    depth: int = 2,
    detail_types: Optional[Sequence[Type[nn.Module]]] = None,
    name: Optional[str] = None,
) -> CostReport:
    """Count the parameters, MACs and FLOPs of one forward pass of ``model`` (batch 1).

    Args:
        model: any ``nn.Module`` taking one B x C x H x W tensor. It runs in eval mode, under
            ``torch.no_grad``; each submodule's train/eval flag is restored afterwards.
        input_size: ``H`` (square), ``(H, W)`` or ``(C, H, W)``; ``C`` defaults to
            ``model.in_chans`` (else 3). ``None`` uses ``model.input_size`` when the model has
            one (the networks of :func:`nlsam.create_model` do), else a timm model's
            ``pretrained_cfg["input_size"]``.
        depth: the breakdown has a row for every module at most this deep (the network is depth
            0, its children 1, ``stages.layer1`` 2, ...) ...
        detail_types: ... and for every module of these types, at any depth; default: the
            attention modules of :mod:`nlsam.attention` (NLSAM, SE, GE, CBAM gates, BAM).
        name: the model name in the report (default: its class name).

    Returns:
        a :class:`CostReport`; the counting rules are those of :mod:`nlsam.cost.rules`.
    """
    check_model_argument(model, "profile")
    channels, height, width = _input_shape(model, input_size)
    detail = tuple(attention_types() if detail_types is None else detail_types)
    named = list(model.named_modules())
    mode = _CostMode(len(named))

    def pre_hook(index: int) -> Callable[..., None]:
        def hook(module: nn.Module, inputs: Any) -> None:
            mode.stack.append(index)
            mode.calls[index] += 1

        return hook

    def post_hook(index: int) -> Callable[..., None]:
        def hook(module: nn.Module, inputs: Any, output: Any) -> None:
            # pop the innermost entry of this module (always_call: also on exceptions)
            for pos in range(len(mode.stack) - 1, -1, -1):
                if mode.stack[pos] == index:
                    del mode.stack[pos]
                    break

        return hook

    first = next(model.parameters(), None)
    device = first.device if first is not None else torch.device("cpu")
    dtype = first.dtype if first is not None and first.is_floating_point() else torch.float32
    x = torch.randn(1, channels, height, width, device=device, dtype=dtype)

    training = [m.training for _, m in named]
    handles = []
    try:
        for index, (_, module) in enumerate(named):
            handles.append(module.register_forward_pre_hook(pre_hook(index)))
            handles.append(module.register_forward_hook(post_hook(index), always_call=True))
        model.eval()
        with torch.no_grad(), mode:
            model(x)
    finally:
        for handle in handles:
            handle.remove()
        for (_, module), flag in zip(named, training):
            module.training = flag

    params = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)

    def cost_of(index: int) -> ModuleCost:
        path, module = named[index]
        return ModuleCost(
            path=path,
            type=type(module).__name__,
            params=sum(p.numel() for p in module.parameters()),
            macs=mode.macs[index],
            flops=2 * mode.macs[index] + mode.extra[index],
            calls=mode.calls[index],
        )

    rows = []
    for index, (path, module) in enumerate(named):
        level = 0 if path == "" else path.count(".") + 1
        if isinstance(module, nn.Identity) and path:
            continue
        if level <= depth or isinstance(module, detail):
            rows.append(cost_of(index))

    # aggregates by type, counting only the outermost instance of each type
    type_of = {path: type(module) for path, module in named}
    totals: Dict[str, List[int]] = {}
    for index, (path, module) in enumerate(named):
        parts = path.split(".") if path else []
        nested = any(type_of.get(".".join(parts[:k])) is type(module) for k in range(len(parts)))
        if nested:
            continue
        row = cost_of(index)
        agg = totals.setdefault(row.type, [0, 0, 0, 0])
        agg[0] += 1
        agg[1] += row.params
        agg[2] += row.macs
        agg[3] += row.flops
    by_type = sorted((TypeCost(t, *v) for t, v in totals.items()), key=lambda r: (-r.flops, -r.params, r.type))

    return CostReport(
        model=name or type(model).__name__,
        input_size=(channels, height, width),
        params=params,
        trainable_params=trainable,
        macs=mode.total_macs,
        flops=2 * mode.total_macs + mode.total_extra,
        flops_by_op=dict(sorted(mode.flops_by_op.items(), key=lambda kv: -kv[1])),
        macs_by_op=dict(sorted(mode.macs_by_op.items(), key=lambda kv: -kv[1])),
        uncounted_ops=dict(sorted(mode.uncounted.items())),
        modules=rows,
        by_type=by_type,
    )
