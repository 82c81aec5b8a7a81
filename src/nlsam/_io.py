"""Atomic file writes, the one way nlsam writes a file that a crash must not leave half-written
(checkpoints, run files, dataset caches, downloads, figures, exports).

The data goes to a temporary file ``.NAME.XXXXXXXX.tmp`` beside the target, which is flushed,
synced and renamed onto it only when complete, so a reader sees the old file or the new one.
The file gets the mode ``open()`` would give it (0o666 less the umask; ``mkstemp``'s own 0600
would hide run files from the rest of a group). A kill during a write can leave the temporary
file behind: :func:`remove_stale_temporaries` clears those.

Atomic replacement is for regular files only (:func:`write_target`): a symbolic link stands for
the file it points to, which is replaced and the link kept; a character device (``/dev/null``)
or a FIFO is written directly, as ``open()`` would, and never replaced; a directory, a block
device or a socket is refused. A write that fails (a full disk, a file-size limit) raises
:class:`WriteError`, which names the file written, not the temporary one.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import re
import stat
import tempfile
import warnings
from pathlib import Path
from typing import Any, BinaryIO, Iterator, Optional, Tuple, Union

PathLike = Union[str, "os.PathLike[str]"]

#: what to do about the commonest reasons a write fails
_ADVICE = {
    errno.ENOSPC: "the disk is full: free some space or write elsewhere",
    errno.EDQUOT: "the disk quota is used up: free some space or write elsewhere",
    errno.EFBIG: "the file is larger than the file-size limit of this shell (`ulimit -f`) or file system",
    errno.EROFS: "the file system is read-only: write elsewhere",
}


class WriteError(OSError):
    """Writing ``filename`` failed; ``str()`` is one line: the file, the reason and, for a full
    disk or a file-size limit, what to do."""

    def __init__(self, path: PathLike, cause: OSError, advice: Optional[str] = None) -> None:
        super().__init__(cause.errno, cause.strerror or str(cause), os.fspath(path))
        self.advice = advice if advice is not None else _ADVICE.get(cause.errno or 0)

    def __str__(self) -> str:
        advice = f" ({self.advice})" if self.advice else ""
        return f"cannot write {self.filename}: {self.strerror}{advice}"

    def __reduce__(self) -> Tuple[Any, ...]:  # pickled across processes (a study's trainers)
        return (_write_error, (self.filename, self.errno, self.strerror, self.advice))


def _write_error(path: str, code: Optional[int], reason: str, advice: Optional[str]) -> WriteError:
    return WriteError(path, OSError(code, reason), advice)


def file_mode() -> int:
    """The mode ``open()`` would give a new file: 0o666 less the user's umask."""
    mask = os.umask(0)  # the only way to read it; set back at once
    os.umask(mask)
    return 0o666 & ~mask


def write_target(path: PathLike) -> Tuple[Path, bool]:
    """``(file, direct)``: the file a write to ``path`` goes to, and whether it is written
    directly (a character device or a FIFO) rather than replaced atomically (a regular file, or
    none yet).

    A symbolic link stands for the file it points to (``file`` is that file; the link is kept).
    A directory, a block device or a socket is refused with a ``ValueError``.
    """
    path = Path(path)
    target = Path(os.path.realpath(path)) if path.is_symlink() else path
    try:
        mode = os.stat(target).st_mode
    except (FileNotFoundError, NotADirectoryError):  # nothing there yet (or a file on the way to it)
        return target, False
    except OSError as exc:  # e.g. a symbolic link loop, or a folder that cannot be searched
        raise WriteError(path, exc) from None
    if stat.S_ISREG(mode):
        return target, False
    if stat.S_ISCHR(mode) or stat.S_ISFIFO(mode):
        return target, True
    kind = (
        "a directory"
        if stat.S_ISDIR(mode)
        else "a block device"
        if stat.S_ISBLK(mode)
        else "a socket"
        if stat.S_ISSOCK(mode)
        else "not a regular file"
    )
    shown = f"{path} (-> {target})" if target != path else str(path)
    raise ValueError(
        f"refusing to write {shown}: it is {kind}; nlsam writes regular files (replaced atomically) "
        "and character devices or FIFOs such as /dev/null (written directly)"
    )


class _Recorder:
    """A file object that remembers the first exception its ``write`` raised. ``torch.save``
    turns an exception in a write (a full disk, Ctrl-C) into a ``RuntimeError`` of its own;
    :func:`atomic_file` raises the original instead."""

    def __init__(self, handle: BinaryIO) -> None:
        self._handle = handle
        self.failure: Optional[BaseException] = None

    def write(self, data: Any) -> int:
        try:
            return self._handle.write(data)
        except BaseException as exc:
            if self.failure is None:
                self.failure = exc
            raise

    def __getattr__(self, name: str) -> Any:
        return getattr(self._handle, name)


