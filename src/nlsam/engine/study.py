"""Studies: a declarative grid of ``nlsam train`` runs (models x attention x options x seeds),
and where each run of one stands.

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

This module holds what a study is and where each of its runs stands: :func:`load_study` reads
and checks a study file into a :class:`Study` (its runs, each a :class:`StudyRun`),
:func:`run_status` says when a run counts as done (a :class:`RunStatus`), and
:func:`waiting_seed_blocks` which seed blocks wait for another machine. Running a study is
:mod:`.study_runner`'s (:func:`execute_study`).

Each run is an ordinary run directory under ``STUDY_DIR/runs/``; a finished run is skipped and
a killed one resumed, so re-running a study picks up where it stopped, and finished run folders
copied into a fresh study directory count as done. A study directory keeps the settings its
runs trained with: a study file or ``--set`` that changes them for a run the directory holds is
refused (:func:`_held_run_changes`), so ``study.yaml`` never describes runs that did not train
with it; new runs (more seeds, another variant) may be added at any time.
"""

from __future__ import annotations

import copy
import itertools
import json
import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import yaml

from .._io import read_torch_file
from ..attention import check_attention_name
from ..models import is_model, list_models
from ..plugins import import_modules
from .checkpoint import _FORMAT_VERSION
from .config import TrainConfig, _check_keys, load_yaml
from .device import resolve_device
from .loading import build_network
from .precision import listed_precisions, precision_name, resolve_amp
from .run_dir import _NOT_COMPARED, RESUME_CHANGEABLE, _differs, read_metrics, recorded_precision

__all__ = [
    "RunStatus",
    "Study",
    "StudyRun",
    "load_study",
    "run_state",
    "run_status",
    "waiting_seed_blocks",
]

_STUDY_KEYS = ("name", "base", "grid", "variants", "seeds", "baseline", "paper", "slurm")
#: Options the study sets for each run itself: never in ``base``, ``grid``, ``variants`` or ``--set``.
_PER_RUN_KEYS = ("out", "resume", "seed")
#: The study keys that must be mappings, and what each maps.
_MAPPING_KEYS = dict(
    base="`nlsam train` options to values",
    baseline="option names to values",
    paper="variant labels to published figures",
    slurm="submitit parameters to values",
)


@dataclass
class StudyRun:
    """One training run of a study: its label (the grid values), seed and full config."""

    name: str
    group: Dict[str, Any]
    seed: int
    config: TrainConfig

    @property
    def run_dir(self) -> Path:
        assert self.config.out is not None  # load_study gives every run its directory
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
    if (
        not isinstance(seeds, list)
        or not seeds
        or not all(isinstance(s, int) and not isinstance(s, bool) for s in seeds)
    ):
        raise ValueError(f"{where} must be a non-empty list of integers, got {_brief(seeds)}")
    return seeds


def _check_option_key(key: str, where: str) -> None:
    if key in _PER_RUN_KEYS:
        hint = (
            "list the seeds under `seeds:` (a variant may hold its own `seeds:` list)"
            if key == "seed"
            else "the study sets it for each run"
        )
        raise ValueError(f"{where} must not set {key!r}; {hint}")
    if key.startswith("model_options."):
        return
    _check_keys({key: None}, where)


def _brief(value: Any, width: int = 60) -> str:
    """``repr(value)``, cut to ``width`` characters: a user's value can be huge."""
    text = repr(value)
    return text if len(text) <= width else text[: width - 3] + "..."


def _kind(value: Any) -> str:
    return {list: "a list", str: "a string", int: "a number", float: "a number", bool: "true or false"}.get(
        type(value), type(value).__name__
    )


def _label(value: Any) -> str:
    if value is None:
        return "none"
    if isinstance(value, (list, tuple)):
        return "-".join(_label(v) for v in value)
    if isinstance(value, dict):
        return "-".join(f"{k}{_label(v)}" for k, v in value.items())
    return str(value)


