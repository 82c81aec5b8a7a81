"""Cost accounting: parameters, MACs and FLOPs of a network, with the attention modules' cheap
work counted.

Common counters (fvcore, ptflops, thop) count the multiply-accumulates of convolutions and
fully-connected layers and little else, which makes an attention module such as NL-SAM look
free: its two small fc layers are a few thousand MACs, while its real work is a channel mean, a
pooling, a sigmoid, an upsampling and a multiplication over whole feature maps.
:func:`profile` runs one forward pass (batch 1, eval mode) under a
:class:`~torch.utils._python_dispatch.TorchDispatchMode` that sees every ATen operator, and
counts each with exactly one rule:

========================================  ===================================================
operators                                 FLOPs
========================================  ===================================================
convolution (any), mm, addmm, bmm,        2 x MACs; MACs = output elements x (C_in / groups)
baddbmm, linear, scaled dot-product       x kernel area (convolution), m x k x n (matmul),
attention                                 L x S x (E + E_v) per head (attention). The bias
                                          addition is not counted (as in fvcore).
pointwise ops (add, sub, mul, div,        1 per output element (in-place variants alike)
sigmoid, relu, clamp, where, ...)
reductions (mean, sum, amax, max, ...)    1 per input element (n - 1 additions or
                                          comparisons plus the division of a mean)
avg / max pooling, fixed kernel           1 per element read: output elements x kernel area
adaptive avg / max pooling                1 per element read: the exact sum of the window
                                          sizes (= input elements when the size divides)
upsampling                                1 per tap per output element: nearest 1,
                                          linear 2, bilinear 4, bicubic 16, trilinear 8
softmax, log-softmax                      3 per element (exp, sum, divide)
batch norm with running statistics        2 per element (folded scale and shift)
batch norm with batch statistics,         5 per element (as fvcore)
layer / group / instance norm
data movement (view, reshape, slice,      0
cat, pad, copy, clone, empty, ...)
========================================  ===================================================

Any other operator is recorded in :attr:`CostReport.uncounted_ops` (with its call count) and
contributes nothing. FLOPs therefore are ``2 * macs + extra`` where ``extra`` is the sum of the
non-matmul rules; :attr:`CostReport.macs` holds the convolution and matmul MACs only, the number
fvcore, ptflops and most papers call "FLOPs".

Forward pre/post hooks on every submodule attribute each operator's cost to all the modules
that are running when it executes, so each module's figures are inclusive of its children.
"""
from __future__ import annotations

import json
import math
import re
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Dict, Iterable, List, Optional, Sequence, Tuple, Type, Union

import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

__all__ = [
    "COUNTING_RULES",
    "CostReport",
    "ModuleCost",
    "TypeCost",
    "count_op",
    "main_profile",
    "overhead",
    "profile",
    "render_table",
]

InputSize = Union[int, Sequence[int]]

#: The counting rules, one line per operator family (also in ``CostReport.to_dict()``).
COUNTING_RULES: Dict[str, str] = {
    "conv/matmul": "FLOPs = 2 x MACs; MACs = output elements x C_in/groups x kernel area "
    "(convolution), m x k x n (mm, addmm, bmm, baddbmm, linear) or L x S x (E + E_v) per "
    "head (scaled dot-product attention); bias not counted",
    "pointwise": "1 FLOP per output element (add, sub, mul, div, sigmoid, relu, clamp, ...)",
    "reduction": "1 FLOP per input element (mean, sum, amax, max, ...)",
    "pooling": "1 FLOP per element read: output elements x kernel area; adaptive pooling: the "
    "exact sum of its window sizes (= input elements when the size divides)",
    "upsampling": "1 FLOP per tap per output element: nearest 1, linear 2, bilinear 4, "
    "trilinear 8, bicubic 16",
    "softmax": "3 FLOPs per element (exp, sum, divide)",
    "batch norm (running statistics)": "2 FLOPs per element (folded scale and shift)",
    "normalisation with batch statistics": "5 FLOPs per element (batch norm in training mode, "
    "layer/group/instance norm)",
    "data movement": "0 (view, reshape, slice, cat, pad, copy, clone, empty, ...)",
}

# ---------------------------------------------------------------------------------------------
# operator rules
# ---------------------------------------------------------------------------------------------

