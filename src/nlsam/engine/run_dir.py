"""A run directory: what is in it, who may write to it, and how it is made whole after a kill.

A run directory holds ``config.yaml``, ``meta.json`` (the data's classes, input size and
normalisation, and the precision the run trains in), ``last.pt``, ``best.pt`` and
``metrics.jsonl``. At the end of every epoch the trainer writes, in this order:

1. ``last.pt``, atomically. It holds the network, the optimiser and the **history** of every
   finished epoch, and is the run's commit point: an epoch exists once ``last.pt`` holds it.
2. ``best.pt`` on a new best test top-1 (a copy of the same state).
3. ``metrics.jsonl``, rewritten atomically from the history (one JSON object per epoch).

A kill between the writes therefore leaves ``best.pt`` or ``metrics.jsonl`` one epoch behind
``last.pt``, never ahead of it. :func:`read_metrics` and
:func:`~nlsam.engine.checkpoint.best_checkpoint` read through that lag, and :func:`_repair_run_dir`
(run by ``--resume`` and by ``nlsam study``) rewrites the lagging files from ``last.pt``.

One process trains into a directory at a time: :func:`lock_run_dir` holds an exclusive lock on
``RUN_DIR/.lock`` for the whole run, released by the kernel however the process ends.
"""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Optional, Tuple

from .._io import PathLike, atomic_write_bytes, remove_stale_temporaries
from .checkpoint import _best_is_stale, peek_checkpoint, save_checkpoint

__all__ = [
    "RunDirInUseError",
    "lock_holder",
    "lock_run_dir",
    "read_metrics",
    "recorded_machines",
    "recorded_precision",
]

try:  # POSIX; elsewhere runs are not locked
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

_LOCK_NAME = ".lock"


class RunDirInUseError(ValueError):
    """Another process is training into the run directory."""


@contextlib.contextmanager
def _lock_folder(folder: PathLike, in_use: Callable[[Path, str], Exception]) -> Iterator[None]:
    """Hold ``folder``'s lock (``FOLDER/.lock``, an exclusive ``flock`` holding the holder's process
    id) for the block, or raise ``in_use(folder, holder_pid)`` at once. The kernel releases the
    lock however its holder ends, so a lock file left by a process that died never blocks."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    if fcntl is None:  # pragma: no cover
        yield
        return
    handle = open(folder / _LOCK_NAME, "a+")
    try:
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            handle.seek(0)
            raise in_use(folder, handle.read().strip()[:20] or "unknown") from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"{os.getpid()}\n")
        handle.flush()
        yield
    finally:
        handle.close()  # releases the lock


def lock_run_dir(run_dir: PathLike) -> contextlib.AbstractContextManager:
    """Hold the run directory's lock for the duration of the block, or fail at once naming the
    process that trains into it (:func:`_lock_folder`)."""
    return _lock_folder(
        run_dir,
        lambda folder, holder: RunDirInUseError(
            f"run directory {folder} is in use by another training process (pid {holder}); "
            "wait for it to finish, stop it, or choose another --out"
        ),
    )


def lock_holder(run_dir: PathLike) -> Optional[int]:
    """The process id written by the last holder of the lock (it may have ended)."""
    try:
        return int((Path(run_dir) / _LOCK_NAME).read_text().strip())
    except (OSError, ValueError):
        return None


def _read_jsonl(path: Path) -> List[Dict[str, Any]]:
    """The rows of ``metrics.jsonl`` up to the first line that is not a JSON object."""
    return _read_rows(path)[0]


def _read_rows(path: Path) -> Tuple[List[Dict[str, Any]], bool]:
    """``(rows, damaged)``: the rows of ``metrics.jsonl`` up to the first line that is not a JSON
    object (a line cut by a kill in an older nlsam's append, bytes that are not text, a file
    overwritten with something else), and whether such a line or an unreadable file stopped the
    reading. ``last.pt`` holds the same history, so nothing here is ever fatal."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return [], False
    except OSError:  # unreadable, or not a file: the repair says what it finds when it rewrites it
        return [], True
    rows: List[Dict[str, Any]] = []
    for line in data.splitlines():
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except ValueError:  # not JSON, or not UTF-8 text
            return rows, True
        if not isinstance(row, dict):
            return rows, True
        rows.append(row)
    return rows, False


