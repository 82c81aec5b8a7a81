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

Starting and resuming: :func:`open_run_dir` checks ``--out`` and, for ``--resume``, reads the
run's ``last.pt`` (refusing one that is not the run's own); :func:`resumed_config` is the
config of a resumed run (its saved settings, then what is given now) and
:func:`resume_changes` what a resume changes, of the settings it may change.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Mapping, Optional, Tuple, Union

from .._io import PathLike, atomic_write_bytes, remove_stale_temporaries
from .._ranges import short_repr
from .checkpoint import _best_is_stale, load_checkpoint, peek_checkpoint, save_checkpoint
from .config import TrainConfig, load_yaml, resolve_config

__all__ = [
    "RESUME_CHANGEABLE",
    "RunDirInUseError",
    "default_run_dir",
    "lock_holder",
    "lock_run_dir",
    "open_run_dir",
    "read_metrics",
    "recorded_machines",
    "recorded_precision",
    "resume_changes",
    "resumed_config",
    "saved_settings",
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


# ----------------------------------------------------------------------------- starting and resuming a run
#: Settings a resumed run may change: they do not alter what was trained so far, and the rest
#: of the run follows them (more or fewer ``epochs`` re-plan the lr schedule from the next epoch).
#: Every other setting must equal the saved one.
RESUME_CHANGEABLE = (
    "epochs",
    "device",
    "amp",
    "compile",
    "channels_last",
    "deterministic",
    "num_workers",
    "eval_batch_size",
    "data_dir",
    "download",
    "cache_dir",
    "log_every",
    "tensorboard",
)
_NOT_COMPARED = ("out", "resume")


def default_run_dir(cfg: TrainConfig) -> Path:
    """Where ``nlsam train`` writes a run without ``--out``: ``runs/DATA-MODEL-ATTENTION-seedSEED``."""
    data = Path(cfg.data).stem if os.sep in cfg.data or cfg.data.endswith(".zip") else cfg.data
    return Path("runs") / f"{data}-{cfg.model}-{cfg.attention or 'plain'}-seed{cfg.seed}"


def _check_out_dir(run_dir: Path) -> None:
    """Make sure the run directory can be created and written, before any data is loaded."""
    if run_dir.exists() and not run_dir.is_dir():
        raise ValueError(f"--out {run_dir} is a file, not a directory; choose another --out")
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ValueError(f"--out {run_dir} cannot be created: {exc.strerror or exc}; choose another --out") from None
    if not os.access(run_dir, os.W_OK | os.X_OK):
        raise ValueError(f"--out {run_dir} is not writable; choose another --out")


def resume_changes(saved: Dict[str, Any], cfg: TrainConfig) -> Dict[str, tuple]:
    """The settings in which ``cfg`` differs from a run's ``saved`` config, as ``{key: (saved,
    now)}``. Refuses (``ValueError``) any change outside :data:`RESUME_CHANGEABLE`."""
    defaults = TrainConfig().to_dict()
    changes = {}
    for key, value in cfg.to_dict().items():
        before = saved.get(key, defaults[key])
        if key not in _NOT_COMPARED and _differs(key, before, value):
            changes[key] = (before, value)
    refused = [k for k in changes if k not in RESUME_CHANGEABLE]
    if refused:
        detail = ", ".join(f"{k} (saved {changes[k][0]!r}, now {changes[k][1]!r})" for k in refused)
        raise ValueError(
            f"cannot resume {cfg.out} with changed {detail}: a resumed run keeps its settings except "
            f"{', '.join(RESUME_CHANGEABLE)}; start a new run with another --out to change them"
        )
    return changes


def _check_same_run(run_dir: Path, state: Dict[str, Any]) -> None:
    """Refuse a ``last.pt`` whose settings are not those the run directory's ``config.yaml``
    records (outside :data:`RESUME_CHANGEABLE`): a checkpoint copied from another run, or a
    config edited by hand. Without this the difference reads as a change asked for now."""
    path = run_dir / "config.yaml"
    if not path.is_file():
        return
    try:
        recorded = load_yaml(path)
    except ValueError:  # an unreadable config.yaml is reported where it is read for the resume
        return
    defaults = TrainConfig().to_dict()
    differ = [
        key
        for key in defaults
        if key not in RESUME_CHANGEABLE + _NOT_COMPARED
        and _differs(key, state["config"].get(key, defaults[key]), recorded.get(key, defaults[key]))
    ]
    if differ:
        detail = ", ".join(
            f"{k} ({short_repr(state['config'].get(k, defaults[k]))} in last.pt, "
            f"{short_repr(recorded.get(k, defaults[k]))} in config.yaml)"
            for k in differ[:4]
        )
        more = f" and {len(differ) - 4} more" if len(differ) > 4 else ""
        raise ValueError(
            f"cannot resume {run_dir}: its last.pt and config.yaml describe different runs: {detail}{more}; "
            "last.pt was copied from another run, or config.yaml was edited. Put back the run's own last.pt "
            "(or config.yaml: a resumed run keeps its settings), or start a new run with another --out"
        )


def _differs(key: str, a: Any, b: Any) -> bool:
    """Whether setting ``key`` differs between ``a`` and ``b``: the data by another path to the
    same file does not."""
    return a != b and not (key == "data" and _same_path(a, b))


def _same_path(a: Any, b: Any) -> bool:
    """Whether ``a`` and ``b`` name one existing file or folder (``../data/x.zip`` and its
    absolute path, say): a resumed run may name its data either way."""
    try:
        return os.path.samefile(str(a), str(b))
    except (OSError, TypeError, ValueError):
        return False


def open_run_dir(cfg: TrainConfig) -> Tuple[TrainConfig, Path, Optional[Dict[str, Any]]]:
    """Return ``(config, run_dir, resume_state)``, the config with its ``out`` set: check ``--out``, and for ``--resume`` that the
    run exists and the settings may change as asked; refuse to overwrite an existing run."""
    run_dir = Path(cfg.out) if cfg.out else default_run_dir(cfg)
    cfg = replace(cfg, out=str(run_dir))
    _check_out_dir(run_dir)
    last = run_dir / "last.pt"
    if cfg.resume:
        if not last.is_file():
            raise FileNotFoundError(f"cannot resume: no {last}; start the run without --resume")
        state = load_checkpoint(last)
        _check_same_run(run_dir, state)
        return cfg, run_dir, state
    if last.exists():
        raise ValueError(
            f"run directory {run_dir} already holds a run; add --resume to continue it or choose another --out"
        )
    trained = len(read_metrics(run_dir)) if (run_dir / "metrics.jsonl").is_file() else 0
    if trained:  # a run whose checkpoints are gone: starting again would overwrite its epochs
        raise ValueError(
            f"run directory {run_dir} holds metrics.jsonl with {trained} epoch(s) but no last.pt to resume from; "
            "starting again would overwrite them: move the folder away or choose another --out"
        )
    return cfg, run_dir, None


def saved_settings(run_dir: Path) -> Dict[str, Any]:
    """The settings of the run in ``run_dir``: its ``config.yaml``, or where that is missing the
    copy every checkpoint holds (``last.pt``'s; config.yaml is then written again)."""
    saved, last = run_dir / "config.yaml", run_dir / "last.pt"
    if saved.is_file():
        return load_yaml(saved)
    if not last.exists():
        raise FileNotFoundError(
            f"cannot resume: no {saved} and no last.pt in {run_dir}, so there is no run "
            "to continue; start the run without --resume"
        )
    print(
        f"nlsam train: warning: {saved} is missing; resuming with the settings saved in {last}",
        file=sys.stderr,
        flush=True,
    )
    return dict(load_checkpoint(last)["config"])


def resumed_config(
    config_file: Optional[Union[str, Path]] = None, overrides: Optional[Mapping[str, Any]] = None
) -> TrainConfig:
    """The config of ``--resume``: the run's own saved settings (:func:`saved_settings`), then the
    YAML file and the flags given now, which may change only what a resumed run can honour
    (checked against its ``last.pt`` when the run starts). The run is the one the file and flags
    name (``out``), or :func:`default_run_dir` of them."""
    overrides = dict(overrides or {})
    given = resolve_config(config_file, overrides)
    run_dir = Path(given.out) if given.out else default_run_dir(given)
    base = {k: v for k, v in saved_settings(run_dir).items() if k in TrainConfig.__dataclass_fields__}
    return resolve_config(config_file, dict(overrides, out=str(run_dir)), base=base)