def _run_name(group: Mapping[str, Any], seed: int) -> str:
    """A directory name that says what the run is, e.g. ``attention=se+nlsam,seed=1``."""
    parts = [f"{k.replace('model_options.', '')}={_label(v)}" for k, v in group.items()]
    parts.append(f"seed={seed}")
    return re.sub(r"[^A-Za-z0-9=+,._-]", "_", ",".join(parts))


def _study_name(spec: Mapping[str, Any], path: Path) -> str:
    """The study's ``name`` (default: the file's stem): a plain folder name, since the study's
    default directory is ``studies/NAME``."""
    name = spec.get("name")
    where = f"{path}: name" if name is not None else f"{path}: the study's name (its file name)"
    name = path.stem if name is None else name
    if isinstance(name, int) and not isinstance(name, bool):
        name = str(name)
    if not (
        isinstance(name, str)
        and name.strip() == name
        and name not in ("", ".", "..")
        and not any(c in name for c in "/\\")
        and name.isprintable()
        and len(name) <= 200
    ):
        raise ValueError(
            f"{where} must be a plain folder name (no '/', not '.' or '..', no spaces around it), got {_brief(name)}"
        )
    return name


def _check_spec_shape(spec: Mapping[str, Any], path: Path) -> None:
    """The study file as a whole: not empty, known keys, mappings where mappings belong."""
    if not spec:
        raise ValueError(
            f"study file {path} is empty; a study needs at least `base:` (the `nlsam train` options "
            "of its runs), e.g. base: {data: builtin, model: resnet20, epochs: 1}"
        )
    unknown = [k for k in spec if k not in _STUDY_KEYS]
    if unknown:
        raise ValueError(f"unknown key {unknown[0]!r} in {path}; valid study keys: {', '.join(_STUDY_KEYS)}")
    for key, what in _MAPPING_KEYS.items():
        value = spec.get(key)
        if value is not None and not isinstance(value, dict):
            raise ValueError(f"{path}: {key} must map {what}, got {_kind(value)} ({_brief(value)})")


def _run_values(base: Mapping[str, Any], group: Mapping[str, Any], seed: int, out: Path) -> Dict[str, Any]:
    values = copy.deepcopy(dict(base))
    for key, value in group.items():
        _set_option(values, key, value)
    values.update(seed=seed, out=str(out))
    return values


def _blame_override(
    check: Callable[[Dict[str, Any]], Any],
    file_base: Mapping[str, Any],
    overrides: Mapping[str, Any],
    group: Mapping[str, Any],
    seed: int,
    out: Path,
) -> Optional[Tuple[str, Any, Exception]]:
    """The first ``--set`` that makes ``check`` fail on a run's values, with its error; None when
    the study file's own values fail (or nothing does)."""
    base = copy.deepcopy(dict(file_base))
    try:
        check(_run_values(base, group, seed, out))
    except (ValueError, TypeError):
        return None
    for key, value in overrides.items():
        _set_option(base, key, value)
        try:
            check(_run_values(base, group, seed, out))
        except (ValueError, TypeError) as exc:
            return key, value, exc
    return None


def _set_text(key: str, value: Any) -> str:
    """``--set KEY=VALUE`` as it was typed, near enough (VALUE as YAML reads it back), cut short."""
    shown = value if isinstance(value, str) else json.dumps(value, default=str)
    return f"--set {key}={shown if len(shown) <= 60 else shown[:57] + '...'}"


def _set_error(key: str, value: Any, exc: Exception) -> ValueError:
    """The error of a ``--set`` value, naming it (the checks ran with ``--set`` as their source)."""
    return ValueError(f"{_set_text(key, value)}: {str(exc).replace(' in --set ', ' ')}")


