"""Rebuild a trained network from its checkpoint or run directory."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Union

import torch
from torch import nn

from ..models import create_model
from .checkpoint import load_checkpoint


def build_network(config: Mapping[str, Any], meta: Mapping[str, Any]) -> nn.Module:
    """The untrained network a run's config and data description (``meta``) describe."""
    return create_model(
        config["model"],
        num_classes=len(meta.get("classes", [])),
        attention=config.get("attention"),
        in_chans=meta.get("in_chans", 3),
        input_size=tuple(meta.get("input_size", (32, 32))),
        **(config.get("model_options") or {}),
    )


def model_from_checkpoint(state: dict) -> nn.Module:
    """Build the network a checkpoint's config describes and load its weights (eval mode).

    The model carries ``classes``, ``input_size`` (H, W) and ``data_config`` (input size, mean,
    std) so that images can be prepared the way the model was trained.
    """
    cfg, meta = state["config"], state.get("meta", {})
    classes = list(meta.get("classes", []))
    try:
        model = build_network(cfg, meta)
        model.load_state_dict(state["model"])
    except (RuntimeError, KeyError, TypeError) as exc:
        raise ValueError(
            f"checkpoint does not match the network its config describes "
            f"({cfg.get('model')} + {cfg.get('attention')}): {str(exc).splitlines()[0]}"
        ) from None
    model.eval()
    model.classes = classes
    model.data_config = dict(
        input_size=(meta.get("in_chans", 3), *meta.get("input_size", (32, 32))),
        mean=tuple(meta.get("mean", (0.0,) * 3)),
        std=tuple(meta.get("std", (1.0,) * 3)),
    )
    return model


def load_model(path: Union[str, Path], device: Union[str, torch.device] = "cpu") -> nn.Module:
    """Load a trained network from a checkpoint file or a run directory (``best.pt`` first).

    >>> model = nlsam.load_model("runs/builtin-resnet20-nlsam-seed0")   # doctest: +SKIP
    >>> model.classes, model.input_size
    """
    state = load_checkpoint(path)
    return model_from_checkpoint(state).to(device)
