"""``nlsam report STUDY_DIR``: tables and figures of a study, laid out like the paper's.

Every accuracy is the final-epoch test top-1, given as mean ± sample standard deviation over
seeds with the seed count. Each variant is compared with its *partner*: a combination ``X+Y``
(``se+nlsam``, ``cbam+nlsam``) with ``X`` alone where the study has it, every other variant with
the baseline. The difference of means comes with a 95% confidence interval (Welch's t interval,
unequal variances, with Student's t quantile computed exactly at the fractional Welch degrees
of freedom: :func:`nlsam.analysis.statistics.t_quantile`); where both variants ran the same seeds
(the same data order and, for fresh runs, the same initialisation of the layers they share), the
paired difference too: the mean of the per-seed differences with its 95% t interval
(:func:`nlsam.analysis.statistics.paired_interval`). Parameters and GFLOPs are measured with
:func:`nlsam.cost.profile` at the data's input size. Writes ``report.md``, ``results.csv``,
``runs.csv`` and PNG figures (drawn by :mod:`nlsam.analysis.figures`) into the study directory.

Runs trained on the ``locate`` data also get localisation columns: the share of the Grad-CAM
map (true class) and of the mean of the network's own spatial attention maps inside the mask
of the deciding shape, and the pointing game (:mod:`nlsam.analysis.localisation`), on the test
split, of each run's final network (``last.pt``, whose accuracy the table reports), as mean ±
the half-width of the 95% t interval over seeds. They are computed once per run and cached in
``RUN_DIR/localisation.json``.

The settings the report gives are those each finished run trained with (its ``last.pt``'s or
``config.yaml``'s), not the study file's: where ``study.yaml`` says otherwise, the report says
so. A run counts as finished as :func:`nlsam.engine.study.run_status` says (every epoch, and a
readable final checkpoint or none kept); a run whose checkpoint is there but cannot be read is
left out and named with the reason.
"""

from __future__ import annotations

import csv
import json
import math
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from statistics import fmean, stdev
from typing import Any, Dict, List, Mapping, Optional, Tuple

from ..cost import profile, render_table
from ..data import procedural_name
from ..engine.checkpoint import load_checkpoint
from ..engine.config import TrainConfig, config_keys
from ..engine.loading import META_DEFAULTS, build_network
from ..engine.precision import listed_precisions
from ..engine.run_dir import read_metrics, recorded_machines, recorded_precision
from ..engine.study import RunStatus, Study, StudyRun, load_study, run_status
from .figures import save_accuracy_by_stage_k, save_accuracy_curves, save_accuracy_vs_gflops
from .localisation import localisation_of_run
from .statistics import mean_interval, paired_interval, welch_interval

__all__ = ["GroupResult", "write_report"]


@dataclass
class GroupResult:
    label: str
    group: Dict[str, Any]
    accuracies: List[float] = field(default_factory=list)
    seeds: List[int] = field(default_factory=list)  # the seed of each accuracy
    precisions: List[Optional[str]] = field(default_factory=list)  # the precision of each (None: not recorded)
    curves: List[List[float]] = field(default_factory=list)
    params: Optional[int] = None
    flops: Optional[int] = None
    missing: int = 0
    baseline: Optional["GroupResult"] = None
    partner: Optional["GroupResult"] = None  # what the variant is compared with (module docstring)
    is_baseline: bool = False
    localisation: List[Dict[str, Any]] = field(default_factory=list)  # per finished run on the locate data

    @property
    def mean(self) -> float:
        return fmean(self.accuracies)

    @property
    def std(self) -> float:
        return stdev(self.accuracies) if len(self.accuracies) > 1 else 0.0

    @property
    def by_seed(self) -> Dict[int, float]:
        return dict(zip(self.seeds, self.accuracies))

    @property
    def precision_by_seed(self) -> Dict[int, Optional[str]]:
        return dict(zip(self.seeds, self.precisions))

    def against_partner(self) -> Tuple[Optional[Tuple[float, float, float]], Optional[Tuple[float, float, float, int]]]:
        """(Welch difference of means, paired difference) against :attr:`partner`.

        The paired difference pairs two runs of one seed only where they trained in the same
        precision (a precision not recorded, in folders of older versions, pairs with any):
        the seed-block rule of :func:`nlsam.engine.study.waiting_seed_blocks`."""
        other = self.partner
        if other is None or not self.accuracies or not other.accuracies:
            return None, None
        mine, theirs = self.precision_by_seed, other.precision_by_seed
        comparable = {
            seed: acc
            for seed, acc in self.by_seed.items()
            if None in (mine.get(seed), theirs.get(seed)) or mine.get(seed) == theirs.get(seed)
        }
        return welch_interval(self.accuracies, other.accuracies), paired_interval(comparable, other.by_seed)


