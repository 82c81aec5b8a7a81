"""Attention modules: NL-SAM and the modules the paper compares it with.

Every module takes ``channels`` (and, where it needs one, the training ``feature_size``) first,
keyword options after, and maps a B x C x H x W tensor to one of the same shape. Each module
file registers its part in :mod:`.registry`, which builds the named compositions the paper
studies (:func:`create_attention`) and is the one source of every list of attention names.
A new module is one file and one :func:`register_attention` line, from outside the package too.
"""

from __future__ import annotations

# the import order is the order of the attention names (the paper's): keep it
# isort: off
from .nlsam import INTERPOLATION_MODES, NLSAM, set_compiled_forward
from .se import SqueezeExcite
from .ge import GatherExcite
from .cbam import CBAMChannelGate, CBAMSpatialGate
from .bam import BAM
from .gate import INITS, Gate, add_attended, apply_gate, apply_init, check_init, zero_
from .registry import (
    AttentionPart,
    AttentionPlan,
    AttentionSequence,
    UnknownOptionError,
    attention_option_keys,
    attention_parts,
    attention_placement,
    attention_types,
    check_attention_name,
    create_attention,
    identity_init,
    is_builtin_part,
    list_attention,
    register_attention,
    register_composition,
    spatial_attention_types,
    split_attention_options,
)

from . import registry as _registry

# isort: on

__all__ = [
    "ATTENTION_NAMES",
    "AttentionPart",
    "AttentionPlan",
    "AttentionSequence",
    "BAM",
    "CBAMChannelGate",
    "CBAMSpatialGate",
    "Gate",
    "GatherExcite",
    "INITS",
    "INTERPOLATION_MODES",
    "NLSAM",
    "SqueezeExcite",
    "UnknownOptionError",
    "add_attended",
    "apply_gate",
    "apply_init",
    "attention_option_keys",
    "attention_parts",
    "attention_placement",
    "attention_types",
    "check_attention_name",
    "check_init",
    "create_attention",
    "identity_init",
    "is_builtin_part",
    "list_attention",
    "register_attention",
    "register_composition",
    "set_compiled_forward",
    "spatial_attention_types",
    "split_attention_options",
    "zero_",
]

# the paper's combinations: a channel module, then NL-SAM; "cbam+nlsam" is CBAM's channel gate
# with NL-SAM in place of CBAM's spatial gate (the paper's Figure 4)
register_composition("se+nlsam", ("se", "nlsam"))
register_composition("ge+nlsam", ("ge", "nlsam"))
register_composition("cbam+nlsam", ("cbam_channel", "nlsam"))
_registry._record_builtins()  # everything above is nlsam's own: replacing it needs overwrite=True


def __getattr__(name: str):
    if name == "ATTENTION_NAMES":  # derived on each use, so names registered later are in it
        return tuple(list_attention())
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
