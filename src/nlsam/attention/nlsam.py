"""The nonlocal spatial attention module (NL-SAM).

NL-SAM turns a feature map ``x`` (B x C x H x W) into a one-channel spatial attention map
computed from *all* positions at once, in the paper's three steps:

1. context collecting: mean over channels, then k x k average pooling with stride k;
2. transformation: the N = (H/k)(W/k) positions go through fc(N -> N/r), ReLU,
   fc(N/r -> N), sigmoid (the bottleneck that makes the module nonlocal);
3. distribution: the map is upsampled back to H x W (nearest by default, the paper's
   Table 3 choice) and multiplies ``x``, broadcast over channels.
"""

from __future__ import annotations

import warnings
from typing import Callable, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from .._ranges import Range, short_repr
from .._sizes import SizeLike, to_2tuple
from .gate import Gate, apply_gate, apply_init, zero_
from .registry import register_attention

__all__ = ["INTERPOLATION_MODES", "NLSAM", "set_compiled_forward"]

INTERPOLATION_MODES = ("nearest", "bilinear", "bicubic", "area")

#: The most weights one of NL-SAM's fully-connected layers may hold (N x N/r): 2**26, 256 MiB in
#: float32. The paper's grids are 8 x 8 (CIFAR) and 7 x 7 (ImageNet): a few thousand weights.
_MAX_FC_WEIGHTS = 2**26


