"""Model registry: ``register_model`` records builders, ``create_model`` is the one factory."""
from __future__ import annotations

import difflib
import inspect
import typing
from typing import Callable, Dict, List, Optional

from torch import nn

_MODELS: Dict[str, Callable[..., nn.Module]] = {}


class UnknownOptionError(ValueError, TypeError):
    """A keyword option the network does not take: a ``TypeError`` as Python raises for an
    unexpected keyword argument, and a ``ValueError`` like every other bad input of nlsam."""


def register_model(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
    """Decorator: register a builder under its function name."""
    _MODELS[fn.__name__] = fn
    return fn


def list_models() -> List[str]:
    """Names accepted by :func:`create_model`, sorted."""
    return sorted(_MODELS)


def is_model(name: str) -> bool:
    return name in _MODELS


def model_options(name: str) -> Optional[List[str]]:
    """The keyword options a registered network takes: its builder's keyword parameters or, for a
    builder that passes ``**kwargs`` on, those of the class it returns (its return annotation).
    ``None`` when that class takes ``**kwargs`` too: it checks its options itself."""
    fn = _MODELS[name]
    names: List[str] = []
    for target in (fn, typing.get_type_hints(fn).get("return")):
        if target is None:
            break
        params = inspect.signature(target.__init__ if isinstance(target, type) else target).parameters
        names += [p.name for p in params.values()
                  if p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD) and p.default is not p.empty]
        if not any(p.kind is p.VAR_KEYWORD for p in params.values()):
            return sorted(set(names))
    return None


def create_model(name: str, **kwargs) -> nn.Module:
    """Build a registered network, e.g. ``create_model("resnet110", num_classes=100,
    attention="nlsam")``. Keyword arguments override the builder's defaults (see
    :class:`nlsam.models.ResNet` for the options); an unknown one is a ``ValueError`` naming
    the valid ones."""
    if name not in _MODELS:
        close = difflib.get_close_matches(str(name), list(_MODELS), n=3)
        hint = f" (did you mean {', '.join(close)}?)" if close else ""
        raise ValueError(f"unknown model {name!r}{hint}; valid: {', '.join(list_models())}")
    valid = model_options(name)
    for key in kwargs if valid is not None else ():
        if key not in valid:
            close = difflib.get_close_matches(key, valid, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise UnknownOptionError(f"unknown option {key!r} for model {name}{hint}; valid: {', '.join(valid)}")
    return _MODELS[name](**kwargs)
