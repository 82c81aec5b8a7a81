"""Studies: a declarative grid of ``nlsam train`` runs (models x attention x options x seeds).

A study file::

    base: {data: builtin, model: resnet20, epochs: 1}   # nlsam train options shared by all runs
    grid: {attention: [null, nlsam]}                   # every combination of these values
    seeds: [0, 1]

``grid`` keys are ``nlsam train`` options, or ``model_options.NAME`` for a network option
(``model_options.nlsam_reduction: [2, 4, 8]``). ``variants`` (a list of option mappings) adds
hand-picked runs beside the grid's (a baseline, say), each on top of ``base``; a variant may
hold its own ``seeds`` list, to run an extra network on fewer seeds. Optional: ``name``, ``baseline`` (the options
that identify the reference group, default ``{attention: null}``), ``paper`` (published figures
to print beside ours) and ``slurm`` (submitit parameters).

Each run is an ordinary run directory under ``STUDY_DIR/runs/``; a finished run is skipped and
a killed one resumed, so re-running a study picks up where it stopped.
"""
from __future__ import annotations

import copy
import itertools
import json
import os
import re
import signal
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Union

import torch

from .config import TrainConfig, check_keys, load_yaml, save_yaml
from .precision import listed_precisions, precision_name, resolve_amp
from .run_dir import RunDirInUseError, lock_run_dir, read_metrics, recorded_precision, repair_run_dir

STUDY_KEYS = ("name", "base", "grid", "variants", "seeds", "baseline", "paper", "slurm")
EXECUTORS = ("local", "submitit", "slurm")


@dataclass
class StudyRun:
    """One training run of a study: its label (the grid values), seed and full config."""

    name: str
    group: Dict[str, Any]
    seed: int
    config: TrainConfig

    @property
    def run_dir(self) -> Path:
        return Path(self.config.out)


@dataclass
class Study:
    name: str
    spec: Dict[str, Any]
    runs: List[StudyRun]
    out: Path


def _set_option(values: Dict[str, Any], key: str, value: Any) -> None:
    if key.startswith("model_options."):
        options = dict(values.get("model_options") or {})
        options[key.split(".", 1)[1]] = value
        values["model_options"] = options
    else:
        values[key] = value


def _seed_list(seeds: Any, where: str) -> List[int]:
    if not isinstance(seeds, list) or not seeds or not all(isinstance(s, int) and not isinstance(s, bool) for s in seeds):
        raise ValueError(f"{where} must be a non-empty list of integers, got {seeds!r}")
    return seeds


def _check_option_key(key: str, where: str) -> None:
    if key.startswith("model_options."):
        return
    check_keys({key: None}, where)


def _label(value: Any) -> str:
    if value is None:
        return "none"
    if isinstance(value, (list, tuple)):
        return "-".join(_label(v) for v in value)
    if isinstance(value, dict):
        return "-".join(f"{k}{_label(v)}" for k, v in value.items())
    return str(value)


def run_name(group: Mapping[str, Any], seed: int) -> str:
    """A directory name that says what the run is, e.g. ``attention=se+nlsam,seed=1``."""
    parts = [f"{k.replace('model_options.', '')}={_label(v)}" for k, v in group.items()]
    parts.append(f"seed={seed}")
    return re.sub(r"[^A-Za-z0-9=+,._-]", "_", ",".join(parts))


