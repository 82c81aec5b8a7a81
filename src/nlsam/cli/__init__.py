"""The ``nlsam`` command line: ``nlsam {train,eval,profile,...}`` (also ``python -m nlsam``).

One module per command, each with ``add_parser(sub)`` (its flags, help and the ``run`` it hands
the parsed arguments to) and ``run(args)``, which calls the library and prints. :func:`main`
parses, dispatches and turns the library's errors into one line on stderr.
"""
from __future__ import annotations

import argparse
import os
import sys
from typing import List, NoReturn, Optional

from ..version import __version__
# (the modules `eval` and `list` shadow those builtins in this namespace: do not call them here)
from . import attention, cam, eval, export, list, locate, predict, profile, report, study, train

#: the commands, in the order ``nlsam --help`` lists them
COMMANDS = (train, eval, profile, study, report, list, cam, attention, locate, predict, export)


class _Parser(argparse.ArgumentParser):
    """Errors in one line (what was wrong, and where the help is), not the usage block first."""

    def error(self, message: str) -> "NoReturn":  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message} (see `{self.prog} --help`)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="nlsam",
        description="Nonlocal spatial attention (NL-SAM) for CNNs: build, train, evaluate, profile.",
    )
    parser.add_argument("--version", action="version", version=_version())
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for command in COMMANDS:
        command.add_parser(sub)
    return parser


def _version() -> str:
    return f"nlsam {__version__}"


def main(argv: Optional[List[str]] = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help, --version, or a bad flag (already reported in one line)
        return int(exc.code or 0) if not isinstance(exc.code, str) else 2
    handler = args.handler
    from ..data import DownloadError

    try:
        code = int(handler(args) or 0)
        sys.stdout.flush()
        return code
    except BrokenPipeError:
        # the reader went away (`nlsam eval RUN | head -2`): stop quietly, like any Unix tool
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 141
    except (ValueError, FileNotFoundError, KeyError, DownloadError) as exc:
        message = exc.args[0] if isinstance(exc, KeyError) and exc.args else exc
        print(f"nlsam {args.command}: error: {message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"nlsam {args.command}: interrupted", file=sys.stderr)
        return 130
