"""The ``nlsam`` command line: ``nlsam {train,eval,profile,...}``. Parsing only; each command's
work lives in the library module named beside it."""
from __future__ import annotations

import argparse
import sys
from typing import List, Optional


def _add_profile(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "profile",
        help="parameters, MACs and FLOPs of a network, with the attention overhead",
        description="Print the cost table of a network (params, GFLOPs) and the overhead of its "
        "attention modules over the plain network. FLOPs = 2 x MACs for convolutions and "
        "linear layers; the cheap work of attention modules is counted too.",
    )
    p.add_argument("model", help="network name (see `nlsam profile --list`)")
    p.add_argument("--attention", default="nlsam", help="attention composition, or 'none'")
    p.add_argument("--input-size", type=int, nargs="+", default=None, metavar="N",
                   help="input H [W]; default: the network's native size")
    p.add_argument("--num-classes", type=int, default=None)
    p.add_argument("--breakdown", action="store_true", help="also print the per-module table")
    p.add_argument("--json", action="store_true", help="print one JSON object instead")
    p.set_defaults(handler="nlsam.analysis.cost:main_profile")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="nlsam",
        description="Nonlocal spatial attention (NL-SAM) for CNNs: build, train, evaluate, profile.",
    )
    parser.add_argument("--version", action="version", version=_version())
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    _add_profile(sub)
    return parser


def _version() -> str:
    from . import __version__

    return f"nlsam {__version__}"


def main(argv: Optional[List[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    module_name, func_name = args.handler.split(":")
    import importlib

    handler = getattr(importlib.import_module(module_name), func_name)
    try:
        return int(handler(args) or 0)
    except (ValueError, FileNotFoundError, KeyError) as exc:
        message = exc.args[0] if isinstance(exc, KeyError) and exc.args else exc
        print(f"nlsam {args.command}: error: {message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"nlsam {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
