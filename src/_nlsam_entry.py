"""The ``nlsam`` console script.

It lives outside the ``nlsam`` package so that it runs before anything is imported: importing
``nlsam`` imports torch, which takes a second or more, and a Ctrl-C in that second ends here in
one line (exit 130) instead of a traceback through torch's modules.
"""

import sys


def main() -> int:
    """Import the command line and run it (:func:`nlsam.cli.main`)."""
    try:
        from nlsam.cli import main as run_command
    except KeyboardInterrupt:
        print("nlsam: interrupted", file=sys.stderr)
        return 130
    return run_command()


if __name__ == "__main__":
    sys.exit(main())
