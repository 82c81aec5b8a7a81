"""The ``nlsam`` command line: ``nlsam {train,eval,profile,...}`` (also ``python -m nlsam``).

One module per command, each with ``add_parser(sub)`` (its flags, help and the ``run`` it hands
the parsed arguments to) and ``run(args)``, which calls the library and prints. :func:`main`
parses, dispatches and turns the library's errors into one line on stderr.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any, List, NoReturn, Optional

from ..version import __version__

# (the modules `eval` and `list` shadow those builtins in this namespace: do not call them here)
from . import attention, cam, eval, export, list, locate, predict, profile, report, study, train

__all__ = ["build_parser", "main"]

#: the commands, in the order ``nlsam --help`` lists them
_COMMANDS = (train, eval, profile, study, report, list, cam, attention, locate, predict, export)


class _Parser(argparse.ArgumentParser):
    """Errors in one line (what was wrong, and where the help is), not the usage block first."""

    def error(self, message: str) -> "NoReturn":
        self.exit(2, f"{self.prog}: error: {message} (see `{self.prog} --help`)\n")


def build_parser() -> argparse.ArgumentParser:
    """The ``nlsam`` argument parser: every command with its flags and help."""
    parser = _Parser(
        prog="nlsam",
        description="Nonlocal spatial attention (NL-SAM) for CNNs: build, train, evaluate, profile.",
    )
    parser.add_argument("--version", action="version", version=_version())
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for command in _COMMANDS:
        command.add_parser(sub)
    return parser


def _version() -> str:
    return f"nlsam {__version__}"


def main(argv: Optional[List[str]] = None) -> int:
    """Run one command; return the exit status, as a Unix tool does: 0 done, 1 a failure of
    the system (a full disk, a file-size limit, an I/O error, standard output that cannot be
    written), 2 bad input (one line saying what was wrong), 3 a training that diverged,
    130 interrupted (Ctrl-C), 141 the reader of the output went away."""
    command = "nlsam"
    try:
        parser = build_parser()
        try:
            args = parser.parse_args(argv)
        except SystemExit as exc:  # --help, --version, or a bad flag (already reported in one line)
            return int(exc.code or 0) if not isinstance(exc.code, str) else 2
        command = f"nlsam {args.command}"
        return _run(args, command)
    except KeyboardInterrupt:
        print(f"{command}: interrupted", file=sys.stderr)
        return 130


def _run(args: argparse.Namespace, command: str) -> int:
    """Call the command's handler; turn the library's errors into one line on stderr."""
    from ..data import DownloadError

    stdout = sys.stdout = _WatchedStream(sys.stdout)
    try:
        code = int(args.handler(args) or 0)
        sys.stdout.flush()
        return code
    except BrokenPipeError:
        # the reader went away (`nlsam eval RUN | head -2`): stop quietly, like any Unix tool
        _silence_stdout()
        return 141
    except (ValueError, FileNotFoundError, KeyError, DownloadError) as exc:
        message = exc.args[0] if isinstance(exc, KeyError) and exc.args else exc
        print(f"{command}: error: {message}", file=sys.stderr)
        return 2
    except OSError as exc:  # a full disk, a file-size limit, an I/O error: the system, not the input
        if stdout.failure is not None:  # `nlsam eval > /dev/full`
            _silence_stdout()
            print(f"{command}: error: cannot write to standard output: {exc.strerror or exc}", file=sys.stderr)
        else:
            print(f"{command}: error: {_os_error_line(exc)}", file=sys.stderr)
        return 1
    finally:
        if sys.stdout is stdout:
            sys.stdout = stdout.stream


class _WatchedStream:
    """Standard output, remembering the error a write to it raised (a full disk behind
    ``> file``), so that the error is reported as the output's, not as some file's."""

    def __init__(self, stream: Any) -> None:
        self.stream = stream
        self.failure: Optional[OSError] = None

    def write(self, text: str) -> int:
        try:
            return self.stream.write(text)
        except OSError as exc:
            self.failure = exc
            raise

    def flush(self) -> None:
        try:
            self.stream.flush()
        except OSError as exc:
            self.failure = exc
            raise

    def __getattr__(self, name: str) -> Any:
        return getattr(self.stream, name)


def _os_error_line(exc: OSError) -> str:
    """One line for an OSError: :class:`nlsam._io.WriteError` says it itself; others name their file."""
    from .._io import WriteError

    if isinstance(exc, WriteError) or not exc.strerror:
        return str(exc)
    return f"{exc.filename}: {exc.strerror}" if exc.filename else exc.strerror


def _silence_stdout() -> None:
    """Point standard output at the null device, so that the flush at exit neither fails
    again nor prints "Exception ignored"."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError, AttributeError):  # not a real file (captured in tests)
        pass
