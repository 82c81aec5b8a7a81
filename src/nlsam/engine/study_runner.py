"""Running a study (:mod:`.study`): :func:`execute_study` trains every unfinished run of one,
here or on a cluster.

Runs train one after another or several at a time, each in its own ``nlsam train`` process
(the ``local`` executor), or as submitit jobs (``submitit`` on this machine, ``slurm`` on a
SLURM cluster). A finished run is skipped and a killed one resumed, so re-running a study picks
up where it stopped. Before anything trains, a study that changes the settings of runs its
directory holds, runs whose checkpoints cannot be read and data that cannot be found are
refused. One ``nlsam study`` works in a directory at a time (:func:`lock_study_dir`,
:class:`StudyDirInUseError`).
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Dict, List, Mapping, Tuple, Union

import torch

from ..data import check_data_source
from .config import TrainConfig, save_yaml
from .run_dir import RunDirInUseError, _lock_folder, _repair_run_dir, lock_run_dir
from .study import RunStatus, Study, StudyRun, _brief, _held_run_changes, run_status, waiting_seed_blocks
from .train import train

__all__ = [
    "StudyDirInUseError",
    "execute_study",
    "lock_study_dir",
]

_EXECUTORS = ("local", "submitit", "slurm")


def _check_held_runs(study: Study, statuses: Mapping[str, RunStatus]) -> None:
    """Refuse (``ValueError``, one line) a study that changes the settings of runs its directory
    holds, naming each changed key with its trained and new value and the runs."""
    changed: Dict[Tuple[str, str, str], List[str]] = {}
    for run in study.runs:
        for key, (before, now) in _held_run_changes(run, statuses[run.name]).items():
            changed.setdefault((key, _brief(before), _brief(now)), []).append(run.name)
    if not changed:
        return
    held = len({name for names in changed.values() for name in names})

    def runs_text(names: List[str]) -> str:
        return ", ".join(names[:3]) + (f" and {len(names) - 3} more" if len(names) > 3 else "")

    detail = "; ".join(
        f"{key} (trained with {before}, now {now}) in {runs_text(names)}"
        for (key, before, now), names in changed.items()
    )
    raise ValueError(
        f"study {study.name}: {study.out} holds {held} run(s) that trained with other settings than the study "
        f"gives them now: {detail}. A study directory keeps the settings its runs trained with (its study.yaml is "
        f"left as it was): put the old values back in the study file or --set, or give another --out"
    )


def _check_broken_runs(study: Study, statuses: Mapping[str, RunStatus]) -> None:
    """Refuse (``ValueError``, one line) a study with runs whose checkpoints cannot be read."""
    broken = [run.name for run in study.runs if statuses[run.name].state == "broken"]
    if not broken:
        return
    listed = "; ".join(f"{name}: {statuses[name].why}" for name in broken[:3])
    more = f"; and {len(broken) - 3} more (`--dry-run` lists them)" if len(broken) > 3 else ""
    raise ValueError(
        f"study {study.name}: {len(broken)} run(s) hold a checkpoint that cannot be read, so nothing "
        f"was trained: {listed}{more}"
    )


def _waiting_note(study: Study, waiting: Mapping[int, str], held: int) -> str:
    return (
        f"study {study.name}: {'; '.join(waiting.values())}: a seed block trains in one precision, so its "
        f"{held} remaining run(s) wait for a machine like the one it started on (for bf16 on a CPU: one with "
        f"native bf16, AVX512-BF16 or AMX), or for a precision you choose: --set amp=bf16, --set amp=fp16 or "
        f"--set amp=off"
    )


def _check_study_data(study: Study) -> None:
    """Fail before any run starts when a run's data cannot be found (each distinct one once)."""
    seen = set()
    for run in study.runs:
        cfg = run.config
        key = (cfg.data, cfg.data_dir, cfg.download)
        if key in seen:
            continue
        seen.add(key)
        try:
            check_data_source(cfg.data, data_dir=cfg.data_dir, download=cfg.download)
        except (ValueError, FileNotFoundError) as exc:
            raise type(exc)(f"study {study.name}: run {run.name}: {exc}") from None


def _config_file(study: Study, run: StudyRun) -> Path:
    path = study.out / "configs" / f"{run.name}.yaml"
    save_yaml({k: v for k, v in run.config.to_dict().items() if k != "resume"}, path)
    return path


def _run_one(config: Dict[str, Any]) -> Dict[str, Any]:
    """Train one run in this process (what submitit executes on a cluster node)."""
    cfg = TrainConfig.from_dict(config)
    assert cfg.out is not None  # the study's config of the run names its directory
    if (Path(cfg.out) / "last.pt").is_file():
        cfg.resume = True
    return train(cfg)


