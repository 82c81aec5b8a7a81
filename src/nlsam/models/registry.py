"""Model registry: ``register_model`` records builders by name; :func:`nlsam.models.create_model`
(:mod:`.factory`) builds them."""

from __future__ import annotations

import inspect
import typing
from typing import Callable, Dict, List

from torch import nn

from ..attention import attention_option_keys

__all__ = ["is_model", "list_models", "register_model"]

_MODELS: Dict[str, Callable[..., nn.Module]] = {}


def register_model(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
    """Decorator: register a builder under its function name."""
    _MODELS[fn.__name__] = fn
    return fn


def list_models() -> List[str]:
    """Names accepted by :func:`create_model`, sorted."""
    return sorted(_MODELS)


def is_model(name: str) -> bool:
    """Whether ``name`` is a registered network (one :func:`create_model` builds)."""
    return name in _MODELS


def _model_options(name: str) -> List[str]:
    """The keyword options a registered network takes: its builder's keyword parameters or, for a
    builder that passes ``**kwargs`` on, those of the class it returns (its return annotation),
    and for a class that takes ``**kwargs`` itself the attention options (``nlsam_pool``, ...),
    which it hands to its attention parts."""
    fn = _MODELS[name]
    names: List[str] = []
    for target in (fn, typing.get_type_hints(fn).get("return")):
        if target is None:
            break
        params = inspect.signature(target).parameters  # a class: its __init__'s, less self
        names += [
            p.name
            for p in params.values()
            if p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD) and p.default is not p.empty
        ]
        if not any(p.kind is p.VAR_KEYWORD for p in params.values()):
            return sorted(set(names))
    return sorted(set(names)) + attention_option_keys()
