"""Atomic file writes, the one way nlsam writes a file that a crash must not leave half-written
(checkpoints, run files, dataset caches, downloads, figures, exports).

The data goes to a temporary file ``.NAME.XXXXXXXX.tmp`` beside the target, which is flushed,
synced and renamed onto it only when complete, so a reader sees the old file or the new one.
The file gets the mode ``open()`` would give it (0o666 less the umask; ``mkstemp``'s own 0600
would hide run files from the rest of a group). A kill during a write can leave the temporary
file behind: :func:`remove_stale_temporaries` clears those.
"""
from __future__ import annotations

import contextlib
import os
import re
import tempfile
from pathlib import Path
import warnings
from typing import Any, BinaryIO, Iterator, Union

PathLike = Union[str, "os.PathLike[str]"]


def file_mode() -> int:
    """The mode ``open()`` would give a new file: 0o666 less the user's umask."""
    mask = os.umask(0)  # the only way to read it; set back at once
    os.umask(mask)
    return 0o666 & ~mask


@contextlib.contextmanager
def atomic_file(path: PathLike, suffix: str = ".tmp") -> Iterator[BinaryIO]:
    """A binary file to write ``path`` through: on a clean exit of the block it replaces
    ``path`` (whose folder is created if need be); on an exception it is deleted and ``path``
    is left as it was. ``suffix`` ends the temporary file's name."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix, dir=path.parent)
    try:
        os.fchmod(fd, file_mode())
        with os.fdopen(fd, "wb") as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def atomic_write_bytes(path: PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` so that a crash leaves either the old file or the new one."""
    with atomic_file(path) as handle:
        handle.write(data)


def remove_stale_temporaries(folder: PathLike) -> int:
    """Delete the ``.NAME.*.tmp`` files that killed :func:`atomic_file` writes left in
    ``folder``; return how many. Only call it while no other process writes there."""
    removed = 0
    for tmp in Path(folder).glob(".*.tmp"):
        if tmp.is_file() and _TEMPORARY.fullmatch(tmp.name):
            tmp.unlink(missing_ok=True)
            removed += 1
    return removed


_TEMPORARY = re.compile(r"\..+\.[A-Za-z0-9_]{6,}\.tmp")


def read_torch_file(path: PathLike, map_location: Any = "cpu",
                    mmap: bool = False) -> Any:
    """``torch.load(path, weights_only=True)`` with one-line errors.

    A file that holds pickled code or Python objects is refused as such (never re-read it with
    ``weights_only=False``: that runs whatever code it holds); anything else torch cannot read is
    called what it is, not a checkpoint.
    """
    import torch  # the writes above need no torch; this reader does

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # e.g. torch's note on an unusual pickle protocol
            return torch.load(path, map_location=map_location, weights_only=True, mmap=mmap)
    except Exception as exc:
        text = str(exc)
        if "GLOBAL" in text or "Unsupported global" in text or _pickles_objects(Path(path)):
            found = re.search(r"GLOBAL ([\w.]+)", text)
            what = f" ({found.group(1)})" if found else ""
            raise ValueError(
                f"refusing to read {path}: it holds pickled code or Python objects{what}, which nlsam "
                "never loads; a checkpoint holds tensors and plain values only"
            ) from None
        raise ValueError(
            f"cannot read {path}: not a PyTorch checkpoint (corrupt, truncated, or another kind of file)"
        ) from None


def _pickles_objects(path: Path) -> bool:
    """Whether ``path`` is a plain pickle that builds Python objects (imports a callable):
    read opcode by opcode with :mod:`pickletools`, which executes nothing."""
    import pickletools

    try:
        with open(path, "rb") as handle:
            if handle.read(1) != b"\x80":  # pickle protocol 2 and later start with PROTO
                return False
            handle.seek(0)
            return any(op.name in ("GLOBAL", "STACK_GLOBAL", "INST", "OBJ", "REDUCE")
                       for op, _, _ in pickletools.genops(handle))
    except Exception:  # truncated or not a pickle after all
        return False