def load_study(
    path: Union[str, Path], out: Optional[Union[str, Path]] = None, overrides: Optional[Mapping[str, Any]] = None
) -> Study:
    """Read and check a study file; every run's config is built and validated here, and every
    distinct network is instantiated once (on the meta device), before anything runs."""
    path = Path(path)
    spec = load_yaml(path)
    unknown = [k for k in spec if k not in STUDY_KEYS]
    if unknown:
        raise ValueError(f"unknown key {unknown[0]!r} in {path}; valid study keys: {', '.join(STUDY_KEYS)}")
    base = dict(spec.get("base") or {})
    check_keys(base, f"{path}: base")
    for key, value in (overrides or {}).items():
        _check_option_key(key, "--set")
        _set_option(base, key, value)
    spec = dict(spec, base=base)
    for forbidden in ("out", "resume", "seed"):
        if forbidden in base:
            raise ValueError(f"{path}: base must not set {forbidden!r}; the study sets it for each run")
    grid = spec.get("grid") or {}
    if not isinstance(grid, dict):
        raise ValueError(f"{path}: grid must map option names to lists of values")
    for key, values in grid.items():
        _check_option_key(key, f"{path}: grid")
        if not isinstance(values, list) or not values:
            raise ValueError(f"{path}: grid value for {key!r} must be a non-empty list, got {values!r}")
    variants = spec.get("variants") or []
    if not isinstance(variants, list) or not all(isinstance(v, dict) for v in variants):
        raise ValueError(f"{path}: variants must be a list of option mappings")
    seeds = _seed_list(spec.get("seeds", [0]), f"{path}: seeds")
    keys = list(grid)
    # (options, seeds) of each group of runs: the grid's combinations, then the variants
    groups = [(dict(zip(keys, combo)), seeds) for combo in itertools.product(*(grid[k] for k in keys))] if keys else []
    for variant in variants:
        options = {k: v for k, v in variant.items() if k != "seeds"}
        for key in options:
            _check_option_key(key, f"{path}: variants")
        groups.append((options, _seed_list(variant["seeds"], f"{path}: variant seeds") if "seeds" in variant else seeds))
    groups = groups or [({}, seeds)]

    name = str(spec.get("name") or path.stem)
    study_dir = Path(out) if out else Path("studies") / name
    runs: List[StudyRun] = []
    # Seed-major order: a study stopped part-way has whole seeds of every variant, not every
    # seed of the first variants only.
    for seed in dict.fromkeys(itertools.chain(seeds, *(s for _, s in groups))):  # every seed once, in order
        for group, its_seeds in groups:
            if seed not in its_seeds:
                continue
            values = copy.deepcopy(base)
            for key, value in group.items():
                _set_option(values, key, value)
            label = run_name(group, seed)
            values.update(seed=seed, out=str(study_dir / "runs" / label))
            try:
                config = TrainConfig.from_dict(values, f"{path} run {label}")
            except (ValueError, TypeError) as exc:
                raise ValueError(f"{path}: run {label}: {exc}") from None
            runs.append(StudyRun(label, group, seed, config))
    names = [r.name for r in runs]
    if len(set(names)) != len(names):
        raise ValueError(f"{path}: the grid, variants and seeds give duplicate runs")
    _check_networks(runs, path)
    return Study(name, spec, runs, study_dir)


def _check_networks(runs: Sequence[StudyRun], path: Path) -> None:
    from ..attention import check_attention_name
    from ..models import is_model, list_models
    from ..plugins import import_modules
    from .loading import build_network

    seen = set()
    for run in runs:
        cfg = run.config
        key = json.dumps([cfg.model, cfg.attention, cfg.model_options, cfg.image_size], sort_keys=True, default=str)
        if key in seen:
            continue
        seen.add(key)
        if not is_model(cfg.model):
            raise ValueError(f"{path}: run {run.name}: unknown model {cfg.model!r}; valid: {', '.join(list_models())}")
        try:
            import_modules(cfg.imports)  # a user's own attention modules, before their names are checked
            check_attention_name(cfg.attention)
            # the images are resized to image_size, unless a model option fixes the input size
            resized = cfg.image_size and "input_size" not in cfg.model_options
            build_network(cfg, dict(input_size=(cfg.image_size,) * 2) if resized else None, device="meta")
        except (ValueError, TypeError) as exc:
            raise ValueError(f"{path}: run {run.name}: {exc}") from None


# ----------------------------------------------------------------------------- run state
def run_state(run: StudyRun) -> str:
    """``done``, ``partial`` (has a checkpoint: will be resumed) or ``todo``, as the run's
    ``last.pt`` (its commit point) records it."""
    history = read_metrics(run.run_dir)
    if history and history[-1].get("epoch", 0) >= run.config.epochs:
        return "done"
    return "partial" if (run.run_dir / "last.pt").is_file() else "todo"


def check_study_precision(study: Study, states: Mapping[str, str]) -> Optional[str]:
    """Why the runs still to train here would train in another precision than the study's
    started ones, or None when they would not.

    ``--amp auto`` picks the precision per machine (bf16 on a CPU with native bf16, fp32 on
    one without, bf16 or fp16 on a GPU): a study resumed on another machine would otherwise mix
    precisions without a word. Only runs left at ``amp: auto`` are checked; a precision set
    explicitly (``--set amp=off``) is the user's choice.
    """
    from .train import resolve_device

    started = Counter(recorded_precision(run.run_dir) for run in study.runs
                      if states[run.name] in ("done", "partial"))
    started.pop(None, None)  # folders of older versions, copied without checkpoints
    if not started:
        return None
    planned: Counter = Counter()
    for run in study.runs:
        if states[run.name] != "done" and run.config.amp == "auto":
            try:
                planned[precision_name(resolve_amp("auto", resolve_device(run.config.device)))] += 1
            except ValueError:
                continue  # a missing device is reported when the run starts
    new = {name: n for name, n in planned.items() if name not in started}
    if not new:
        return None
    return (f"study {study.name}: its started runs trained in {listed_precisions(started)}, but here --amp auto "
            f"would train the rest in {listed_precisions(new)}: the study would mix precisions. Resume it on a "
            f"machine like the first one (for bf16 on a CPU: one with native bf16, AVX512-BF16 or AMX), or "
            f"choose the precision of the remaining runs yourself: --set amp=bf16, --set amp=fp16 or --set amp=off")


