"""Model registry: ``register_model`` records builders, ``create_model`` is the one factory."""
from __future__ import annotations

import difflib
import inspect
import typing
import logging
from typing import Any, Callable, Dict, List

from torch import nn

from .._ranges import short_repr
from ..attention import UnknownOptionError, attention_option_keys

_MODELS: Dict[str, Callable[..., nn.Module]] = {}
_log = logging.getLogger("nlsam.models")


def register_model(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
    """Decorator: register a builder under its function name."""
    _MODELS[fn.__name__] = fn
    return fn


def list_models() -> List[str]:
    """Names accepted by :func:`create_model`, sorted."""
    return sorted(_MODELS)


def is_model(name: str) -> bool:
    return name in _MODELS


def model_options(name: str) -> List[str]:
    """The keyword options a registered network takes: its builder's keyword parameters or, for a
    builder that passes ``**kwargs`` on, those of the class it returns (its return annotation),
    and for a class that takes ``**kwargs`` itself the attention options (``nlsam_pool``, ...),
    which it hands to its attention parts."""
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
    return sorted(set(names)) + attention_option_keys()


def create_model(name: str, pretrained: Any = False, **kwargs: Any) -> nn.Module:
    """Build a registered network, e.g. ``create_model("resnet110", num_classes=100,
    attention="nlsam")``. Keyword arguments override the builder's defaults (see
    :class:`nlsam.models.ResNet` for the options); an unknown one is a ``ValueError`` naming
    the valid ones.

    ``pretrained``: backbone weights to start from (:func:`nlsam.load_pretrained`): a
    ``"torchvision:ARCH[.WEIGHTS]"`` or ``"timm:ARCH[.TAG]"`` name, a local file (a state dict or
    an nlsam checkpoint) or a state dict; ``True`` means torchvision's default weights of the
    same ImageNet ResNet. The attention stays at its init (``attention_init="identity"`` makes
    the network start as the pretrained one); a classifier of another size is re-initialised.
    What was loaded is in ``model.pretrained_report``.
    """
    if name not in _MODELS:
        close = difflib.get_close_matches(str(name), list(_MODELS), n=3)
        hint = f" (did you mean {', '.join(close)}?)" if close else ""
        raise ValueError(f"unknown model {short_repr(name)}{hint}; valid: {', '.join(list_models())}")
    valid = model_options(name)
    for key in kwargs:
        if key not in valid:
            close = difflib.get_close_matches(key, valid, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise UnknownOptionError(f"unknown option {short_repr(key)} for model {name}{hint}; valid: {', '.join(valid)}")
    model = _MODELS[name](**kwargs)
    if pretrained is not False and pretrained is not None:
        from .pretrained import load_pretrained

        if pretrained is True:
            if getattr(model, "stage_ids", [None])[0] != 2:
                raise ValueError(f"no published weights for {name}; pass pretrained=FILE (a state dict "
                                 "or an nlsam checkpoint) instead")
            pretrained = f"torchvision:{name}"
        model.pretrained_report = load_pretrained(model, pretrained)
        _log.info("%s: %s", name, model.pretrained_report)
    return model