def load_study(
    path: Union[str, Path], out: Optional[Union[str, Path]] = None, overrides: Optional[Mapping[str, Any]] = None
) -> Study:
    """Read and check a study file; every run's config is built and validated here, and every
    distinct network is instantiated once (on the meta device), before anything runs. An error
    in a ``--set`` value names the ``--set``, one in the file names the file."""
    path = Path(path)
    spec = load_yaml(path)
    _check_spec_shape(spec, path)
    name = _study_name(spec, path)
    file_base = dict(spec.get("base") or {})
    _check_keys(file_base, f"{path}: base")
    for forbidden in _PER_RUN_KEYS:
        if forbidden in file_base:
            raise ValueError(f"{path}: base must not set {forbidden!r}; the study sets it for each run")
    overrides = dict(overrides or {})
    base = dict(file_base)
    for key, value in overrides.items():
        try:
            _check_option_key(key, "--set")
        except ValueError:
            if key not in _PER_RUN_KEYS:
                raise
            raise ValueError(
                f"{_set_text(key, value)}: a study sets each run's {key} itself"
                + ("; list the seeds under `seeds:` in the study file" if key == "seed" else "")
            ) from None
        _set_option(base, key, value)
    spec = dict(spec, base=base)
    grid = spec.get("grid") or {}
    if not isinstance(grid, dict):
        raise ValueError(f"{path}: grid must map option names to lists of values")
    for key, values in grid.items():
        _check_option_key(key, f"{path}: grid")
        if not isinstance(values, list) or not values:
            raise ValueError(f"{path}: grid value for {key!r} must be a non-empty list, got {_brief(values)}")
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
        groups.append(
            (options, _seed_list(variant["seeds"], f"{path}: variant seeds") if "seeds" in variant else seeds)
        )
    groups = groups or [({}, seeds)]

    study_dir = Path(out) if out else Path("studies") / name
    runs: List[StudyRun] = []
    # Seed-major order: a study stopped part-way has whole seeds of every variant, not every
    # seed of the first variants only.
    for seed in dict.fromkeys(itertools.chain(seeds, *(s for _, s in groups))):  # every seed once, in order
        for group, its_seeds in groups:
            if seed not in its_seeds:
                continue
            label = _run_name(group, seed)
            run_dir = study_dir / "runs" / label
            try:
                config = TrainConfig.from_dict(_run_values(base, group, seed, run_dir), f"{path} run {label}")
            except (ValueError, TypeError) as exc:
                blamed = _blame_override(
                    lambda v: TrainConfig.from_dict(v, "--set"), file_base, overrides, group, seed, run_dir
                )
                if blamed:
                    raise _set_error(*blamed) from None
                raise ValueError(f"{path}: run {label}: {exc}") from None
            runs.append(StudyRun(label, group, seed, config))
    names = [r.name for r in runs]
    if len(set(names)) != len(names):
        raise ValueError(f"{path}: the grid, variants and seeds give duplicate runs")
    try:
        _check_networks(runs, path)
    except _NetworkError as exc:
        run = exc.run

        def check(values):
            return _check_network(TrainConfig.from_dict(values, "--set"))

        blamed = _blame_override(check, file_base, overrides, run.group, run.seed, run.run_dir)
        if blamed:
            raise _set_error(*blamed) from None
        raise ValueError(f"{path}: run {run.name}: {exc}") from None
    return Study(name, spec, runs, study_dir)


class _NetworkError(ValueError):
    """A run whose network cannot be built (``run``: the first such run)."""

    def __init__(self, message: str, run: StudyRun) -> None:
        super().__init__(message)
        self.run = run


def _check_network(cfg: TrainConfig) -> None:
    """Build the network ``cfg`` describes on the meta device (no memory, no time), or fail."""
    if not is_model(cfg.model):
        raise ValueError(f"unknown model {cfg.model!r}; valid: {', '.join(list_models())}")
    import_modules(cfg.imports)  # a user's own attention modules, before their names are checked
    check_attention_name(cfg.attention)
    # the images are resized to image_size, unless a model option fixes the input size
    resized = cfg.image_size and "input_size" not in cfg.model_options
    build_network(cfg, dict(input_size=(cfg.image_size,) * 2) if resized else None, device="meta")