def _group_label(group: Dict[str, Any]) -> str:
    if not group:
        return "all"
    return ", ".join(f"{k.replace('model_options.', '')}={_fmt(v)}" for k, v in group.items())


def _fmt(value: Any) -> str:
    if value is None:
        return "none"
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(_fmt(v) for v in value) + "]"
    return str(value)


def _cost(run_dir: Path, cfg) -> Tuple[int, int]:
    meta_file = run_dir / "meta.json"
    meta = (
        json.loads(meta_file.read_text())
        if meta_file.is_file()
        else load_checkpoint(run_dir / "last.pt").get("meta", {})
    )
    meta = {**META_DEFAULTS, **meta}
    report = profile(build_network(cfg, meta), (meta["in_chans"], *meta["input_size"]))
    return report.params, report.flops


def _trained_settings(run: StudyRun, status: RunStatus) -> Dict[str, Any]:
    """Every setting ``run`` trained with: its own (``last.pt``'s, else ``config.yaml``'s; a key
    an older version did not save has its default), else, where it keeps neither, those the
    study gives it."""
    if status.config is None:
        return run.config.to_dict()
    defaults = TrainConfig().to_dict()
    return {key: status.config.get(key, default) for key, default in defaults.items()}


def _trained_config(run: StudyRun, status: RunStatus) -> TrainConfig:
    try:
        return TrainConfig.from_dict(dict(_trained_settings(run, status), resume=False))
    except (ValueError, TypeError):  # saved by another version: the study's own config
        return run.config


def _collect(study: Study, statuses: Optional[Mapping[str, RunStatus]] = None) -> List[GroupResult]:
    """Gather the final accuracy of every finished run, grouped by grid values."""
    statuses = statuses if statuses is not None else {run.name: run_status(run) for run in study.runs}
    groups: Dict[str, GroupResult] = {}
    for run in study.runs:
        label = _group_label(run.group)
        result = groups.setdefault(label, GroupResult(label, dict(run.group)))
        if statuses[run.name].state != "done":
            result.missing += 1
            continue
        lines = read_metrics(run.run_dir)  # the epochs last.pt holds, even if a kill left metrics.jsonl behind
        result.accuracies.append(lines[-1]["test_top1"])
        result.seeds.append(run.seed)
        result.precisions.append(recorded_precision(run.run_dir))
        result.curves.append([row["test_top1"] for row in lines])
        if result.params is None:
            result.params, result.flops = _cost(run.run_dir, _trained_config(run, statuses[run.name]))
        if _on_locate_data(run):
            result.localisation.append(localisation_of_run(run.run_dir))
    results = list(groups.values())
    _attach_baselines(study, results)
    return results


def _on_locate_data(run) -> bool:
    return procedural_name(str(run.config.data)) == "locate"


#: The localisation columns: title, CSV name and where the figure is in a run's result.
_LOCALISATION_COLUMNS = (
    ("Grad-CAM in mask (%)", "gradcam_mass", ("grad_cam", "true", "mass_in_mask")),
    ("Grad-CAM pointing (%)", "gradcam_pointing", ("grad_cam", "true", "pointing")),
    ("own maps in mask (%)", "own_mass", ("own_maps", "mean", "mass_in_mask")),
    ("own maps pointing (%)", "own_pointing", ("own_maps", "mean", "pointing")),
)


def _figure(result: Dict[str, Any], where: Tuple[str, ...]) -> Optional[float]:
    value: Any = result
    for key in where:
        if not isinstance(value, dict) or value.get(key) is None:
            return None
        value = value[key]
    return float(value)


def _localisation_values(result: GroupResult, where: Tuple[str, ...]) -> List[float]:
    return [v for v in (_figure(r, where) for r in result.localisation) if v is not None]


def _interval_text(interval: Optional[Tuple[float, float]]) -> str:
    if interval is None:
        return ""
    mean, half = interval
    return f"{mean:.1f} (n=1)" if math.isnan(half) else f"{mean:.1f} ± {half:.1f}"


