"""Model registry: ``register_model`` records builders, ``create_model`` is the one factory."""
from __future__ import annotations

import difflib
from typing import Callable, Dict, List

from torch import nn

_MODELS: Dict[str, Callable[..., nn.Module]] = {}


def register_model(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
    """Decorator: register a builder under its function name."""
    _MODELS[fn.__name__] = fn
    return fn


def list_models() -> List[str]:
    """Names accepted by :func:`create_model`, sorted."""
    return sorted(_MODELS)


def is_model(name: str) -> bool:
    return name in _MODELS


def create_model(name: str, **kwargs) -> nn.Module:
    """Build a registered network, e.g. ``create_model("resnet110", num_classes=100,
    attention="nlsam")``. Keyword arguments override the builder's defaults (see
    :class:`nlsam.models.ResNet` for the options)."""
    if name not in _MODELS:
        close = difflib.get_close_matches(str(name), list(_MODELS), n=3)
        hint = f" (did you mean {', '.join(close)}?)" if close else ""
        raise ValueError(f"unknown model {name!r}{hint}; valid: {', '.join(list_models())}")
    return _MODELS[name](**kwargs)
