"""Argument types and help texts that several commands share."""
from __future__ import annotations

import argparse

# the inspection commands (cam, attention, predict, export)
CHECKPOINT_HELP = "a .pt checkpoint or a run directory (its best.pt, else last.pt)"
IMAGES_HELP = "image files (any size and format PIL reads); each is resized as the model's test data"
SIZE_HELP = ("run the network at this input size H [W] instead of its training size (the image is "
             "resized to it; the networks accept any size)")
CMAP_HELP = "matplotlib colour map of the heat maps (default: jet)"


def model_option(text: str) -> tuple:
    """``KEY=VALUE`` with VALUE parsed as YAML (numbers, lists, mappings): ``train
    --model-option`` and ``study --set``."""
    import yaml

    if "=" not in text:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    key, value = text.split("=", 1)
    return key.strip(), yaml.safe_load(value)