def _attach_baselines(study: Study, results: List[GroupResult]) -> None:
    baseline_spec = study.spec.get("baseline", {"attention": None})
    base = study.spec.get("base") or {}
    defaults = TrainConfig()

    def value(group: Dict[str, Any], key: str) -> Any:
        if key in group:
            return group[key]
        if key.startswith("model_options."):
            return (base.get("model_options") or {}).get(key.split(".", 1)[1])
        return base.get(key, getattr(defaults, key, None))

    candidates = [r for r in results if all(value(r.group, k) == v for k, v in baseline_spec.items())]
    for result in results:
        result.is_baseline = result in candidates
        if result in candidates or not candidates:
            continue

        def shared(c, result=result):
            return sum(value(c.group, k) == value(result.group, k) for k in set(c.group) | set(result.group))

        result.baseline = max(candidates, key=shared)
    for result in results:
        result.partner = result.baseline
        attention = value(result.group, "attention")
        if not isinstance(attention, str) or "+" not in attention:
            continue
        alone = attention.rsplit("+", 1)[0]  # se+nlsam -> se
        for other in results:
            keys = (set(other.group) | set(result.group)) - {"attention"}
            if value(other.group, "attention") == alone and all(
                value(other.group, k) == value(result.group, k) for k in keys
            ):
                result.partner = other


def _row(result: GroupResult, paper: Dict[str, str], localisation: bool = False) -> Dict[str, str]:
    row = {"variant": result.label}
    n = len(result.accuracies)
    if n > 1:
        row["top-1 (%)"] = f"{result.mean:.2f} ± {result.std:.2f} (n={n})"
    elif n == 1:  # one seed has no spread: no "± 0.00"
        row["top-1 (%)"] = f"{result.mean:.2f} (n=1)"
    else:
        row["top-1 (%)"] = "no finished run"
    diff = paired = ""
    welch, pairs = result.against_partner()
    if result.partner is not None and result.accuracies and result.partner.accuracies:
        if welch is None:
            diff = f"{result.mean - result.partner.mean:+.2f} (CI needs >= 2 seeds)"
        else:
            diff = f"{welch[0]:+.2f} [{welch[1]:+.2f}, {welch[2]:+.2f}]"
        if pairs is not None:
            paired = f"{pairs[0]:+.2f} [{pairs[1]:+.2f}, {pairs[2]:+.2f}] (n={pairs[3]})"
    row["vs"] = result.partner.label if result.partner is not None else ("(baseline)" if result.is_baseline else "")
    row["Δ (95% CI)"] = diff
    row["paired Δ (95% CI)"] = paired
    row["Params (M)"] = f"{result.params / 1e6:.4f}" if result.params else ""
    row["GFLOPs"] = f"{result.flops / 1e9:.4f}" if result.flops else ""
    if result.baseline is not None and result.flops and result.baseline.flops:
        row["+GFLOPs (%)"] = f"{100.0 * (result.flops / result.baseline.flops - 1):+.3f}"
    else:
        row["+GFLOPs (%)"] = ""
    if localisation:
        for title, _, where in _LOCALISATION_COLUMNS:
            row[title] = _interval_text(mean_interval(_localisation_values(result, where)))
    if paper:
        row["paper (published)"] = str(paper.get(result.label, ""))
    return row


def _markdown(rows: List[Dict[str, str]]) -> str:
    headers = list(rows[0])
    return render_table(headers, [[r.get(h, "") for h in headers] for r in rows], markdown=True, aligned=False)


