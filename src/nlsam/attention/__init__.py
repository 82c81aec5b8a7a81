"""Attention modules: NL-SAM and the modules the paper compares it with.

Every module takes ``channels`` (and, where it needs one, the training ``feature_size``) first,
keyword options after, and maps a B x C x H x W tensor to one of the same shape.
:func:`create_attention` builds the named compositions the paper studies.
"""
from __future__ import annotations

from typing import Optional

from torch import nn

from .bam import BAM
from .cbam import CBAMChannelGate, CBAMSpatialGate
from .ge import GatherExcite
from .nlsam import INTERPOLATION_MODES, NLSAM, SizeLike
from .se import SqueezeExcite

__all__ = [
    "ATTENTION_NAMES",
    "BAM",
    "CBAMChannelGate",
    "CBAMSpatialGate",
    "GatherExcite",
    "INTERPOLATION_MODES",
    "NLSAM",
    "SqueezeExcite",
    "attention_placement",
    "check_attention_name",
    "create_attention",
]

# name -> the parts applied one after another; "cbam+nlsam" is CBAM with NL-SAM as its spatial gate
_COMPOSITIONS = {
    "nlsam": ("nlsam",),
    "se": ("se",),
    "ge": ("ge",),
    "cbam": ("cbam_channel", "cbam_spatial"),
    "bam": ("bam",),
    "se+nlsam": ("se", "nlsam"),
    "ge+nlsam": ("ge", "nlsam"),
    "cbam+nlsam": ("cbam_channel", "nlsam"),
}

ATTENTION_NAMES = tuple(_COMPOSITIONS)


def check_attention_name(name: Optional[str]) -> Optional[str]:
    """Return ``name`` normalised (``None``, ``"none"`` and ``""`` mean no attention).

    Raises ``ValueError`` naming the valid choices for anything else.
    """
    if name is None or (isinstance(name, str) and name.strip().lower() in ("", "none", "null")):
        return None
    if not isinstance(name, str) or name.strip().lower() not in _COMPOSITIONS:
        valid = ", ".join(ATTENTION_NAMES)
        raise ValueError(f"unknown attention {name!r}; valid: none, {valid}")
    return name.strip().lower()


def attention_placement(name: Optional[str]) -> str:
    """Where a composition goes in a ResNet: ``"block"`` (on the residual branch of every block
    of the chosen stages, like SE, CBAM and NL-SAM) or ``"stage"`` (once after each chosen stage,
    like BAM)."""
    return "stage" if check_attention_name(name) == "bam" else "block"


def create_attention(
    name: Optional[str],
    channels: int,
    feature_size: SizeLike,
    *,
    nlsam_pool: int = 2,
    nlsam_reduction: int = 8,
    nlsam_interpolation: str = "nearest",
    channel_reduction: int = 16,
    include_nlsam: bool = True,
    include_others: bool = True,
) -> nn.Module:
    """Build the named attention composition for a ``channels`` x ``feature_size`` feature map.

    ``nlsam_*`` configure NL-SAM (k, r and the upsampling mode); ``channel_reduction`` is the
    ratio of SE, GE, CBAM's channel gate and BAM. ``include_nlsam`` / ``include_others`` keep
    only the NL-SAM part or only the other parts of a composition (a network may place NL-SAM
    in fewer stages than SE, say). ``None``, or nothing left to build, gives ``nn.Identity``.
    """
    name = check_attention_name(name)
    if name is None:
        return nn.Identity()
    parts = []
    for part in _COMPOSITIONS[name]:
        if not (include_nlsam if part == "nlsam" else include_others):
            continue
        if part == "nlsam":
            parts.append(
                NLSAM(
                    feature_size,
                    pool=nlsam_pool,
                    reduction=nlsam_reduction,
                    interpolation=nlsam_interpolation,
                )
            )
        elif part == "se":
            parts.append(SqueezeExcite(channels, reduction=channel_reduction))
        elif part == "ge":
            parts.append(GatherExcite(channels, feature_size, reduction=channel_reduction))
        elif part == "cbam_channel":
            parts.append(CBAMChannelGate(channels, reduction=channel_reduction))
        elif part == "cbam_spatial":
            parts.append(CBAMSpatialGate())
        elif part == "bam":
            parts.append(BAM(channels, reduction=channel_reduction))
    if not parts:
        return nn.Identity()
    return parts[0] if len(parts) == 1 else nn.Sequential(*parts)
