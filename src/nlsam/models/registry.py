"""Model registry: ``register_model`` records builders by name; :func:`nlsam.models.create_model`
(:mod:`.factory`) builds them."""

from __future__ import annotations

import inspect
import typing
from typing import Callable, Dict, List, Tuple

from torch import nn

__all__ = ["is_model", "list_models", "register_model"]

_MODELS: Dict[str, Callable[..., nn.Module]] = {}
#: The parameter through which a network takes its attention options, split by part.
_ATTENTION_OPTIONS = "attention_options"


def register_model(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
    """Decorator: register a builder under its function name.

    :func:`create_model` passes the builder its keyword options; attention options
    (``nlsam_pool=2``, ...) arrive split by part and checked, as one ``attention_options``
    argument (``{"nlsam": {"pool": 2}}``) that it hands to :class:`nlsam.models.ResNet`."""
    _MODELS[fn.__name__] = fn
    return fn


def list_models() -> List[str]:
    """Names accepted by :func:`create_model`, sorted."""
    return sorted(_MODELS)


def is_model(name: str) -> bool:
    """Whether ``name`` is a registered network (one :func:`create_model` builds)."""
    return name in _MODELS


def _model_parameters(name: str) -> Tuple[List[str], bool]:
    """The keyword options a registered network takes, and whether it takes attention options.

    The options are its builder's keyword parameters or, for a builder that passes ``**kwargs``
    on, those of the class it returns (its return annotation). Attention options (``nlsam_pool``,
    ...) reach a network already split by part, as one ``attention_options`` argument: a class
    with that parameter takes them, and so does a ``**kwargs`` that leads nowhere visible (a
    builder without return annotation, a class that takes ``**kwargs`` itself)."""
    fn = _MODELS[name]
    names: List[str] = []
    for target in (fn, typing.get_type_hints(fn).get("return")):
        if target is None:
            break
        params = inspect.signature(target).parameters  # a class: its __init__'s, less self
        names += [
            p.name
            for p in params.values()
            if p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD)
            and p.default is not p.empty
            and p.name != _ATTENTION_OPTIONS
        ]
        if _ATTENTION_OPTIONS in params:
            return sorted(set(names)), True
        if not any(p.kind is p.VAR_KEYWORD for p in params.values()):
            return sorted(set(names)), False
    return sorted(set(names)), True