def _check_fc_size(feature_size: Tuple[int, int], pool: int, reduction: int, hidden: int) -> None:
    """Raise a ``ValueError`` before allocating anything when NL-SAM's fc layers (N x N/r weights
    each, N the positions of the pooled grid) would hold more than :data:`_MAX_FC_WEIGHTS`."""
    height, width = feature_size
    num_positions = (height // pool) * (width // pool)
    weights = num_positions * hidden
    if weights > _MAX_FC_WEIGHTS:
        raise ValueError(
            f"NL-SAM's fully-connected layers would hold {num_positions:,} x {hidden:,} = {weights:,} "
            f"weights each (the {height}x{width} feature map pooled by k={pool} to "
            f"{height // pool}x{width // pool} positions, r={reduction}); at most {_MAX_FC_WEIGHTS:,} "
            "(256 MiB in float32) are allowed: pool more (a larger k), raise r, or train at a "
            "smaller input size"
        )


def _check_feature_map(x: torch.Tensor, module: str) -> None:
    """Raise a ``ValueError`` naming the shape unless ``x`` is a B x C x H x W feature map."""
    if x.dim() != 4:
        raise ValueError("{} expects a B x C x H x W feature map (4-D), got shape {}".format(module, list(x.shape)))


#: NL-SAM's pooling kernel k: 0 or 1 is no pooling; it must also divide the feature map.
_POOL_RANGE = Range(0, None, integer=True, why="0 or 1 means no pooling")


def _reduction_range(num_positions: int, where: str = "") -> Range:
    """The valid NL-SAM reductions r for ``num_positions`` = N pooled positions: ``1..N``, so that
    the bottleneck ``N // r`` keeps at least one unit (a larger r would leave none)."""
    return Range(
        1,
        num_positions,
        integer=True,
        why=f"NL-SAM's bottleneck has N // r units, at least one: here N = {num_positions} positions{where}",
    )


def _bottleneck_width(num_positions: int, reduction: int) -> int:
    """Hidden width of the NL-SAM bottleneck: ``N // r`` for r in ``1..N`` (:func:`_reduction_range`).

    The paper writes N/r; where r does not divide N we round down. An r above N is refused
    (``ValueError``), never rounded up to one unit.
    """
    _reduction_range(num_positions).check("reduction", reduction)
    return num_positions // reduction


class NLSAM(nn.Module):
    """Nonlocal spatial attention module.

    Args:
        feature_size: (H, W) of the feature map at the training resolution; an int means square.
            H and W must be divisible by ``pool``.
        pool: pooling kernel and stride k of the context-collecting step (the paper's k);
            0 or 1 means no pooling. The paper uses k = 2 on CIFAR (its Table 2).
        reduction: bottleneck ratio r of the transformation step; the paper picks r = 8
            (its Table 1). The hidden width is ``N // r``, so r may be 1..N (N the positions
            after pooling); a larger r is refused, not rounded up to one unit.
        interpolation: how the (H/k) x (W/k) map is upsampled to H x W: ``"nearest"`` (the
            paper's choice, Table 3), ``"bilinear"``, ``"bicubic"`` or ``"area"``.
        init: ``"paper"`` (the paper's sigmoid gate) or ``"identity"`` (``2 * sigmoid`` after a
            zeroed ``fc2``: the module starts as the identity, see :mod:`nlsam.attention.gate`).

    At the training resolution the module is exactly the paper's. At any other input size the
    channel-mean map is pooled adaptively to the trained (H/k) x (W/k) grid and the attention
    map is upsampled to the actual size, so one trained module serves every input size.

    ``compiled_forward`` (off by default; :func:`set_compiled_forward` sets it for a whole
    model) runs the same formulation through ``torch.compile``, which fuses the channel sum,
    the pooling and the broadcast multiply and their gradients into a few loops. All NL-SAM
    modules of one configuration share one compiled graph. On a 2-core CPU it made the module's
    forward + backward 1.4-2.1x faster in fp32 and bf16, but a whole ResNet training step no
    measurably faster (``docs/benchmarks/nlsam_compiled.md``), for 8-12 s of compilation.
    """

    def __init__(
        self,
        feature_size: SizeLike,
        pool: int = 2,
        reduction: int = 8,
        interpolation: str = "nearest",
        init: str = "paper",
    ) -> None:
        super().__init__()
        height, width = to_2tuple(feature_size)
        _POOL_RANGE.check("pool", pool)
        pool = max(pool, 1)
        if height % pool or width % pool:
            raise ValueError(
                f"feature size {height}x{width} is not divisible by the pooling kernel k={pool}; "
                f"valid k for this size divide both {height} and {width}"
            )
        if interpolation not in INTERPOLATION_MODES:
            raise ValueError(
                f"unknown interpolation {short_repr(interpolation)}; valid: {', '.join(INTERPOLATION_MODES)}"
            )
        self.feature_size = (height, width)
        self.pool = pool
        self.reduction = reduction
        self.interpolation = interpolation
        self.grid_size = (height // pool, width // pool)
        num_positions = self.grid_size[0] * self.grid_size[1]
        grid = f" (the {height}x{width} feature map" + (
            f" pooled by k={pool} to {self.grid_size[0]}x{self.grid_size[1]})" if pool > 1 else ")"
        )
        _reduction_range(num_positions, grid).check("reduction", reduction)
        hidden = _bottleneck_width(num_positions, reduction)
        _check_fc_size((height, width), pool, reduction, hidden)
        self.fc1 = nn.Linear(num_positions, hidden)
        self.act = nn.ReLU(inplace=True)
        self.fc2 = nn.Linear(hidden, num_positions)
        self.gate = Gate()
        self.reset_parameters()
        apply_init(self, init)
        self.compiled_forward = False

    def reset_parameters(self) -> None:
        """PyTorch's default Linear init, except a zero bias for the first layer.

        The channel-mean context after batch norm is close to zero, so with the default uniform
        bias a unit whose bias starts negative never fires; with the paper's r = 8 on a 4 x 4
        grid the bottleneck has two units, and a quarter of the blocks would start (and stay)
        dead.
        """
        self.fc1.reset_parameters()
        self.fc2.reset_parameters()
        nn.init.zeros_(self.fc1.bias)

    def reset_identity(self) -> None:
        """Gate ``2 * sigmoid`` after a zeroed ``fc2``: every position's scale starts at 1."""
        zero_(self.fc2)
        self.gate.make_identity()

    def grid_map(self, x: torch.Tensor) -> torch.Tensor:
        """Steps 1 and 2 of the paper: the B x 1 x h x w gate values on the pooled grid (h x w =
        :attr:`grid_size`), before the distribution step upsamples them."""
        _check_feature_map(x, "NLSAM")
        height, width = x.shape[-2], x.shape[-1]
        # the channel mean, written as a sum scaled on the one-channel result: the sum's
        # gradient is a broadcast view, where mean's backward writes a full B x C x H x W tensor
        # (the module's forward + backward ran 1.5-1.8x faster on a CPU; same values)
        context = x.sum(dim=1, keepdim=True) / x.shape[1]
        if height == self.feature_size[0] and width == self.feature_size[1]:
            if self.pool > 1:
                context = F.avg_pool2d(context, self.pool, self.pool)
        else:
            context = F.adaptive_avg_pool2d(context, self.grid_size)
        # flatten / unflatten, not reshape(batch, ...): a traced export keeps the batch dynamic
        weights = self.gate(self.fc2(self.act(self.fc1(context.flatten(1)))))
        return weights.unflatten(1, self.grid_size).unsqueeze(1)

    def attention_map(self, x: torch.Tensor) -> torch.Tensor:
        """Return the B x 1 x H x W attention map for ``x``: the gate values, in (0, 1) (in (0, 2)
        with the identity gate), upsampled to the map's size (step 3 of the paper). An empty batch
        gives an empty map."""
        _check_feature_map(x, "NLSAM")
        height, width = x.shape[-2], x.shape[-1]
        if x.shape[0] == 0:
            return x.new_zeros((0, 1, height, width))
        return self._upsample(self.grid_map(x), (height, width))

    def _upsample(self, weights: torch.Tensor, size: Tuple[int, int]) -> torch.Tensor:
        if weights.shape[-2:] == size:
            return weights
        if self.interpolation in ("bilinear", "bicubic"):
            weights = F.interpolate(weights, size=size, mode=self.interpolation, align_corners=False)
            if self.interpolation == "bicubic":
                # bicubic kernels overshoot; keep the map within the gate's range
                weights = weights.clamp(0.0, 2.0 if self.gate.identity else 1.0)
            return weights
        return F.interpolate(weights, size=size, mode=self.interpolation)

    def split_gate(self, x: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """``(x, gate)`` with ``self(x) == apply_gate(x, gate)`` (:func:`nlsam.attention.apply_gate`):
        the gate at the pooled grid when nearest upsampling is by integer factors (the paper's
        setting; :func:`~nlsam.attention.apply_gate` upsamples it), else the upsampled map. A
        residual block adds its shortcut in the same pass (:func:`nlsam.attention.add_attended`)."""
        _check_feature_map(x, "NLSAM")
        height, width = x.shape[-2], x.shape[-1]
        if x.shape[0] == 0:
            return x, x.new_zeros((0, 1, height, width))
        weights = self.grid_map(x)
        tiles = height % self.grid_size[0] == 0 and width % self.grid_size[1] == 0
        if not (self.interpolation == "nearest" and tiles):
            weights = self._upsample(weights, (height, width))
        return x, weights.to(x.dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _check_feature_map(x, "NLSAM")  # here too: the compiled path would take it for a compiler failure
        if self.compiled_forward and not torch.jit.is_scripting():
            return self._forward_compiled(x)
        features, gate = self.split_gate(x)
        return apply_gate(features, gate)

    def _attend(self, x: torch.Tensor) -> torch.Tensor:
        """The paper's formulation, step by step: ``x`` times its upsampled attention map,
        broadcast over channels. The forward pass gives the same values through
        :meth:`split_gate` and :func:`~nlsam.attention.apply_gate` (and a residual block adds its
        shortcut in the same pass); tests hold it to this."""
        return x * self.attention_map(x).to(x.dtype)

    @torch.jit.unused
    def _forward_compiled(self, x: torch.Tensor) -> torch.Tensor:
        compiled = _compiled_attend()
        if compiled is None or torch.jit.is_tracing() or torch.compiler.is_compiling():
            return self._attend(x)  # inside an outer compile or export, which traces the formula
        try:
            return compiled(self, x)
        except Exception as error:  # no C++ compiler, an unsupported backend, ...
            _disable_compiled_attend(error)
            return self._attend(x)

    def extra_repr(self) -> str:
        return (
            f"feature_size={self.feature_size}, pool={self.pool}, reduction={self.reduction}, "
            f"interpolation={self.interpolation!r}"
        )


_COMPILED_ATTEND: Optional[Callable[[NLSAM, torch.Tensor], torch.Tensor]] = None
_COMPILE_FAILED = False


def _compiled_attend() -> Optional[Callable[[NLSAM, torch.Tensor], torch.Tensor]]:
    global _COMPILED_ATTEND
    if _COMPILE_FAILED:
        return None
    if _COMPILED_ATTEND is None:
        _COMPILED_ATTEND = torch.compile(NLSAM._attend)
    return _COMPILED_ATTEND


def _disable_compiled_attend(error: Exception) -> None:
    global _COMPILE_FAILED
    _COMPILE_FAILED = True
    warnings.warn(
        f"NL-SAM's compiled forward failed ({type(error).__name__}: {error}); "
        "falling back to the eager formulation for this process",
        RuntimeWarning,
        stacklevel=3,
    )


def set_compiled_forward(model: nn.Module, enabled: bool = True) -> int:
    """Switch every :class:`NLSAM` in ``model`` to the ``torch.compile``'d formulation (or back,
    with ``enabled=False``); return how many modules were switched.

    Values and gradients equal the eager formulation's within float tolerance (tested). If the
    compiler cannot run here, the modules warn once and stay eager.
    """
    modules = [module for module in model.modules() if isinstance(module, NLSAM)]
    for module in modules:
        module.compiled_forward = bool(enabled)
    return len(modules)


register_attention("nlsam", NLSAM, spatial_map=True, default_stages=2)