_ZERO_COST = frozenset(
    """
    view _unsafe_view reshape _reshape_alias t transpose permute expand expand_as slice select
    squeeze unsqueeze flatten unflatten cat stack constant_pad_nd pad reflection_pad1d
    reflection_pad2d reflection_pad3d replication_pad1d replication_pad2d replication_pad3d
    empty empty_like empty_strided new_empty new_empty_strided zeros zeros_like new_zeros ones
    ones_like new_ones full full_like new_full fill copy clone _to_copy to detach alias
    contiguous split split_with_sizes chunk unbind narrow as_strided index_select gather
    lift_fresh lift_fresh_copy arange randn rand randint normal uniform bernoulli dropout
    native_dropout feature_dropout alpha_dropout roll flip repeat unfold _unsafe_index
    index scalar_tensor _local_scalar_dense item set resize diagonal
    permute_copy view_copy t_copy transpose_copy squeeze_copy unsqueeze_copy slice_copy
    select_copy expand_copy split_copy detach_copy alias_copy
    """.split()
)

_CONVOLUTIONS = frozenset(
    """
    convolution _convolution convolution_overrideable cudnn_convolution
    cudnn_convolution_transpose miopen_convolution miopen_convolution_transpose
    miopen_depthwise_convolution mkldnn_convolution _slow_conv2d_forward slow_conv3d_forward
    slow_conv_dilated2d slow_conv_dilated3d slow_conv_transpose2d slow_conv_transpose3d
    thnn_conv2d _nnpack_spatial_convolution _conv_depthwise2d conv_depthwise3d
    """.split()
)

_TRANSPOSED_CONVOLUTIONS = frozenset(
    "cudnn_convolution_transpose miopen_convolution_transpose slow_conv_transpose2d "
    "slow_conv_transpose3d".split()
)

_POOLS = frozenset(
    """
    avg_pool1d avg_pool2d avg_pool3d max_pool1d max_pool2d max_pool3d max_pool1d_with_indices
    max_pool2d_with_indices max_pool3d_with_indices mkldnn_max_pool2d mkldnn_max_pool3d
    quantized_max_pool2d lp_pool1d lp_pool2d
    """.split()
)

_ADAPTIVE_POOLS = frozenset(
    """
    adaptive_avg_pool1d adaptive_avg_pool2d adaptive_avg_pool3d _adaptive_avg_pool2d
    _adaptive_avg_pool3d adaptive_max_pool1d adaptive_max_pool2d adaptive_max_pool3d
    mkldnn_adaptive_avg_pool2d
    """.split()
)

_UPSAMPLE_TAPS = {
    "upsample_nearest1d": 1,
    "upsample_nearest2d": 1,
    "upsample_nearest3d": 1,
    "_upsample_nearest_exact1d": 1,
    "_upsample_nearest_exact2d": 1,
    "_upsample_nearest_exact3d": 1,
    "upsample_linear1d": 2,
    "upsample_bilinear2d": 4,
    "_upsample_bilinear2d_aa": 4,
    "upsample_trilinear3d": 8,
    "upsample_bicubic2d": 16,
    "_upsample_bicubic2d_aa": 16,
}

_BATCH_NORMS = frozenset(
    """
    native_batch_norm _native_batch_norm_legit _native_batch_norm_legit_no_training
    _native_batch_norm_legit_functional cudnn_batch_norm miopen_batch_norm batch_norm
    _batch_norm_impl_index _batch_norm_no_update _batch_norm_with_update
    """.split()
)

_STAT_NORMS = frozenset(
    "native_layer_norm layer_norm native_group_norm group_norm instance_norm rms_norm "
    "_fused_rms_norm".split()
)

# activations PyTorch does not tag "pointwise"; they follow the pointwise rule all the same
_POINTWISE_EXTRA = frozenset(
    """
    hardswish hardsigmoid hardtanh relu6 gelu silu mish elu selu celu leaky_relu rrelu prelu
    _prelu_kernel softplus softshrink hardshrink log_sigmoid tanh sigmoid relu threshold glu
    """.split()
)

_SOFTMAX = frozenset("softmax _softmax log_softmax _log_softmax _safe_softmax".split())

_REDUCTIONS = frozenset(
    """
    mean sum amax amin max min prod argmax argmin any all logsumexp norm linalg_vector_norm
    nansum nanmean
    """.split()
)


def _numel(x: Any) -> int:
    return int(x.numel()) if isinstance(x, torch.Tensor) else 0