def _command(config_file: Path, resume: bool) -> List[str]:
    command = [sys.executable, "-m", "nlsam", "train", "-c", str(config_file)]
    return command + (["--resume"] if resume else [])


class StudyDirInUseError(ValueError):
    """Another ``nlsam study`` works in the study directory."""


def lock_study_dir(study_dir: Union[str, Path]) -> contextlib.AbstractContextManager:
    """Hold the study directory's lock (``STUDY_DIR/.lock``, an exclusive ``flock``) for the
    block, or fail at once naming the holder's process id.

    Two studies in one directory would start the same runs twice and each count the other's as
    failed; the second is refused instead. The kernel releases the lock however its holder ends,
    so a lock file left by a study that died (a stale pid in it) never blocks.
    """
    return _lock_folder(
        study_dir,
        lambda folder, holder: StudyDirInUseError(
            f"study directory {folder} is in use by another nlsam study (pid {holder}); wait for it to finish or "
            "stop it, or choose another --out"
        ),
    )


def execute_study(
    study: Study,
    *,
    workers: int = 1,
    executor: str = "local",
    dry_run: bool = False,
    log=print,
) -> Dict[str, int]:
    """Run every unfinished run of ``study``; return counts of done / failed runs.

    ``local``: one run after another (``workers=1``) or ``workers`` runs at a time, each in its
    own process (CPU threads are split between them; GPUs are handed out round-robin).
    ``submitit`` runs through submitit's local executor, ``slurm`` submits to a SLURM cluster with
    the study's ``slurm`` parameters (submitit's AutoExecutor).

    Refused before anything runs: a study that changes the settings of runs its directory holds
    (:func:`_check_held_runs`), runs with a checkpoint that cannot be read (:func:`run_status`),
    and a directory another study works in (:func:`lock_study_dir`). A dry run takes no lock,
    lists each run with why it is not done, and writes ``study.yaml`` only where there is none.
    """
    if executor not in _EXECUTORS:
        raise ValueError(f"unknown executor {executor!r}; valid: {', '.join(_EXECUTORS)}")
    if not isinstance(workers, int) or workers < 1:
        raise ValueError(f"workers must be a positive integer, got {workers!r}")
    _check_study_data(study)
    if dry_run:
        return _execute(study, workers, executor, True, log)
    with lock_study_dir(study.out):
        return _execute(study, workers, executor, False, log)


def _execute(study: Study, workers: int, executor: str, dry_run: bool, log) -> Dict[str, int]:
    statuses = {run.name: run_status(run) for run in study.runs}
    _check_held_runs(study, statuses)
    if not dry_run:
        _check_broken_runs(study, statuses)
    study.out.mkdir(parents=True, exist_ok=True)
    spec_file = study.out / "study.yaml"
    if not dry_run or not spec_file.exists():
        save_yaml(dict(study.spec, name=study.name), spec_file)
    states = {name: status.state for name, status in statuses.items()}
    waiting = waiting_seed_blocks(study, states) if executor == "local" else {}
    pending = [run for run in study.runs if states[run.name] not in ("done", "broken")]
    held = [run for run in pending if run.seed in waiting and run.config.amp == "auto"]
    mixed = _waiting_note(study, waiting, len(held)) if held else None
    if mixed and not dry_run and len(held) == len(pending):
        raise ValueError(mixed)
    if not dry_run:
        _repair_finished(study, states, log)
    broken = sum(state == "broken" for state in states.values())
    done = len(study.runs) - len(pending) - broken
    log(
        f"study {study.name}: {len(study.runs)} runs, {done} done, "
        f"{sum(states[r.name] == 'partial' for r in pending)} to resume, "
        f"{sum(states[r.name] == 'todo' for r in pending)} to start"
        + (f", {broken} broken" if broken else "")
        + f"; directory {study.out}"
    )
    if dry_run or not pending:
        for run in study.runs:
            status = statuses[run.name]
            log(f"  [{status.state:>7s}] {run.name}" + ("" if status.state == "done" else f": {status.why}"))
        if mixed and pending:
            log(f"warning: {mixed}")
        return dict(done=done, failed=0, ran=0, waiting=len(held))
    if mixed:
        log(f"note: {mixed}; the other runs train now")
        pending = [run for run in pending if run not in held]
    if executor == "local":
        failed = _run_local(study, pending, states, workers, log)
    else:
        failed = _run_submitit(study, pending, executor, log)
    return dict(done=len(study.runs) - len(failed) - len(held), failed=len(failed), ran=len(pending), waiting=len(held))


def _repair_finished(study: Study, states: Dict[str, str], log) -> None:
    """Bring the files of finished runs up to their ``last.pt`` (a kill between the final writes
    leaves ``best.pt`` or ``metrics.jsonl`` behind), unless a trainer still holds the run."""
    for run in study.runs:
        if states[run.name] != "done":
            continue
        try:
            with lock_run_dir(run.run_dir):
                for repair in _repair_run_dir(run.run_dir):
                    log(f"  repaired {run.name}: {repair}")
        except RunDirInUseError as exc:
            log(f"  not repaired: {exc}")