def _failure(recorder: _Recorder, exc: BaseException, target: Path) -> BaseException:
    """What to raise for ``exc``, raised inside an :func:`atomic_file` block: the exception a
    write raised where another one hides it, a failed write as a :class:`WriteError`."""
    original = recorder.failure if recorder.failure is not None else exc
    if original is recorder.failure and isinstance(original, OSError) and not isinstance(original, WriteError):
        return WriteError(target, original)
    return original


def _open_node(target: Path) -> BinaryIO:
    """Open an existing character device or FIFO for writing: never created, truncated or replaced."""
    try:
        return os.fdopen(os.open(target, os.O_WRONLY | getattr(os, "O_CLOEXEC", 0)), "wb")
    except OSError as exc:
        raise WriteError(target, exc) from None


def _open_temporary(target: Path, suffix: str) -> Tuple[BinaryIO, str]:
    """A new temporary file beside ``target`` (its folder made if need be), with ``open()``'s mode."""
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=suffix, dir=target.parent)
    except OSError as exc:
        raise WriteError(target, exc) from None
    try:
        os.fchmod(fd, file_mode())
        return os.fdopen(fd, "wb"), tmp
    except BaseException:
        os.close(fd)
        os.unlink(tmp)
        raise


def _finish(handle: BinaryIO, tmp: Optional[str], target: Path) -> None:
    """Flush and close ``handle``; for a temporary file, sync it and rename it onto ``target``."""
    try:
        handle.flush()
        if tmp is not None:
            os.fsync(handle.fileno())
        handle.close()
        if tmp is not None:
            os.replace(tmp, target)
    except OSError as exc:
        raise WriteError(target, exc) from None


def _discard(handle: BinaryIO, tmp: Optional[str]) -> None:
    """Close ``handle`` whatever its buffer holds, and delete the temporary file."""
    with contextlib.suppress(OSError):
        handle.close()
    if tmp is not None and os.path.exists(tmp):
        os.unlink(tmp)


@contextlib.contextmanager
def atomic_file(path: PathLike, suffix: str = ".tmp") -> Iterator[BinaryIO]:
    """A binary file to write ``path`` through: on a clean exit of the block it replaces
    ``path`` (whose folder is created if need be); on an exception it is deleted and ``path``
    is left as it was. ``suffix`` ends the temporary file's name.

    What ``path`` is decides how it is written (:func:`write_target`): a symbolic link's target
    is replaced and the link kept; a character device or a FIFO is written directly (no
    temporary file: what was written before an exception stays written); a directory, a block
    device or a socket is refused. A failed write raises :class:`WriteError`; a Ctrl-C during
    one raises ``KeyboardInterrupt``, even where the writer (``torch.save``) turned it into
    another exception.
    """
    target, direct = write_target(path)
    if direct:
        handle, tmp = _open_node(target), None
    else:
        handle, tmp = _open_temporary(target, suffix)
    recorder = _Recorder(handle)
    try:
        try:
            yield recorder  # type: ignore[misc]
        except BaseException as exc:
            failure = _failure(recorder, exc, target)
            if failure is exc:
                raise
            raise failure from None
        _finish(handle, tmp, target)
    except BaseException:
        _discard(handle, tmp)
        raise


def atomic_write_bytes(path: PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` so that a crash leaves either the old file or the new one."""
    with atomic_file(path) as handle:
        handle.write(data)


def file_sha256(path: PathLike) -> str:
    """The sha256 hex digest of a file, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


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


def read_torch_file(path: PathLike, map_location: Any = "cpu", mmap: bool = False) -> Any:
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
    except OSError as exc:  # the file could not be read at all: say why, not "corrupt"
        raise ValueError(f"cannot read {path}: {exc.strerror or exc}{_read_advice(exc)}") from None
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


def _read_advice(exc: OSError) -> str:
    """What to do about a file that cannot be read, after the reason."""
    if exc.errno in (errno.EACCES, errno.EPERM):
        return " (you lack read permission for it: ask its owner, or chmod u+r it if it is yours)"
    return ""


def _pickles_objects(path: Path) -> bool:
    """Whether ``path`` is a plain pickle that builds Python objects (imports a callable):
    read opcode by opcode with :mod:`pickletools`, which executes nothing."""
    import pickletools

    try:
        with open(path, "rb") as handle:
            if handle.read(1) != b"\x80":  # pickle protocol 2 and later start with PROTO
                return False
            handle.seek(0)
            return any(
                op.name in ("GLOBAL", "STACK_GLOBAL", "INST", "OBJ", "REDUCE")
                for op, _, _ in pickletools.genops(handle)
            )
    except Exception:  # truncated or not a pickle after all
        return False
