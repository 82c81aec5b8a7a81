"""``create_model``: the one factory of the registered networks (:mod:`.registry`), with their
pretrained weights (:mod:`.pretrained`)."""

from __future__ import annotations

import difflib
import logging
from typing import Any, Dict, Mapping

from torch import nn

from .._ranges import short_repr
from ..attention import UnknownOptionError, attention_option_keys, check_attention_name, split_attention_options
from .pretrained import load_pretrained
from .registry import _ATTENTION_OPTIONS, _MODELS, _model_parameters, list_models
from .released import _PREFIX, get_pretrained

__all__ = ["create_model"]

_log = logging.getLogger("nlsam.models")


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

    ``pretrained="nlsam:NAME"`` loads one of nlsam's released weights
    (:func:`nlsam.list_pretrained`), attention included; ``name`` and ``attention`` must be
    the weight's (checked before the network is built).
    """
    if name not in _MODELS:
        close = difflib.get_close_matches(str(name), list(_MODELS), n=3)
        hint = f" (did you mean {', '.join(close)}?)" if close else ""
        raise ValueError(f"unknown model {short_repr(name)}{hint}; valid: {', '.join(list_models())}")
    arguments = _builder_arguments(name, kwargs)
    if isinstance(pretrained, str) and pretrained.startswith(_PREFIX):
        _check_released(pretrained, name, kwargs.get("attention"))
    model = _MODELS[name](**arguments)
    if pretrained is not False and pretrained is not None:
        if pretrained is True:
            if getattr(model, "stage_ids", [None])[0] != 2:
                raise ValueError(
                    f"no published weights for {name}; pass pretrained=FILE (a state dict "
                    "or an nlsam checkpoint) instead"
                )
            pretrained = f"torchvision:{name}"
        report = load_pretrained(model, pretrained)
        # nn.Module.__setattr__ is annotated for tensors and modules only; any value is kept
        model.pretrained_report = report  # type: ignore[assignment]
        _log.info("%s: %s", name, report)
    return model


def _builder_arguments(name: str, options: Mapping[str, Any]) -> Dict[str, Any]:
    """``options`` as the builder of network ``name`` takes them, checked and split here, once:
    its own options as given, and the flat attention options (``nlsam_pool=2``, ...) split by part
    (:func:`nlsam.attention.split_attention_options`) into one ``attention_options`` argument
    (``{"nlsam": {"pool": 2}, ...}``), where the network takes them.

    Raises :class:`nlsam.attention.UnknownOptionError` for a key the network does not take,
    naming the valid ones.
    """
    own, takes_attention = _model_parameters(name)
    valid = own + attention_option_keys() if takes_attention else own
    for key in options:
        if key not in valid:
            close = difflib.get_close_matches(key, valid, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise UnknownOptionError(
                f"unknown option {short_repr(key)} for model {name}{hint}; valid: {', '.join(valid)}"
            )
    if not takes_attention:
        return dict(options)
    arguments = {k: v for k, v in options.items() if k in own}
    arguments[_ATTENTION_OPTIONS] = split_attention_options({k: v for k, v in options.items() if k not in own})
    return arguments


def _check_released(source: str, name: str, attention: Any) -> None:
    """A released weight fits only its own network: the same architecture and attention."""
    weight = get_pretrained(source)
    if name != weight.arch or check_attention_name(attention) != weight.attention:
        raise ValueError(
            f"{weight.name} is {weight.arch} with attention {weight.attention!r}, not {name} with "
            f"{check_attention_name(attention)!r}; load it with nlsam.create_model({weight.arch!r}, "
            f"attention={weight.attention!r}, pretrained={source!r})"
        )