def _first_tensor(out: Any) -> Optional[torch.Tensor]:
    for leaf in tree_flatten(out)[0]:
        if isinstance(leaf, torch.Tensor):
            return leaf
    return None


def _op_name(func: Any) -> str:
    """``aten::relu_`` -> ``relu``: the operator name without namespace or in-place suffix."""
    name = func._schema.name.split("::")[-1]
    if name.endswith("_") and not name.endswith("__"):
        name = name[:-1]
    return name


def _has_tag(func: Any, tag_name: str) -> bool:
    tag = getattr(torch.Tag, tag_name, None)
    return tag is not None and tag in getattr(func, "tags", ())


def _conv_macs(name: str, args: Sequence[Any], kwargs: Dict[str, Any], out: Any) -> int:
    x, weight = args[0], args[1]
    transposed = name in _TRANSPOSED_CONVOLUTIONS
    if name in ("convolution", "_convolution", "convolution_overrideable"):
        transposed = bool(args[6]) if len(args) > 6 else bool(kwargs.get("transposed", False))
    kernel = math.prod(weight.shape[2:])
    if transposed:
        # weight: C_in x C_out/groups x k...; every input element meets C_out/groups x k weights
        return _numel(x) * int(weight.shape[1]) * kernel
    # weight: C_out x C_in/groups x k...; every output element needs C_in/groups x k MACs
    return _numel(_first_tensor(out)) * int(weight.shape[1]) * kernel


def _matmul_macs(name: str, args: Sequence[Any], out: Any) -> Optional[int]:
    if name == "mm":
        a, b = args[0], args[1]
        return int(a.shape[0]) * int(a.shape[1]) * int(b.shape[1])
    if name in ("addmm", "baddbmm"):
        a, b = args[1], args[2]
    elif name == "bmm":
        a, b = args[0], args[1]
    elif name == "linear":
        # output elements x in_features
        return _numel(_first_tensor(out)) * int(args[1].shape[-1])
    else:
        return None
    if a.dim() == 2:
        return int(a.shape[0]) * int(a.shape[1]) * int(b.shape[1])
    return int(a.shape[0]) * int(a.shape[1]) * int(a.shape[2]) * int(b.shape[2])


def _attention_macs(name: str, args: Sequence[Any]) -> Optional[int]:
    """Scaled dot-product attention kernels: the MACs of ``Q K^T`` and of ``softmax(.) V``."""
    if not (name.startswith("_scaled_dot_product") or name == "scaled_dot_product_attention"):
        return None
    if name.endswith("backward") or len(args) < 3:
        return None
    q, k, v = args[0], args[1], args[2]
    if not all(isinstance(t, torch.Tensor) and t.dim() >= 2 for t in (q, k, v)):
        return None
    batch = _numel(q) // (int(q.shape[-2]) * int(q.shape[-1]))
    length, dim = int(q.shape[-2]), int(q.shape[-1])
    source, dim_v = int(k.shape[-2]), int(v.shape[-1])
    return batch * length * source * (dim + dim_v)


def _registry_macs(
    func: Any, args: Sequence[Any], kwargs: Dict[str, Any], out: Any
) -> Optional[int]:
    """MACs from torch's own FlopCounterMode formulas (attention kernels, ...), if it has one."""
    try:
        from torch.utils.flop_counter import flop_registry
    except ImportError:  # pragma: no cover - old torch
        return None
    formula = flop_registry.get(func.overloadpacket)
    if formula is None:
        return None
    try:
        return int(formula(*args, **kwargs, out_val=out)) // 2
    except Exception:  # pragma: no cover - formula signature changed
        return None


def _spatial_dims(name: str) -> int:
    """1, 2 or 3 from an operator name such as ``avg_pool2d``."""
    match = re.search(r"([123])d", name)
    return int(match.group(1)) if match else 2


def _pool_reads(name: str, args: Sequence[Any], kwargs: Dict[str, Any], out: Any) -> int:
    kernel = args[1] if len(args) > 1 else kwargs["kernel_size"]
    out_tensor = _first_tensor(out)
    spatial_dims = _spatial_dims(name)
    if isinstance(kernel, int):
        kernel = [kernel] * spatial_dims
    kernel = list(kernel)
    if len(kernel) == 1 and spatial_dims > 1:
        kernel = kernel * spatial_dims
    return _numel(out_tensor) * math.prod(int(k) for k in kernel)


