"""``nlsam train``: one flag per field of the training config (:class:`~nlsam.engine.config.TrainConfig`),
then :func:`nlsam.engine.train`."""

from __future__ import annotations

import argparse
import dataclasses
import sys
import typing
from typing import Any, Optional

from ._args import model_option

__all__ = ["add_parser", "run"]


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "train",
        help="train a network (default: NL-SAM ResNet-20 on the built-in dataset)",
        description="Train an attention network. Options come from the defaults, then the YAML "
        "config (-c: a YAML file, or the name of a shipped one, see `nlsam list configs`), then the "
        "flags given here; every YAML key is also a flag. Writes "
        "RUN_DIR/config.yaml, metrics.jsonl, last.pt and best.pt. --resume continues a run with "
        "its saved settings; of these it lets you change only the ones that do not alter what was "
        "trained (epochs, device, amp, compile, workers, logging).",
        argument_default=argparse.SUPPRESS,
    )
    p.add_argument(
        "-c",
        "--config",
        dest="config_file",
        metavar="CONFIG",
        help="YAML config file, or the name of a shipped config (`nlsam list configs`: "
        "cifar10_resnet110_nlsam, ...); flags override it",
    )
    _add_config_flags(p)
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from ..configs import config_path
    from ..engine import NonFiniteLossError, resolve_config, resumed_config
    from ..engine.train import train

    overrides = {k: v for k, v in vars(args).items() if k not in ("command", "handler", "config_file")}
    if "model_options" in overrides:
        overrides["model_options"] = dict(overrides["model_options"])
    config_file = getattr(args, "config_file", None)
    if config_file is not None:
        config_file = config_path(config_file)  # a file, or a shipped config's name
    if overrides.get("resume"):
        # a resumed run starts from its own saved config; a file and flags given now may change
        # only what a resumed run can honour (checked against the checkpoint by train)
        cfg = resumed_config(config_file, overrides)
    else:
        cfg = resolve_config(config_file, overrides)
    try:
        train(cfg)
    except NonFiniteLossError as exc:
        print(f"nlsam train: error: {exc}", file=sys.stderr)
        return 3
    return 0


def _str_or_none(value: str) -> Optional[str]:
    return None if value.lower() in ("none", "null", "") else value


def _flag_type(hint: Any) -> Any:
    """The argparse ``type`` of a config field's scalar type hint (``Optional[X]`` -> ``X``)."""
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    return args[0] if typing.get_origin(hint) is typing.Union and len(args) == 1 else hint


def _add_config_flags(p: argparse.ArgumentParser) -> None:
    """One flag per :class:`~nlsam.engine.config.TrainConfig` field, with the field's help."""
    from ..engine.config import CHOICES, TrainConfig

    hints = typing.get_type_hints(TrainConfig)
    for f in dataclasses.fields(TrainConfig):
        names = [f.metadata.get("flag") or "--" + f.name.replace("_", "-")]
        if names[0] != "--" + f.name.replace("_", "-"):
            names.append("--" + f.name.replace("_", "-"))
        kind = _flag_type(hints[f.name])
        options: dict = dict(dest=f.name, help=_flag_help(f, hints[f.name]))
        if f.name in CHOICES:
            options.update(choices=CHOICES[f.name])
        if f.name == "model_options":
            options.update(type=model_option, action="append", metavar="KEY=VALUE")
        elif f.name == "attention":
            options.update(type=_str_or_none)
        elif f.name == "resume":
            options.update(action="store_true")
        elif kind is bool:
            options.update(action=argparse.BooleanOptionalAction)
        elif typing.get_origin(kind) is list:
            options.update(type=typing.get_args(kind)[0], nargs="+")
        elif kind in (int, float) and kind is not hints[f.name]:  # Optional[int], Optional[float]
            options.update(type=_number_or_none(kind), metavar=f.name.upper())
        else:
            options.update(type=kind)
        p.add_argument(*names, **options)


def _flag_help(f: Any, hint: Any) -> str:
    """A config field's help, with its valid range where it has one (``training epochs; valid: 1..10000``)."""
    text = f.metadata.get("help") or ""
    valid = f.metadata.get("valid")
    if valid is not None:
        optional = type(None) in typing.get_args(hint)
        text = f"{text}; valid: {valid.text()}{' or none' if optional else ''}"
    return text.replace("%", "%%")


def _number_or_none(kind: type) -> Any:
    """The argparse type of an optional number: ``none`` (or ``null``) unsets it, so a flag can
    take back what a config file set (``--grad-clip none``: no clipping)."""

    def parse(value: str) -> Any:
        return None if value.strip().lower() in ("none", "null") else kind(value)

    parse.__name__ = kind.__name__  # argparse names it in "invalid int value: ..."
    return parse
