"""torch.hub entry points: what the repository's ``hubconf.py`` exposes, one per timm name of
nlsam's networks (:data:`nlsam.models.timm_models.TIMM_MODEL_NAMES`), loading the released
weights (:mod:`nlsam.models.released`) with ``pretrained=True``.

    >>> model = torch.hub.load("REPO", "ge_nlsam_resnet20", pretrained=True)   # doctest: +SKIP
"""

from __future__ import annotations

from typing import Any, Callable, Optional

from torch import nn

from .factory import create_model
from .released import _PREFIX, list_pretrained
from .timm_models import TIMM_MODEL_NAMES, model_of_timm_name

__all__ = ["create_released", "hub_entrypoint"]


def create_released(model: str, pretrained: bool = False, tag: Optional[str] = None, **kwargs: Any) -> nn.Module:
    """The network of timm name ``model`` (e.g. ``ge_nlsam_resnet20``), with its released weights
    when ``pretrained`` (the one tagged ``tag``, else the first released for it): what each
    ``torch.hub`` entry point of the repository's ``hubconf.py`` calls. Keyword arguments go to
    :func:`nlsam.create_model`."""
    if model not in TIMM_MODEL_NAMES:
        raise ValueError(
            f"no network {model!r}; valid: the timm names of nlsam.models.timm_models.TIMM_MODEL_NAMES "
            f"(e.g. nlsam_resnet20, ge_nlsam_resnet50)"
        )
    arch, attention = model_of_timm_name(model)
    if not pretrained:
        if tag is not None:
            raise ValueError(f"tag={tag!r} names weights; pass pretrained=True with it")
        return create_model(arch, attention=attention, **kwargs)
    released = [w for w in list_pretrained() if w.model == model and (tag is None or w.tag == tag)]
    if not released:
        have = ", ".join(w.name for w in list_pretrained() if w.model == model)
        valid = (
            f"released for {model}: {have}"
            if have
            else f"none is released for {model}; released: {', '.join(w.name for w in list_pretrained()) or 'none'}"
        )
        raise ValueError(f"no released weight {model}{'.' + tag if tag else ''}; {valid}")
    return create_model(arch, attention=attention, pretrained=_PREFIX + released[0].name, **kwargs)


def hub_entrypoint(model: str) -> Callable[..., nn.Module]:
    """The ``torch.hub`` entry point of timm name ``model``: ``fn(pretrained=False, tag=None,
    **kwargs)``, calling :func:`create_released`."""

    def entrypoint(pretrained: bool = False, tag: Optional[str] = None, **kwargs: Any) -> nn.Module:
        return create_released(model, pretrained, tag, **kwargs)

    entrypoint.__name__ = entrypoint.__qualname__ = model
    released = [w.name for w in list_pretrained() if w.model == model]
    entrypoint.__doc__ = f"nlsam's {model}; pretrained=True loads " + (
        ", ".join(released) if released else "nothing: no weights are released for it"
    )
    return entrypoint