def _adaptive_pool_reads(name: str, args: Sequence[Any], out: Any) -> int:
    x = args[0]
    out_tensor = _first_tensor(out)
    if not isinstance(x, torch.Tensor) or out_tensor is None:
        return 0
    dims = min(_spatial_dims(name), x.dim(), out_tensor.dim())
    in_sizes = [int(s) for s in x.shape[-dims:]]
    out_sizes = [int(s) for s in out_tensor.shape[-dims:]]
    reads = _numel(x) // max(1, math.prod(in_sizes))  # the batch x channel planes
    for size_in, size_out in zip(in_sizes, out_sizes):
        # PyTorch's adaptive windows: [floor(i * In / Out), ceil((i + 1) * In / Out))
        reads *= sum(
            -((-(i + 1) * size_in) // size_out) - (i * size_in) // size_out
            for i in range(size_out)
        )
    return reads


def count_op(
    func: Any, args: Sequence[Any], kwargs: Optional[Dict[str, Any]], out: Any
) -> Optional[Tuple[int, int]]:
    """Cost of one executed ATen operator under the rules of :data:`COUNTING_RULES`.

    Returns ``(macs, extra_flops)``: the multiply-accumulates of a convolution or matmul (whose
    FLOPs are ``2 * macs``) and the FLOPs of any other counted operator; ``None`` when no rule
    covers the operator.
    """
    kwargs = kwargs or {}
    name = _op_name(func)
    if name in _ZERO_COST:
        return 0, 0
    if name in _CONVOLUTIONS:
        return _conv_macs(name, args, kwargs, out), 0
    macs = _matmul_macs(name, args, out)
    if macs is not None:
        return macs, 0
    macs = _attention_macs(name, args)
    if macs is None:
        macs = _registry_macs(func, args, kwargs, out)
    if macs is not None:
        return macs, 0
    if name in _POOLS:
        return 0, _pool_reads(name, args, kwargs, out)
    if name in _ADAPTIVE_POOLS:
        return 0, _adaptive_pool_reads(name, args, out)
    if name in _UPSAMPLE_TAPS:
        return 0, _UPSAMPLE_TAPS[name] * _numel(_first_tensor(out))
    if name in _BATCH_NORMS:
        training = _batch_norm_training(name, args, kwargs)
        return 0, (5 if training else 2) * _numel(args[0])
    if name in _STAT_NORMS:
        return 0, 5 * _numel(args[0])
    if name in _SOFTMAX:
        return 0, 3 * _numel(args[0])
    if name in _REDUCTIONS or _has_tag(func, "reduction"):
        return 0, _numel(args[0])
    if name in _POINTWISE_EXTRA or _has_tag(func, "pointwise"):
        return 0, _numel(_first_tensor(out))
    return None


def _batch_norm_training(name: str, args: Sequence[Any], kwargs: Dict[str, Any]) -> bool:
    if name == "_native_batch_norm_legit_no_training":
        return False
    if name == "_native_batch_norm_legit" and len(args) == 6:
        # the overload without running statistics: (input, weight, bias, training, momentum, eps)
        return bool(args[3])
    if "training" in kwargs:
        return bool(kwargs["training"])
    # native_batch_norm / cudnn / miopen / _legit: (input, weight, bias, mean, var, training, ...)
    if len(args) > 5 and isinstance(args[5], bool):
        return args[5]
    return False


# ---------------------------------------------------------------------------------------------
# the report
# ---------------------------------------------------------------------------------------------


@dataclass
class ModuleCost:
    """Inclusive cost of one submodule (its children included) over the forward pass."""

    path: str
    type: str
    params: int
    macs: int
    flops: int
    calls: int = 0

    def to_dict(self) -> Dict[str, Any]:
        return asdict(self)


@dataclass
class TypeCost:
    """Total cost of all the modules of one type (instances nested in another instance of the
    same type are not counted twice)."""

    type: str
    count: int
    params: int
    macs: int
    flops: int

    def to_dict(self) -> Dict[str, Any]:
        return asdict(self)


@dataclass
class CostReport:
    """What :func:`profile` measured for one network at one input size (batch 1).

    ``flops = 2 * macs + extra_flops``: ``macs`` are the multiply-accumulates of convolutions
    and matmuls only, ``extra_flops`` the pointwise, reduction, pooling, upsampling and
    normalisation work counted by :data:`COUNTING_RULES`.
    """

    model: str
    input_size: Tuple[int, int, int]
    params: int
    trainable_params: int
    macs: int
    flops: int
    flops_by_op: Dict[str, int] = field(default_factory=dict)
    macs_by_op: Dict[str, int] = field(default_factory=dict)
    uncounted_ops: Dict[str, int] = field(default_factory=dict)
    modules: List[ModuleCost] = field(default_factory=list)
    by_type: List[TypeCost] = field(default_factory=list)

    @property
    def matmul_flops(self) -> int:
        """FLOPs of convolutions and matmuls, ``2 * macs``."""
        return 2 * self.macs

    @property
    def extra_flops(self) -> int:
        """FLOPs of everything else: pointwise, reductions, pooling, upsampling, norms."""
        return self.flops - 2 * self.macs

    @property
    def mparams(self) -> float:
        return self.params / 1e6

    @property
    def gmacs(self) -> float:
        return self.macs / 1e9

    @property
    def gflops(self) -> float:
        return self.flops / 1e9

    def module(self, path: str) -> ModuleCost:
        """The breakdown row of the module at ``path`` ("" is the whole network)."""
        for row in self.modules:
            if row.path == path:
                return row
        raise KeyError(f"no breakdown row for module {path!r}")

    def type_cost(self, type_name: str) -> TypeCost:
        """Aggregate over all modules of the class named ``type_name`` (zeros if none)."""
        for row in self.by_type:
            if row.type == type_name:
                return row
        return TypeCost(type_name, 0, 0, 0, 0)

    def to_dict(self) -> Dict[str, Any]:
        """Plain-JSON form: every field, the derived figures and the counting rules."""
        return {
            "model": self.model,
            "input_size": list(self.input_size),
            "batch_size": 1,
            "params": self.params,
            "trainable_params": self.trainable_params,
            "macs": self.macs,
            "flops": self.flops,
            "matmul_flops": self.matmul_flops,
            "extra_flops": self.extra_flops,
            "mparams": self.mparams,
            "gmacs": self.gmacs,
            "gflops": self.gflops,
            "flops_by_op": dict(self.flops_by_op),
            "macs_by_op": dict(self.macs_by_op),
            "uncounted_ops": dict(self.uncounted_ops),
            "modules": [row.to_dict() for row in self.modules],
            "by_type": [row.to_dict() for row in self.by_type],
            "convention": dict(COUNTING_RULES),
        }

    def to_json(self, **kwargs: Any) -> str:
        return json.dumps(self.to_dict(), **kwargs)

    def summary(self) -> str:
        """One line: params, MACs and FLOPs."""
        c, h, w = self.input_size
        return (
            f"{self.model} @ {c}x{h}x{w}: {self.mparams:.4f}M params, {self.gmacs:.4f} GMACs, "
            f"{self.gflops:.4f} GFLOPs (2 x MACs {2 * self.gmacs:.4f} + other "
            f"{self.extra_flops / 1e9:.4f})"
        )

    def breakdown_table(self, markdown: bool = False) -> str:
        """Per-module rows (path, type, params, MACs, FLOPs, share of the FLOPs)."""
        headers = ["module", "type", "Params (M)", "MMACs", "MFLOPs", "% FLOPs"]
        rows = [
            [
                row.path or "(total)",
                row.type,
                f"{row.params / 1e6:.4f}",
                f"{row.macs / 1e6:.3f}",
                f"{row.flops / 1e6:.3f}",
                f"{100.0 * row.flops / self.flops:.2f}" if self.flops else "-",
            ]
            for row in self.modules
        ]
        return render_table(headers, rows, markdown=markdown)

    def type_table(self, markdown: bool = False) -> str:
        """Aggregates by module type, most FLOPs first."""
        headers = ["type", "count", "Params (M)", "MMACs", "MFLOPs", "% FLOPs"]
        rows = [
            [
                row.type,
                str(row.count),
                f"{row.params / 1e6:.4f}",
                f"{row.macs / 1e6:.3f}",
                f"{row.flops / 1e6:.3f}",
                f"{100.0 * row.flops / self.flops:.2f}" if self.flops else "-",
            ]
            for row in self.by_type
        ]
        return render_table(headers, rows, markdown=markdown)

    def table(self, markdown: bool = False, breakdown: bool = True) -> str:
        """The summary line, then (``breakdown``) the per-module and per-type tables."""
        parts = [self.summary()]
        if breakdown:
            parts += ["", self.breakdown_table(markdown), "", self.type_table(markdown)]
        if self.uncounted_ops:
            ops = ", ".join(f"{k} x{v}" for k, v in sorted(self.uncounted_ops.items()))
            parts += ["", f"operators without a counting rule (counted as 0): {ops}"]
        return "\n".join(parts)

    def markdown(self, breakdown: bool = True) -> str:
        """:meth:`table` as Markdown."""
        return self.table(markdown=True, breakdown=breakdown)

    def __str__(self) -> str:
        return self.table()


def render_table(
    headers: Sequence[str], rows: Iterable[Sequence[str]], markdown: bool = False
) -> str:
    """Aligned text table, or Markdown: numeric columns right-aligned, text columns left."""
    rows = [list(map(str, r)) for r in rows]
    widths = [max([len(h)] + [len(r[i]) for r in rows]) for i, h in enumerate(headers)]
    numeric = [
        bool(rows) and all(_NUMERIC.match(r[i]) for r in rows) for i in range(len(headers))
    ]

    def line(cells: Sequence[str]) -> str:
        padded = [
            c.rjust(widths[i]) if numeric[i] else c.ljust(widths[i]) for i, c in enumerate(cells)
        ]
        return ("| " + " | ".join(padded) + " |") if markdown else "  ".join(padded).rstrip()

    out = [line(headers)]
    if markdown:
        out.append(
            "|" + "|".join(
                ("-" * (w + 1) + ":") if numeric[i] else ("-" * (w + 2))
                for i, w in enumerate(widths)
            ) + "|"
        )
    else:
        out.append("  ".join("-" * w for w in widths))
    out += [line(r) for r in rows]
    return "\n".join(out)


_NUMERIC = re.compile(r"^(?:[+-]?\d[\d.,]*(?:e[+-]?\d+)?%?|-)$")


# ---------------------------------------------------------------------------------------------
# the counter
# ---------------------------------------------------------------------------------------------


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

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # type: ignore[override]
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


def _default_detail_types() -> Tuple[Type[nn.Module], ...]:
    from ..attention import (
        BAM,
        NLSAM,
        CBAMChannelGate,
        CBAMSpatialGate,
        GatherExcite,
        SqueezeExcite,
    )

    return (NLSAM, SqueezeExcite, GatherExcite, CBAMChannelGate, CBAMSpatialGate, BAM)


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
            "input_size is required for a model without an `input_size` attribute or a timm "
            "`pretrained_cfg`"
        )
    channels = int(getattr(model, "in_chans", 3) or 3)
    size = [input_size] if isinstance(input_size, int) else list(input_size)
    if not all(isinstance(s, int) and not isinstance(s, bool) and s > 0 for s in size):
        raise ValueError(f"input_size must hold positive ints, got {input_size!r}")
    if len(size) == 1:
        return channels, size[0], size[0]
    if len(size) == 2:
        return channels, size[0], size[1]
    if len(size) == 3:
        return size[0], size[1], size[2]
    raise ValueError(f"input_size must be an int, (H, W) or (C, H, W), got {input_size!r}")


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
        a :class:`CostReport`; see the module docstring for the counting rules.
    """
    channels, height, width = _input_shape(model, input_size)
    detail = tuple(_default_detail_types() if detail_types is None else detail_types)
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
    by_type = sorted(
        (TypeCost(t, *v) for t, v in totals.items()), key=lambda r: (-r.flops, -r.params, r.type)
    )

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


# ---------------------------------------------------------------------------------------------
# the `nlsam profile` command
# ---------------------------------------------------------------------------------------------


def _pct(part: float, whole: float) -> float:
    return 100.0 * part / whole if whole else 0.0


def _figures(report: CostReport) -> Dict[str, Any]:
    return {
        "params": report.params,
        "macs": report.macs,
        "flops": report.flops,
        "mparams": report.mparams,
        "gmacs": report.gmacs,
        "gflops": report.gflops,
    }


def overhead(report: CostReport, baseline: CostReport) -> Dict[str, Any]:
    """Absolute and relative cost of ``report`` over ``baseline`` (the plain network)."""
    d_params = report.params - baseline.params
    d_macs = report.macs - baseline.macs
    d_flops = report.flops - baseline.flops
    return {
        "params": d_params,
        "macs": d_macs,
        "flops": d_flops,
        "mparams": d_params / 1e6,
        "gmacs": d_macs / 1e9,
        "gflops": d_flops / 1e9,
        "params_pct": _pct(d_params, baseline.params),
        "macs_pct": _pct(d_macs, baseline.macs),
        "flops_pct": _pct(d_flops, baseline.flops),
    }


def _cli_input_size(value: Optional[Sequence[int]]) -> Optional[Union[int, Tuple[int, int]]]:
    if value is None:
        return None
    value = list(value)
    if len(value) == 1:
        return int(value[0])
    if len(value) == 2:
        return int(value[0]), int(value[1])
    raise ValueError(f"--input-size takes H or H W, got {len(value)} numbers: {value}")


def _signed(value: float, fmt: str) -> str:
    return ("+" if value >= 0 else "-") + format(abs(value), fmt)


def main_profile(args: Any) -> int:
    """``nlsam profile MODEL [--attention A] [--input-size H [W]] [--num-classes K]
    [--breakdown] [--json]``: the cost table of ``MODEL`` with attention ``A`` and of the plain
    network, with the overhead. Unknown names raise the ``ValueError`` of ``create_model``."""
    from ..attention import check_attention_name
    from ..models import create_model

    attention = check_attention_name(getattr(args, "attention", None))
    kwargs: Dict[str, Any] = {}
    size = _cli_input_size(getattr(args, "input_size", None))
    if size is not None:
        kwargs["input_size"] = size
    if getattr(args, "num_classes", None) is not None:
        kwargs["num_classes"] = args.num_classes

    model = create_model(args.model, attention=attention, **kwargs)
    report = profile(model, size, name=args.model)
    if attention is None:
        baseline = report
    else:
        base_model = create_model(args.model, attention=None, **kwargs)
        baseline = profile(base_model, size, name=args.model)
    extra = overhead(report, baseline)
    attention_label = attention or "none"

    if getattr(args, "json", False):
        result: Dict[str, Any] = {
            "model": args.model,
            "attention": attention_label,
            "input_size": list(report.input_size),
            "batch_size": 1,
            "trainable_params": report.trainable_params,
            **_figures(report),
            "baseline": _figures(baseline),
            "overhead": extra,
            "flops_by_op": report.flops_by_op,
            "uncounted_ops": report.uncounted_ops,
            "convention": dict(COUNTING_RULES),
        }
        if getattr(args, "breakdown", False):
            result["modules"] = [row.to_dict() for row in report.modules]
            result["by_type"] = [row.to_dict() for row in report.by_type]
        print(json.dumps(result, indent=2))
        return 0

    c, h, w = report.input_size
    headers = [
        "model", "attention", "input", "Params (M)", "GMACs", "GFLOPs",
        "+Params (M)", "+GFLOPs", "+Params (%)", "+GFLOPs (%)",
    ]
    rows = [[
        args.model, "none", f"{c}x{h}x{w}", f"{baseline.mparams:.4f}", f"{baseline.gmacs:.4f}",
        f"{baseline.gflops:.4f}", "-", "-", "-", "-",
    ]]
    if attention is not None:
        rows.append([
            args.model, attention_label, f"{c}x{h}x{w}", f"{report.mparams:.4f}",
            f"{report.gmacs:.4f}", f"{report.gflops:.4f}", _signed(extra["mparams"], ".4f"),
            _signed(extra["gflops"], ".4f"), _signed(extra["params_pct"], ".2f") + "%",
            _signed(extra["flops_pct"], ".2f") + "%",
        ])
    print(render_table(headers, rows))
    print(
        "\nBatch 1. GMACs: multiply-accumulates of convolutions and linear layers. GFLOPs = 2 x "
        "GMACs\n+ 1 per output element of pointwise ops (ReLU, sigmoid, mul, add, ...), 1 per "
        "element read by\nreductions and pooling, 1 per upsampling tap, 2 per batch-norm "
        "element (docs/cost.md)."
    )
    if report.uncounted_ops:
        ops = ", ".join(f"{k} x{v}" for k, v in report.uncounted_ops.items())
        print(f"operators without a counting rule (counted as 0): {ops}")
    if getattr(args, "breakdown", False):
        print(f"\nper-module breakdown of {args.model} + {attention_label}:")
        print(report.breakdown_table())
        print("\nby module type:")
        print(report.type_table())
    return 0
