"""The counting rules of :func:`nlsam.cost.profile`: what one executed ATen operator costs.

This is the one statement of the rules; the report types, the counter, ``nlsam profile`` and
docs/cost.md refer to it. Common counters (fvcore, ptflops, thop) count the
multiply-accumulates of convolutions and fully-connected layers and little else, which makes an
attention module such as NL-SAM look free: its two small fc layers are a few thousand MACs,
while its real work is a channel mean, a pooling, a sigmoid, an upsampling and a multiplication
over whole feature maps. Here every operator is counted with exactly one rule:

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

Any other operator is recorded in :attr:`~nlsam.cost.CostReport.uncounted_ops` (with its call
count) and contributes nothing. FLOPs therefore are ``2 * macs + extra`` where ``extra`` is the
sum of the non-matmul rules; :attr:`~nlsam.cost.CostReport.macs` holds the convolution and
matmul MACs only, the number fvcore, ptflops and most papers call "FLOPs".
"""

from __future__ import annotations

import functools
import math
import re
from typing import Any, Dict, Optional, Sequence, Tuple

import torch
from torch.utils._pytree import tree_flatten

from .._optional import optional_module

__all__ = ["COUNTING_RULES", "count_op"]

#: The table above, one line per row: the ``convention`` of every JSON report.
COUNTING_RULES: Dict[str, str] = {
    "conv/matmul": "FLOPs = 2 x MACs; MACs = output elements x C_in/groups x kernel area "
    "(convolution), m x k x n (mm, addmm, bmm, baddbmm, linear) or L x S x (E + E_v) per "
    "head (scaled dot-product attention); bias not counted",
    "pointwise": "1 FLOP per output element (add, sub, mul, div, sigmoid, relu, clamp, ...)",
    "reduction": "1 FLOP per input element (mean, sum, amax, max, ...)",
    "pooling": "1 FLOP per element read: output elements x kernel area; adaptive pooling: the "
    "exact sum of its window sizes (= input elements when the size divides)",
    "upsampling": "1 FLOP per tap per output element: nearest 1, linear 2, bilinear 4, trilinear 8, bicubic 16",
    "softmax": "3 FLOPs per element (exp, sum, divide)",
    "batch norm (running statistics)": "2 FLOPs per element (folded scale and shift)",
    "normalisation with batch statistics": "5 FLOPs per element (batch norm in training mode, "
    "layer/group/instance norm)",
    "data movement": "0 (view, reshape, slice, cat, pad, copy, clone, empty, ...)",
}

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
    "cudnn_convolution_transpose miopen_convolution_transpose slow_conv_transpose2d slow_conv_transpose3d".split()
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
    "native_layer_norm layer_norm native_group_norm group_norm instance_norm rms_norm _fused_rms_norm".split()
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


@functools.lru_cache(maxsize=None)
def _flop_registry() -> Optional[Dict[Any, Any]]:
    """torch's FlopCounterMode formulas by operator, or None on a torch without them."""
    return getattr(optional_module("torch.utils.flop_counter"), "flop_registry", None)


def _registry_macs(func: Any, args: Sequence[Any], kwargs: Dict[str, Any], out: Any) -> Optional[int]:
    """MACs from torch's own FlopCounterMode formulas (attention kernels, ...), if it has one."""
    flop_registry = _flop_registry()
    if flop_registry is None:  # pragma: no cover - old torch
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
        reads *= sum(-((-(i + 1) * size_in) // size_out) - (i * size_in) // size_out for i in range(size_out))
    return reads


def count_op(func: Any, args: Sequence[Any], kwargs: Optional[Dict[str, Any]], out: Any) -> Optional[Tuple[int, int]]:
    """Cost of one executed ATen operator under the rules of the module docstring.

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