def _check_networks(runs: Sequence[StudyRun], path: Path) -> None:
    seen = set()
    for run in runs:
        cfg = run.config
        key = json.dumps([cfg.model, cfg.attention, cfg.model_options, cfg.image_size], sort_keys=True, default=str)
        if key in seen:
            continue
        seen.add(key)
        try:
            _check_network(cfg)
        except (ValueError, TypeError) as exc:
            raise _NetworkError(str(exc), run) from None


# ----------------------------------------------------------------------------- run state
@dataclass
class RunStatus:
    """Where a run of a study stands: ``state`` (``done``, ``partial``, ``todo`` or ``broken``),
    ``why`` (one phrase), the ``epochs`` it holds, whether it keeps its ``last.pt``, and the
    settings it trained with (``config``: its ``last.pt``'s, else its ``config.yaml``'s; None
    where it keeps neither or has trained nothing)."""

    state: str
    why: str
    epochs: int = 0
    checkpoint: bool = False
    config: Optional[Dict[str, Any]] = None


def _checkpoint_problem(path: Path) -> Tuple[Optional[Dict[str, Any]], Optional[str]]:
    """(the contents, None) of a readable training checkpoint; (None, why not) of a file that is
    there but is no checkpoint nlsam can resume from; (None, None) where there is no file.
    Memory-mapped: cheap, tensors are not read."""
    if not path.exists():
        return None, None
    try:
        state = read_torch_file(path, mmap=True)
    except ValueError as exc:
        return None, f"its {path.name} is there but cannot be read: {str(exc).split(': ', 1)[-1]}"
    except OSError as exc:
        return None, f"its {path.name} is there but cannot be read: {exc.strerror or exc}"
    if (
        not isinstance(state, dict)
        or not isinstance(state.get("model"), Mapping)
        or not isinstance(state.get("config"), Mapping)
    ):
        return (
            None,
            f"its {path.name} is there but is not an nlsam training checkpoint (no model state and config inside)",
        )
    if state.get("format_version") != _FORMAT_VERSION:
        return None, (
            f"its {path.name} is there but has checkpoint format version {state.get('format_version')}; "
            f"this nlsam reads version {_FORMAT_VERSION}"
        )
    return state, None


def _saved_config(run_dir: Path) -> Optional[Dict[str, Any]]:
    """The settings in ``RUN_DIR/config.yaml`` (None where it is missing or unreadable)."""
    try:
        values = yaml.safe_load((run_dir / "config.yaml").read_text())
    except (OSError, ValueError, yaml.YAMLError):
        return None
    return values if isinstance(values, dict) else None


def run_status(run: StudyRun) -> RunStatus:
    """Where ``run`` stands, and why. The rule:

    - Every checkpoint in the run folder (``last.pt``, ``best.pt``) that is there must be a
      readable nlsam training checkpoint (it loads with the safe reader, memory-mapped); a file
      that is there but is not one (truncated, another kind of file) makes the run ``broken``:
      not done, not resumed, and nothing of it is deleted.
    - ``done``: the epochs ``last.pt`` has committed, or ``metrics.jsonl``'s where no ``last.pt``
      is kept (finished run folders are copied without checkpoints on purpose), reach the run's
      ``epochs``.
    - ``partial``: a readable ``last.pt`` with fewer epochs: the study resumes it.
    - ``todo``: anything else (no epoch committed, or metrics without a checkpoint to go on from).
    """
    last_state, problem = _checkpoint_problem(run.run_dir / "last.pt")
    if problem:
        problem += (
            "; move it away (a run whose metrics.jsonl holds every epoch then counts as done from it, "
            "any other starts again) or put back a good copy"
        )
    else:
        problem = _checkpoint_problem(run.run_dir / "best.pt")[1]
        if problem:
            problem += "; move it away (the run keeps its last.pt) or put back a good copy"
    # last.pt's history; without a readable last.pt, what metrics.jsonl holds
    rows = read_metrics(run.run_dir, last_state)
    held = int(rows[-1].get("epoch", 0)) if rows else 0
    config = last_state.get("config") if last_state is not None else None
    config = config if isinstance(config, dict) else _saved_config(run.run_dir)
    config = config if held or last_state is not None else None  # trained nothing: nothing to keep
    target = run.config.epochs
    if problem:
        return RunStatus("broken", problem, held, False, config)
    if last_state is not None:
        if held >= target:
            return RunStatus("done", f"{held} of {target} epochs", held, True, config)
        return RunStatus("partial", f"{held} of {target} epochs in last.pt: resumes from there", held, True, config)
    if held >= target:
        return RunStatus(
            "done", f"{held} of {target} epochs (no checkpoint kept: read from metrics.jsonl)", held, False, config
        )
    if held:  # training it again would overwrite those epochs: the user decides
        return RunStatus(
            "broken",
            f"metrics.jsonl holds {held} of {target} epochs but there is no last.pt to "
            "resume from; move the run folder away to train it again",
            held,
            False,
            config,
        )
    return RunStatus("todo", "not started", 0, False, None)


