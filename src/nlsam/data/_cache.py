"""On-disk cache of decoded datasets: where it lives, its keys, memory-mapped reads (the writes
are atomic: :mod:`nlsam._io`)."""

from __future__ import annotations

import hashlib
import logging
import os
from pathlib import Path
from typing import Any, Optional, Union

import torch

__all__ = ["cache_dir", "cache_key", "load_cached"]

_log = logging.getLogger("nlsam.data")


def cache_dir(path: Optional[Union[str, "os.PathLike[str]"]] = None) -> Path:
    """Folder for decoded-dataset caches.

    ``path`` if given, else ``$NLSAM_CACHE_DIR`` if set, else ``$XDG_CACHE_HOME/nlsam``, else
    ``~/.cache/nlsam``.
    """
    if path is not None:
        return Path(path).expanduser()
    env = os.environ.get("NLSAM_CACHE_DIR")
    if env:
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "nlsam"


def cache_key(*parts: Any) -> str:
    """A short stable hex digest of ``parts`` (their ``repr``)."""
    h = hashlib.sha256()
    for p in parts:
        h.update(repr(p).encode("utf-8", "surrogatepass"))
        h.update(b"\0")
    return h.hexdigest()[:20]


def load_cached(path: Path) -> Optional[dict]:
    """Load a cache file (``torch.save`` of a dict); None if absent or unreadable."""
    if not path.is_file():
        return None
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception as e:  # a stale or damaged cache is rebuilt, never fatal
        _log.warning("ignoring unreadable cache file %s (%s); it will be rebuilt", path, e)
        return None
    if not isinstance(obj, dict):
        _log.warning("ignoring cache file %s with unexpected content; it will be rebuilt", path)
        return None
    return obj