def write_report(study_dir: Path) -> Path:
    """Write ``report.md``, ``results.csv``, ``runs.csv`` and the figures; return report.md."""
    study_dir = Path(study_dir)
    spec_path = study_dir / "study.yaml"
    if not spec_path.is_file():
        raise FileNotFoundError(f"{study_dir} is not a study directory (no study.yaml); run `nlsam study` first")
    study = load_study(spec_path, out=study_dir)
    statuses = {run.name: run_status(run) for run in study.runs}
    results = _collect(study, statuses)
    if not any(r.accuracies for r in results):
        states = [status.state for status in statuses.values()]
        unreadable = f", {states.count('broken')} with a checkpoint that cannot be read" if "broken" in states else ""
        raise ValueError(
            f"none of the {len(states)} runs of {study_dir} has finished ({states.count('done')} done, "
            f"{states.count('partial')} partial, {states.count('todo')} not started{unreadable}), so there is nothing "
            f"to report yet; `nlsam study {spec_path} --out {study_dir}` trains them"
        )
    paper = {str(k): v for k, v in (study.spec.get("paper") or {}).items()}
    located = any(r.localisation for r in results)
    rows = [_row(r, paper, located) for r in results]

    with open(study_dir / "results.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        extra = (
            [f"{name}_{part}" for _, name, _ in _LOCALISATION_COLUMNS for part in ("mean", "ci95")] if located else []
        )
        writer.writerow(
            [
                "variant",
                "n",
                "top1_mean",
                "top1_std",
                "vs",
                "delta",
                "delta_ci_low",
                "delta_ci_high",
                "paired_delta",
                "paired_ci_low",
                "paired_ci_high",
                "paired_n",
                "params",
                "flops",
                "missing_runs",
                *extra,
            ]
        )
        for r in results:
            interval, pairs = r.against_partner()
            delta = [f"{v:.4f}" for v in interval] if interval else ["", "", ""]
            delta += [f"{v:.4f}" for v in pairs[:3]] + [str(pairs[3])] if pairs else ["", "", "", ""]
            stats = [f"{r.mean:.4f}" if r.accuracies else "", f"{r.std:.4f}" if len(r.accuracies) > 1 else ""]
            loc = []
            for _, _, where in _LOCALISATION_COLUMNS if located else ():
                pair = mean_interval(_localisation_values(r, where))
                loc += ["", ""] if pair is None else [f"{pair[0]:.4f}", "" if math.isnan(pair[1]) else f"{pair[1]:.4f}"]
            writer.writerow(
                [
                    r.label,
                    len(r.accuracies),
                    *stats,
                    r.partner.label if r.partner else "",
                    *delta,
                    r.params or "",
                    r.flops or "",
                    r.missing,
                    *loc,
                ]
            )
    with open(study_dir / "runs.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(
            [
                "run",
                "variant",
                "seed",
                "state",
                "final_top1",
                "precision",
                "machines",
                *([name for _, name, _ in _LOCALISATION_COLUMNS] if located else []),
            ]
        )
        precisions: Counter = Counter()
        for run in study.runs:
            state = statuses[run.name].state
            top1, precision, machines = "", "", ""
            loc = [""] * len(_LOCALISATION_COLUMNS) if located else []
            if state == "done":
                top1 = read_metrics(run.run_dir)[-1]["test_top1"]
                precision = recorded_precision(run.run_dir) or ""
                machines = "; ".join(recorded_machines(run.run_dir))
                precisions[precision or "not recorded"] += 1
                if located and _on_locate_data(run):
                    cached = localisation_of_run(run.run_dir)  # read back from the run's cache
                    loc = [_fmt_value(_figure(cached, where)) for _, _, where in _LOCALISATION_COLUMNS]
            writer.writerow([run.name, _group_label(run.group), run.seed, state, top1, precision, machines, *loc])

    figures = _figures(results, study_dir)
    lines = [
        f"# Study: {study.name}",
        "",
        *_settings_lines(study, statuses),
        "Accuracy: final-epoch test top-1, mean ± sample std over seeds (n = seeds). Δ: difference of "
        "means to the variant in the 'vs' column (X+Y against X where the study has X, else the "
        "baseline) with a 95% Welch t interval; paired Δ: the mean of the per-seed differences over "
        "the seeds both ran in one precision (same data order and shared-layer initialisation) with its 95% t "
        "interval. GFLOPs = 2 x MACs + attention's "
        "elementwise work (docs/cost.md), at the data's input size.",
        "",
        _markdown(rows),
        "",
    ]
    if located:
        lines += [_localisation_note(results), ""]
    lines += [_precision_note(precisions), "", *_seed_block_lines(study, statuses)]
    missing = sum(r.missing for r in results)
    if missing:
        lines += [f"{missing} run(s) not finished yet are left out.", ""]
    broken = [(run.name, statuses[run.name].why) for run in study.runs if statuses[run.name].state == "broken"]
    if broken:
        lines += [
            "Left out although their folder holds them, because a checkpoint there cannot be read:",
            "",
            *(f"- `{name}`: {why}" for name, why in broken),
            "",
        ]
    if paper:
        lines += ["The 'paper' column quotes the published figures (the paper's, not measured here).", ""]
    for title, name in figures:
        lines += [f"## {title}", "", f"![{title}]({name})", ""]
    report = study_dir / "report.md"
    report.write_text("\n".join(lines))
    return report