def run_state(run: StudyRun) -> str:
    """``done``, ``partial`` (has a checkpoint: will be resumed), ``todo`` or ``broken`` (a
    checkpoint that is there but cannot be read): :func:`run_status`'s state."""
    return run_status(run).state


def _held_run_changes(run: StudyRun, status: RunStatus) -> Dict[str, Tuple[Any, Any]]:
    """The settings in which the study now gives ``run`` other values than the run trained
    with, as ``{key: (trained, now)}``, of a run the study directory holds (one that trained an
    epoch). Left out: what ``nlsam train --resume`` lets a run change (device, precision, data
    loading, ...; the data by another path to the same file), and ``epochs`` where the run keeps
    its ``last.pt`` and has not trained past them (it is resumed to them)."""
    if status.config is None:
        return {}
    defaults = TrainConfig().to_dict()
    changes = {}
    for key, now in run.config.to_dict().items():
        before = status.config.get(key, defaults[key])
        if key in _NOT_COMPARED or not _differs(key, before, now):
            continue
        if key == "epochs":
            if status.checkpoint and isinstance(now, int) and status.epochs <= now:
                continue
        elif key in RESUME_CHANGEABLE:
            continue
        changes[key] = (before, now)
    return changes


def waiting_seed_blocks(study: Study, states: Mapping[str, str]) -> Dict[int, str]:
    """The seed blocks that cannot go on on this machine: seed -> why.

    The rule that keeps precisions apart: **every run of one seed (a seed block) trains in one
    precision**, so that a paired difference, which compares the runs of one seed, never compares
    precisions. ``--amp auto`` picks the precision per machine (bf16 on a CPU with native bf16,
    fp32 on one without, bf16 or fp16 on a GPU), so a block whose started runs trained in one
    precision goes on only where ``--amp auto`` gives its remaining runs the same one; a block not
    started yet starts in this machine's precision. A study therefore finishes on whatever
    machines come, block by block. Runs given a precision explicitly (``--set amp=off``) are the
    user's choice and never wait; the report leaves a pair of another precision out of the
    paired difference.
    """
    waiting: Dict[int, str] = {}
    for seed in dict.fromkeys(run.seed for run in study.runs):
        block = [run for run in study.runs if run.seed == seed]
        recorded = (recorded_precision(run.run_dir) for run in block if states[run.name] in ("done", "partial"))
        # (None: the folder of an older version, copied without checkpoints)
        started = Counter(p for p in recorded if p is not None)
        if not started:
            continue
        planned: Counter = Counter()
        for run in block:
            if states[run.name] != "done" and run.config.amp == "auto":
                try:
                    planned[precision_name(resolve_amp("auto", resolve_device(run.config.device)))] += 1
                except ValueError:
                    continue  # a missing device is reported when the run starts
        new = {name: n for name, n in planned.items() if name not in started}
        if new:
            waiting[seed] = (
                f"seed block {seed} trained in {listed_precisions(started)}, here --amp auto would "
                f"train its remaining runs in {listed_precisions(new)}"
            )
    return waiting
