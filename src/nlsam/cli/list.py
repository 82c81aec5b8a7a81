"""``nlsam list``: the network, attention and dataset names the other commands accept."""
from __future__ import annotations

import argparse

LISTS = ("models", "attention", "datasets")


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "list",
        help="list the network, attention and dataset names",
        description="Print the names the other commands accept: networks (--model), attention "
        "compositions (--attention) and built-in datasets (--data).",
    )
    p.add_argument("what", nargs="?", choices=LISTS, default=None, help="only this list")
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
    for what in [args.what] if args.what else LISTS:
        if not args.what:
            print(f"{what}:")
        for name in lists[what]:
            print(f"  {name}" if not args.what else name)
    return 0