#: Settings that do not change what a run computes: the report names them only where the study
#: file sets them.
_UNREPORTED = (
    "out",
    "resume",
    "seed",
    "num_workers",
    "cache_dir",
    "log_every",
    "tensorboard",
    "data_dir",
    "download",
    "eval_batch_size",
)


def _settings_lines(study: Study, statuses: Mapping[str, RunStatus]) -> List[str]:
    """The settings the finished runs share, those that differ between them (beyond the grid's
    and variants' own), and where they trained otherwise than ``study.yaml`` says."""
    done = [run for run in study.runs if statuses[run.name].state == "done"]
    varied = {key for run in study.runs for key in run.group}
    varied_options = {key.split(".", 1)[1] for key in varied if key.startswith("model_options.")}

    def comparable(values: Dict[str, Any]) -> Dict[str, Any]:
        options = values.get("model_options")
        if isinstance(options, dict):
            values = dict(values, model_options={k: v for k, v in options.items() if k not in varied_options})
        return values

    trained = [comparable(_trained_settings(run, statuses[run.name])) for run in done]
    planned = [comparable(run.config.to_dict()) for run in done]
    base = study.spec.get("base") or {}
    keys = [k for k in base if k not in varied and k not in ("out", "resume", "seed")]
    keys += [
        k
        for k in config_keys()
        if k not in base
        and k not in varied
        and k not in _UNREPORTED
        and any(t.get(k) != p.get(k) for t, p in zip(trained, planned))
    ]

    def tally(rows: List[Dict[str, Any]], key: str) -> Dict[str, Tuple[Any, int]]:
        counts: Dict[str, Tuple[Any, int]] = {}
        for row in rows:
            name = json.dumps(row.get(key), sort_keys=True, default=str)
            counts[name] = (row.get(key), counts.get(name, (None, 0))[1] + 1)
        return counts

    def listed(counts: Dict[str, Tuple[Any, int]]) -> str:
        return ", ".join(f"{_fmt(value)} ({n} run{'s' if n > 1 else ''})" for value, n in counts.values())

    shared, differ, unlike = [], [], []
    for key in keys:
        counts = tally(trained, key)
        if len(counts) == 1:
            shared.append(f"`{key}: {_fmt(next(iter(counts.values()))[0])}`")
        else:
            differ.append(f"`{key}`: {listed(counts)}")
        if any(t.get(key) != p.get(key) for t, p in zip(trained, planned)):
            said = next(iter(tally(planned, key).values()))[0]
            unlike.append(f"study.yaml gives `{key}: {_fmt(said)}`, the runs trained with {listed(counts)}")
    lines = ["Settings shared by all runs: " + ", ".join(shared), ""]
    if differ:
        lines += ["Settings that differ between runs: " + "; ".join(differ), ""]
    if unlike:
        lines += [
            "**The finished runs did not all train with what study.yaml says:** "
            + "; ".join(unlike)
            + ". The settings and figures here are those of the runs (each run's own saved config).",
            "",
        ]
    return lines


def _seed_block_lines(study: Study, statuses: Mapping[str, RunStatus]) -> List[str]:
    """The seed blocks (every run of one seed): each block's finished runs, precisions and
    machines, under the rule the paired differences follow."""
    rows = []
    for seed in dict.fromkeys(run.seed for run in study.runs):
        done = [run for run in study.runs if run.seed == seed and statuses[run.name].state == "done"]
        block = [run for run in study.runs if run.seed == seed]
        precisions = Counter(recorded_precision(run.run_dir) or "not recorded" for run in done)
        machines = Counter(m for run in done for m in (recorded_machines(run.run_dir) or ["not recorded"]))
        rows.append(
            {
                "seed block": str(seed),
                "finished": f"{len(done)} of {len(block)}",
                "precision": listed_precisions(precisions) if done else "",
                "machines": ", ".join(f"{m} ({n})" for m, n in machines.items()) if done else "",
            }
        )
    if len(rows) < 2:
        return []
    return [
        "Seed blocks: the runs of one seed share the data order and the initialisation of the layers they "
        "have in common, and train in one precision (`nlsam study` holds a block's remaining runs back "
        "on a machine where `--amp auto` would give them another); a paired Δ compares two runs of one "
        "block, never two precisions. Machines: the runs that trained on each (a resumed run counts each "
        "machine it trained on).",
        "",
        _markdown(rows),
        "",
    ]


