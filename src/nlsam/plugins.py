"""Modules of a user's own that register attention parts or networks, imported by name.

A run's config may list them under ``imports`` (``--import MODULE`` on the command line), as
mmcv's ``custom_imports`` does: ``nlsam train``, the trainers of ``nlsam study`` (each in its own
process) and every command that rebuilds a network from a checkpoint import them first, so a
module registered with :func:`nlsam.attention.register_attention` outside nlsam works everywhere.
"""

from __future__ import annotations

import importlib
from typing import Iterable

__all__ = ["import_modules"]


def import_modules(names: Iterable[str]) -> None:
    """Import each named module (``pkg.module``); a missing one is one clear ``ValueError``."""
    for name in names or ():
        try:
            importlib.import_module(name)
        except ImportError as exc:
            raise ValueError(
                f"cannot import module {name!r} named in `imports` / --import: {exc}; it must be "
                "importable from this Python (installed, or on PYTHONPATH)"
            ) from None