def _history_of(state: Dict[str, Any], rows: Optional[List[Dict[str, Any]]] = None) -> List[Dict[str, Any]]:
    """The metrics of every epoch a training checkpoint has committed.

    Checkpoints hold their history; older ones hold only their own epoch's metrics, which are
    joined to the ``rows`` read from ``metrics.jsonl`` (those of later epochs are dropped).
    """
    if state.get("history") is not None:
        return list(state["history"])
    last = int(state.get("epoch", -1)) + 1
    kept = [r for r in rows or [] if r.get("epoch", 0) < last]
    return kept + [dict(state["metrics"])] if state.get("metrics") else kept


def read_metrics(run_dir: PathLike, state: Optional[Dict[str, Any]] = None) -> List[Dict[str, Any]]:
    """One dict per finished epoch of a run, as ``last.pt`` (the commit point) records them
    (``state``: ``last.pt``'s contents where the caller has read them already).

    Without ``last.pt`` (a run directory copied without its checkpoints) ``metrics.jsonl`` is read.
    """
    run_dir = Path(run_dir)
    rows = _read_jsonl(run_dir / "metrics.jsonl")
    if state is None:
        state = peek_checkpoint(run_dir / "last.pt")
    return rows if state is None else _history_of(state, rows)


def _read_meta(run_dir: Path) -> Dict[str, Any]:
    try:
        meta = json.loads((run_dir / "meta.json").read_text())
    except (OSError, ValueError):
        return {}
    return meta if isinstance(meta, dict) else {}


def recorded_machines(run_dir: PathLike) -> List[str]:
    """The machines a run trained on, in order (``meta.json``'s ``machines``: one entry per
    machine a resume moved it to); empty for runs written before machines were recorded."""
    machines = _read_meta(Path(run_dir)).get("machines")
    return [m for m in machines if isinstance(m, str)] if isinstance(machines, list) else []


def recorded_precision(run_dir: PathLike) -> Optional[str]:
    """The precision a run trained in (``float32``, ``bfloat16`` or ``float16``), as its
    ``meta.json`` or, for folders written before meta.json recorded it, its ``last.pt`` says;
    None where neither does (a folder copied without checkpoints from an older version)."""
    run_dir = Path(run_dir)
    meta = _read_meta(run_dir)
    if isinstance(meta.get("precision"), str):
        return meta["precision"]
    state = peek_checkpoint(run_dir / "last.pt")
    precision = state.get("precision") if state else None
    return precision if isinstance(precision, str) else None


def _write_metrics(run_dir: PathLike, history: List[Dict[str, Any]]) -> None:
    """Rewrite ``metrics.jsonl`` atomically: one JSON object per epoch."""
    text = "".join(json.dumps(row) + "\n" for row in history)
    atomic_write_bytes(Path(run_dir) / "metrics.jsonl", text.encode())


def _repair_run_dir(run_dir: PathLike, state: Optional[Dict[str, Any]] = None) -> List[str]:
    """Bring ``best.pt`` and ``metrics.jsonl`` up to the epoch ``last.pt`` holds, and delete the
    temporary files of interrupted writes. Return what was done, one phrase per repair.

    Call it only while holding the run's lock (or when nothing trains into the directory).
    """
    run_dir = Path(run_dir)
    done: List[str] = []
    removed = remove_stale_temporaries(run_dir)
    if removed:
        done.append(f"removed {removed} temporary file(s) of interrupted writes")
    if state is None:
        state = peek_checkpoint(run_dir / "last.pt")
    if state is None:
        return done
    rows, damaged = _read_rows(run_dir / "metrics.jsonl")
    history = _history_of(state, rows)
    if rows != history or damaged:
        _write_metrics(run_dir, history)
        if damaged:
            done.append(
                f"rewrote metrics.jsonl from last.pt (it was damaged after {len(rows)} readable "
                f"epoch(s); last.pt holds {len(history)})"
            )
        elif len(rows) != len(history):
            done.append(f"rewrote metrics.jsonl from last.pt ({len(rows)} -> {len(history)} epochs)")
        else:
            done.append(f"rewrote metrics.jsonl from last.pt (its {len(rows)} epoch(s) differed from last.pt's)")
    if _best_is_stale(run_dir, state):
        save_checkpoint(dict(state), run_dir / "best.pt")
        done.append(f"rewrote best.pt from last.pt (epoch {state['epoch'] + 1})")
    return done