def _precision_note(precisions: Mapping[str, int]) -> str:
    """The precision the finished runs trained in (``--amp auto`` picks it per machine), and a
    warning where they differ."""
    listed = listed_precisions(precisions)
    known = [name for name in precisions if name != "not recorded"]
    if len(known) > 1:
        return (
            f"**The finished runs trained in different precisions:** {listed} (`runs.csv` says which); "
            "the paired Δ pairs runs of one precision only, the Δ of means mixes them, so it may be partly "
            "one of precision."
        )
    return f"Precision of the finished runs: {listed}."


def _fmt_value(value: Optional[float]) -> str:
    return "" if value is None else f"{value:.4f}"


def _localisation_note(results: List[GroupResult]) -> str:
    """What the localisation columns are, with the chance levels of the data they were measured on."""
    every = [loc for r in results for loc in r.localisation]
    n = sorted({loc["n"] for loc in every})
    chance = sorted({round(loc["chance"]["area_share"], 2) for loc in every})
    prior = sorted(
        {(round(loc["chance"]["prior_mass_in_mask"], 1), round(loc["chance"]["prior_pointing"], 1)) for loc in every}
    )

    def listed(values) -> str:
        return " / ".join(str(v) for v in values)

    return (
        "Localisation (runs on the locate data; `nlsam locate RUN` gives the details): Grad-CAM of the last "
        "stage for the true class, and the mean of the network's own spatial attention maps (empty without "
        "spatial attention), on "
        f"{listed(n)} test images of each run's final network. 'in mask': the share of the map's mass inside "
        "the mask of the shape that decides the class; 'pointing': the map's maximum falls inside it. Mean ± "
        "half-width of the 95% t interval over seeds. Chance (the mask's area share): "
        f"{listed(f'{c:.2f}%' for c in chance)} for both; a fixed map of the mean training mask (position "
        "prior) scores " + listed(f"{m:.1f}% in mask, {p:.1f}% pointing" for m, p in prior) + "."
    )


_STAGES, _POOL = "model_options.nlsam_stages", "model_options.nlsam_pool"


def _figures(results: List[GroupResult], out: Path) -> List[Tuple[str, str]]:
    """Draw the study's figures into ``out`` (:mod:`nlsam.analysis.figures`): accuracy against
    GFLOPs, by NL-SAM stage and pooling kernel k where the study varies both, and per epoch.
    Returns the (title, file name) of each figure drawn."""
    # (params and flops are measured together, by _cost)
    costed = [(r, r.params, r.flops) for r in results if r.accuracies and r.params is not None and r.flops]
    done = [r for r, _, _ in costed]
    figures = []
    if done:
        points = [(r.label, r.mean, r.std, params, flops) for r, params, flops in costed]
        save_accuracy_vs_gflops(points, out / "accuracy_vs_gflops.png")
        figures.append(("Accuracy against GFLOPs (the paper's Figure 1)", "accuracy_vs_gflops.png"))

    keys = set().union(*(r.group for r in results)) if results else set()
    if {_STAGES, _POOL} <= keys:
        stages = sorted({_fmt(r.group[_STAGES]) for r in done if _STAGES in r.group})
        kernels = sorted({r.group[_POOL] for r in done if _POOL in r.group})
        accuracies = {}
        for k in kernels:
            for stage in stages:
                match = [r for r in done if _fmt(r.group.get(_STAGES)) == stage and r.group.get(_POOL) == k]
                if match:
                    accuracies[stage, k] = (match[0].mean, match[0].std)
        baseline = next((r.baseline for r in done if r.baseline is not None), None)
        save_accuracy_by_stage_k(
            accuracies,
            stages,
            kernels,
            spread=(min(r.mean - r.std for r in done), max(r.mean + r.std for r in done)),
            baseline=baseline.mean if baseline is not None and baseline.accuracies else None,
            path=out / "accuracy_by_stage_k.png",
        )
        figures.append(("Accuracy by stage and k (the paper's Figure 3)", "accuracy_by_stage_k.png"))

    curves = []
    for r in results:
        if r.curves:
            length = min(len(c) for c in r.curves)
            curves.append((r.label, [fmean(c[i] for c in r.curves) for i in range(length)]))
    if curves:
        save_accuracy_curves(curves, out / "curves.png")
        figures.append(("Test accuracy per epoch", "curves.png"))
    return figures