def _die_with_parent() -> None:  # pragma: no cover - runs in the child between fork and exec
    """Ask the kernel to end this process when its parent (the study) dies, however it dies."""
    try:
        import ctypes

        PR_SET_PDEATHSIG = 1
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    except (OSError, AttributeError):
        pass  # not Linux: the study's own cleanup below still stops its children


def _stop(active: Dict[str, tuple], log) -> None:
    """Terminate the running trainers (SIGTERM, then SIGKILL after 10 s) and wait for them."""
    for proc, _, _ in active.values():
        if proc.poll() is None:
            proc.terminate()
    deadline = time.time() + 10
    for name, (proc, handle, _) in active.items():
        try:
            proc.wait(max(0.0, deadline - time.time()))
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        handle.close()
        log(f"  stopped {name}; the same command resumes it")


def _run_local(study: Study, pending: List[StudyRun], states: Dict[str, str], workers: int, log) -> List[str]:
    """Each run in its own process. The trainers end with the study: on an exception, Ctrl-C or
    SIGTERM the study stops them; if it is killed outright the kernel does (Linux)."""
    logs = study.out / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    gpus = torch.cuda.device_count()
    threads = max(1, (os.cpu_count() or 1) // workers)
    queue = list(pending)
    active: Dict[str, tuple] = {}
    failed: List[str] = []
    previous = signal.signal(signal.SIGTERM, _raise_interrupt) if _in_main_thread() else None
    try:
        _schedule(study, queue, active, failed, states, workers, gpus, threads, logs, log)
    except BaseException:
        _stop(active, log)
        raise
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
    return failed


def _raise_interrupt(signum, frame) -> None:
    raise KeyboardInterrupt


def _in_main_thread() -> bool:
    import threading

    return threading.current_thread() is threading.main_thread()


def _schedule(
    study: Study,
    queue: List[StudyRun],
    active: Dict[str, tuple],
    failed: List[str],
    states: Dict[str, str],
    workers: int,
    gpus: int,
    threads: int,
    logs: Path,
    log,
) -> None:
    slot = 0
    while queue or active:
        while queue and len(active) < workers:
            run = queue.pop(0)
            env = dict(os.environ)
            if workers > 1:
                env["OMP_NUM_THREADS"] = str(threads)
                if gpus:
                    env["CUDA_VISIBLE_DEVICES"] = str(slot % gpus)
            slot += 1
            handle = open(logs / f"{run.name}.log", "a")
            proc = subprocess.Popen(
                _command(_config_file(study, run), states[run.name] == "partial"),
                env=env,
                stdout=handle,
                stderr=subprocess.STDOUT,
                preexec_fn=_die_with_parent if sys.platform.startswith("linux") else None,
            )
            active[run.name] = (proc, handle, time.time())
            log(f"  started {run.name}" + (" (resuming)" if states[run.name] == "partial" else ""))
        time.sleep(0.5 if workers > 1 else 0.2)
        for name, (proc, handle, started) in list(active.items()):
            if proc.poll() is None:
                continue
            handle.close()
            del active[name]
            if proc.returncode == 0:
                log(f"  finished {name} in {time.time() - started:.0f} s")
            else:
                failed.append(name)
                log(f"  FAILED {name} (exit {proc.returncode}); see {logs / (name + '.log')}")


def _run_submitit(study: Study, pending: List[StudyRun], executor: str, log) -> List[str]:
    try:
        import submitit
    except ImportError:
        raise ValueError("the submitit executors need submitit: pip install submitit") from None
    folder = study.out / "submitit"
    ex: submitit.Executor
    if executor == "submitit":
        ex = submitit.LocalExecutor(folder=str(folder))
        ex.update_parameters(timeout_min=int((study.spec.get("slurm") or {}).get("timeout_min", 24 * 60)))
    else:
        ex = submitit.AutoExecutor(folder=str(folder))
        ex.update_parameters(**(study.spec.get("slurm") or {}))
    jobs = []
    for run in pending:
        config = {k: v for k, v in run.config.to_dict().items() if k != "resume"}
        jobs.append((run.name, ex.submit(_run_one, config)))
        log(f"  submitted {run.name} as job {jobs[-1][1].job_id}")
    failed = []
    for name, job in jobs:
        try:
            job.result()
            log(f"  finished {name}")
        except Exception as exc:  # the job's own traceback is in its submitit log
            failed.append(name)
            log(f"  FAILED {name}: {str(exc).strip().splitlines()[-1] if str(exc).strip() else exc!r}")
    return failed
