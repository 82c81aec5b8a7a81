"""On-disk cache of decoded datasets (atomic writes, memory-mapped reads)."""
from __future__ import annotations

import hashlib
import logging
import os
import tempfile
from pathlib import Path
from typing import Any, Optional, Union

import torch

__all__ = ["atomic_torch_save", "cache_dir", "cache_key", "file_mode", "load_cached"]

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


def file_mode() -> int:
    """Mode of a new regular file under the current umask: ``0o666 & ~umask``.

    For files created with ``tempfile.mkstemp`` (always 0600) before they are renamed into place.
    """
    umask = os.umask(0)  # the only way to read it; set back at once
    os.umask(umask)
    return 0o666 & ~umask


def atomic_torch_save(obj: Any, path: Path) -> None:
    """``torch.save`` to a temporary file in the same folder, then rename onto ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        torch.save(obj, tmp_name)
        os.chmod(tmp_name, file_mode())  # mkstemp creates 0600 files
        os.replace(tmp_name, path)
    finally:
        if os.path.exists(tmp_name):
            os.unlink(tmp_name)


def load_cached(path: Path) -> Optional[dict]:
    """Load a cache file written by :func:`atomic_torch_save`; None if absent or unreadable."""
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
