"""Argument types and help texts that several commands share."""

from __future__ import annotations

import argparse

# the inspection commands (cam, attention, predict, export)
CHECKPOINT_HELP = "a .pt checkpoint or a run directory (its best.pt, else last.pt)"
IMAGES_HELP = "image files (any size and format PIL reads); each is resized as the model's test data"
SIZE_HELP = (
    "run the network at this input size H [W] instead of its training size (the image is "
    "resized to it; the networks accept any size)"
)
CMAP_HELP = "matplotlib colour map of the heat maps (default: jet)"


#: The longest ``KEY=VALUE`` :func:`model_option` takes (a value is a number or a short list).
MAX_OPTION_CHARS = 10_000


def model_option(text: str) -> tuple:
    """``KEY=VALUE`` with VALUE parsed as YAML (numbers, lists, mappings): ``train
    --model-option`` and ``study --set``. Invalid YAML, anchors and aliases, and an overlong
    value are one-line errors that quote the value cut short."""
    from .._ranges import short_repr
    from ..engine.config import parse_yaml

    if "=" not in text:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {short_repr(text)}")
    key, value = text.split("=", 1)
    key = key.strip()
    if not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE with a KEY before '=', got {short_repr(text)}")
    if len(text) > MAX_OPTION_CHARS:
        raise argparse.ArgumentTypeError(
            f"{short_repr(key)}: the value is {len(value):,} characters long; at most "
            f"{MAX_OPTION_CHARS:,} are accepted (a number, a name or a short list)"
        )
    try:
        return key, parse_yaml(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(
            f"the value {short_repr(value, 40)} of {short_repr(key, 40)} is not valid YAML: {exc}"
        ) from None
