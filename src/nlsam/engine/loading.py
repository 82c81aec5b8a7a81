"""From a run's config to its network: :func:`build_network` (every place that turns a config
into a network uses it) and the loaders of trained networks, :func:`model_from_checkpoint` and
:func:`load_model`."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any, Dict, Mapping, Optional, Union

import torch
from torch import nn

from ..attention import attention_option_keys
from ..models import create_model
from ..plugins import import_modules
from .checkpoint import _state_dict_mismatch, load_checkpoint
from .config import TrainConfig

__all__ = ["META_DEFAULTS", "build_network", "load_model", "model_from_checkpoint"]

#: What a checkpoint's ``meta`` stands for when it lacks a key (those of this nlsam hold them all).
META_DEFAULTS: Dict[str, Any] = dict(classes=[], in_chans=3, input_size=(32, 32), mean=(0.0,) * 3, std=(1.0,) * 3)


def build_network(
    config: Union[TrainConfig, Mapping[str, Any]],
    meta: Optional[Mapping[str, Any]] = None,
    *,
    device: Union[None, str, torch.device] = None,
) -> nn.Module:
    """The untrained network a run's ``config`` (its ``model``, ``attention`` and
    ``model_options``) describes for the data ``meta`` describes.

    ``meta``, in the layout of a checkpoint's ``meta`` and ``meta.json``: ``classes`` (their
    number sizes the classifier), ``in_chans`` and ``input_size`` (H, W); a key it lacks, or no
    ``meta`` at all, leaves the network's default (its native input size); ``model_options`` that
    set one of these win over ``meta``. ``device="meta"``
    builds it without memory or time, to check that the options fit.
    """
    if isinstance(config, TrainConfig):
        config = config.to_dict()
    data: Dict[str, Any] = {}
    if meta is not None:
        if "classes" in meta:
            data["num_classes"] = len(meta["classes"])
        if "in_chans" in meta:
            data["in_chans"] = meta["in_chans"]
        if "input_size" in meta:
            data["input_size"] = tuple(meta["input_size"])
    import_modules(config.get("imports") or ())  # a user's own attention modules, by name
    with torch.device(device) if device is not None else contextlib.nullcontext():
        # an option the config sets itself (num_classes, in_chans, input_size) is the one checked and used
        options = {**data, **(config.get("model_options") or {})}
        return create_model(config["model"], attention=config.get("attention"), **options)


def _share_plain_init(
    model: nn.Module, config: Union[TrainConfig, Mapping[str, Any]], meta: Optional[Mapping[str, Any]], seed: int
) -> int:
    """Give ``model`` the initial weights of the plain network (``attention: none``) of ``seed``
    in every layer the two share (same name and shape); return how many tensors were copied.

    Attention modules draw from the random generator while the network is built, so without
    this the convolutions of an NL-SAM run start from other values than those of the plain run
    with the same seed. With it, runs of two variants that share a seed differ only in the
    attention modules (their data order and augmentation already follow the seed alone), which
    is what makes a paired comparison of the two (``nlsam report``) meaningful. The global
    random state is left as it was.
    """
    if isinstance(config, TrainConfig):
        config = config.to_dict()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        plain = build_network({**config, "attention": None, "model_options": _plain_options(config)}, meta)
    own = model.state_dict()
    shared = {k: v for k, v in plain.state_dict().items() if k in own and own[k].shape == v.shape}
    model.load_state_dict(shared, strict=False)
    return len(shared)


def _plain_options(config: Mapping[str, Any]) -> Dict[str, Any]:
    """``model_options`` without those of the attention modules (a plain network refuses them)."""
    attention_keys = set(attention_option_keys())
    return {k: v for k, v in (config.get("model_options") or {}).items() if k not in attention_keys}


def model_from_checkpoint(state: dict) -> nn.Module:
    """Build the network a checkpoint's config describes and load its weights (eval mode).

    The model carries ``classes``, ``input_size`` (H, W) and ``data_config`` (input size, mean,
    std) so that images can be prepared the way the model was trained.
    """
    cfg, meta = state["config"], {**META_DEFAULTS, **state.get("meta", {})}
    model = None
    try:
        model = build_network(cfg, meta)
        model.load_state_dict(state["model"])
    except (RuntimeError, KeyError, TypeError) as exc:
        # load_state_dict's own error starts with a line that says nothing, then one line per kind
        detail = _state_dict_mismatch(model, state["model"]) if model is not None else None
        raise ValueError(
            f"checkpoint does not match the network its config describes "
            f"({cfg.get('model')} + {cfg.get('attention')}): {detail or str(exc).strip().splitlines()[0]}"
            + ("; its weights are those of another network, or its config was changed since" if detail else "")
        ) from None
    model.eval()
    # nn.Module.__setattr__ is annotated for tensors and modules only; any value is kept
    model.classes = list(meta["classes"])  # type: ignore[assignment]
    model.data_config = dict(  # type: ignore[assignment]
        input_size=(meta["in_chans"], *meta["input_size"]),
        mean=tuple(meta["mean"]),
        std=tuple(meta["std"]),
    )
    return model


def load_model(path: Union[str, Path], device: Union[str, torch.device] = "cpu") -> nn.Module:
    """Load a trained network from a checkpoint file or a run directory (``best.pt`` first).

    >>> model = nlsam.load_model("runs/builtin-resnet20-nlsam-seed0")   # doctest: +SKIP
    >>> model.classes, model.input_size
    """
    state = load_checkpoint(path)
    return model_from_checkpoint(state).to(device)
