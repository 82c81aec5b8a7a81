"""``nlsam list``: the network, attention, dataset, config and released-weight names the other
commands accept."""

from __future__ import annotations

import argparse
from typing import List, Tuple

__all__ = ["add_parser", "run"]

_LISTS = ("models", "attention", "datasets", "configs", "pretrained")


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "list",
        help="list the network, attention, dataset, config and released-weight names",
        description="Print the names the other commands accept: networks (--model), attention "
        "compositions (--attention), built-in datasets (--data), and the shipped training configs "
        "(train -c NAME) and study files (study NAME), each with what it is for, and the released "
        "weights (create_model(..., pretrained='nlsam:NAME'), eval nlsam:NAME) with their top-1.",
    )
    p.add_argument("what", nargs="?", choices=_LISTS, default=None, help="only this list")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from ..attention import ATTENTION_NAMES
    from ..data import DATASET_NAMES
    from ..models import list_models

    lists = dict(
        models=list_models(),
        attention=["none", *ATTENTION_NAMES],
        datasets=[*DATASET_NAMES, "PATH (an ImageFolder directory or .zip)"],
    )
    for what in [args.what] if args.what else _LISTS:
        if what == "configs":
            _print_configs()
            continue
        if what == "pretrained":
            _print_pretrained(bare=bool(args.what))
            continue
        if not args.what:
            print(f"{what}:")
        for name in lists[what]:
            print(f"  {name}" if not args.what else name)
    return 0


def _print_configs() -> None:
    """The shipped training configs and study files, two headed lists of ``NAME  description``."""
    from ..configs import config_path, description, list_configs, list_studies, study_path

    groups: List[Tuple[str, List[Tuple[str, str]]]] = [
        ("configs (nlsam train -c NAME)", [(n, description(config_path(n))) for n in list_configs()]),
        ("studies (nlsam study NAME)", [(n, description(study_path(n))) for n in list_studies()]),
    ]
    width = max(len(name) for _, rows in groups for name, _ in rows)
    for title, rows in groups:
        print(f"{title}:")
        for name, text in rows:
            print(f"  {name:<{width}}  {text}".rstrip())


def _print_pretrained(bare: bool) -> None:
    """The released weights, ``NAME  top-1 (variant mean ± std over n seeds) on DATA``."""
    from ..models import list_pretrained

    weights = list_pretrained()
    if not bare:
        print("pretrained (nlsam:NAME):")
    if not weights:
        print("  (none released in this installation)")
    width = max((len(w.name) for w in weights), default=0)
    for w in weights:
        spread = f" ± {w.variant_top1_std:.2f}" if w.variant_top1_std is not None else ""
        variant = f"variant {w.variant_top1_mean:.2f}{spread}% over {w.variant_seeds} seed(s)"
        print(f"  {w.name:<{width}}  top-1 {w.top1:.2f}% ({variant}); {w.data}")