def check_study_data(study: Study) -> None:
    """Fail before any run starts when a run's data cannot be found (each distinct one once)."""
    from ..data import check_data_source

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


def run_one(config: Dict[str, Any]) -> Dict[str, Any]:
    """Train one run in this process (what submitit executes on a cluster node)."""
    from .train import train

    cfg = TrainConfig.from_dict(config)
    if (Path(cfg.out) / "last.pt").is_file():
        cfg.resume = True
    return train(cfg)


def _command(config_file: Path, resume: bool) -> List[str]:
    command = [sys.executable, "-m", "nlsam", "train", "-c", str(config_file)]
    return command + (["--resume"] if resume else [])


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
    """
    if executor not in EXECUTORS:
        raise ValueError(f"unknown executor {executor!r}; valid: {', '.join(EXECUTORS)}")
    if not isinstance(workers, int) or workers < 1:
        raise ValueError(f"workers must be a positive integer, got {workers!r}")
    check_study_data(study)
    study.out.mkdir(parents=True, exist_ok=True)
    save_yaml(dict(study.spec, name=study.name), study.out / "study.yaml")
    states = {run.name: run_state(run) for run in study.runs}
    mixed = check_study_precision(study, states) if executor == "local" else None
    if mixed and not dry_run:
        raise ValueError(mixed)
    if not dry_run:
        _repair_finished(study, states, log)
    pending = [run for run in study.runs if states[run.name] != "done"]
    log(f"study {study.name}: {len(study.runs)} runs, {len(study.runs) - len(pending)} done, "
        f"{sum(states[r.name] == 'partial' for r in pending)} to resume, "
        f"{sum(states[r.name] == 'todo' for r in pending)} to start; directory {study.out}")
    if dry_run or not pending:
        for run in study.runs:
            log(f"  [{states[run.name]:>7s}] {run.name}")
        if mixed and pending:
            log(f"warning: {mixed}")
        return dict(done=len(study.runs) - len(pending), failed=0, ran=0)
    if executor == "local":
        failed = _run_local(study, pending, states, workers, log)
    else:
        failed = _run_submitit(study, pending, executor, log)
    return dict(done=len(study.runs) - len(failed), failed=len(failed), ran=len(pending))


def _repair_finished(study: Study, states: Dict[str, str], log) -> None:
    """Bring the files of finished runs up to their ``last.pt`` (a kill between the final writes
    leaves ``best.pt`` or ``metrics.jsonl`` behind), unless a trainer still holds the run."""
    for run in study.runs:
        if states[run.name] != "done":
            continue
        try:
            with lock_run_dir(run.run_dir):
                for repair in repair_run_dir(run.run_dir):
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
    for name, (proc, handle, _) in active.items():
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


def _schedule(study: Study, queue: List[StudyRun], active: Dict[str, tuple], failed: List[str],
              states: Dict[str, str], workers: int, gpus: int, threads: int, logs: Path, log) -> None:
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
            proc = subprocess.Popen(_command(_config_file(study, run), states[run.name] == "partial"),
                                    env=env, stdout=handle, stderr=subprocess.STDOUT,
                                    preexec_fn=_die_with_parent if sys.platform.startswith("linux") else None)
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
    if executor == "submitit":
        ex = submitit.LocalExecutor(folder=str(folder))
        ex.update_parameters(timeout_min=int((study.spec.get("slurm") or {}).get("timeout_min", 24 * 60)))
    else:
        ex = submitit.AutoExecutor(folder=str(folder))
        ex.update_parameters(**(study.spec.get("slurm") or {}))
    jobs = []
    for run in pending:
        config = {k: v for k, v in run.config.to_dict().items() if k != "resume"}
        jobs.append((run.name, ex.submit(run_one, config)))
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
