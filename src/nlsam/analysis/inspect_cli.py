"""Parsers of the commands that look inside a trained network: cam, attention, predict, export."""
from __future__ import annotations

import argparse


def add_inspect_commands(sub: argparse._SubParsersAction) -> None:
    """Add the inspection subcommands to the ``nlsam`` parser (none yet)."""
