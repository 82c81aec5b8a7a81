"""``nlsam report STUDY_DIR``: tables and figures of a study, laid out like the paper's.

Every accuracy is the final-epoch test top-1, given as mean ± sample standard deviation over
seeds with the seed count. Each variant is compared with its *partner*: a combination ``X+Y``
(``se+nlsam``, ``cbam+nlsam``) with ``X`` alone where the study has it, every other variant with
the baseline. The difference of means comes with a 95% confidence interval (Welch's t interval,
unequal variances, with Student's t quantile computed exactly at the fractional Welch degrees
of freedom: :func:`t_quantile`); where both variants ran the same seeds (the same data order and,
for fresh runs, the same initialisation of the layers they share), the paired difference too:
the mean of the per-seed differences with its 95% t interval (:func:`paired_interval`). Parameters and GFLOPs are measured with
:func:`nlsam.cost.profile` at the data's input size. Writes ``report.md``, ``results.csv``,
``runs.csv`` and PNG figures into the study directory.

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
import statistics
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

from ..cost import profile, render_table
from ..engine.checkpoint import load_checkpoint
from ..engine.config import TrainConfig, config_keys
from ..engine.loading import META_DEFAULTS, build_network
from ..engine.precision import listed_precisions
from ..engine.run_dir import read_metrics, recorded_machines, recorded_precision
from ..engine.study import RunStatus, Study, StudyRun, load_study, run_status

__all__ = [
    "GroupResult",
    "mean_interval",
    "paired_interval",
    "t_cdf",
    "t_quantile",
    "t_quantile_975",
    "welch_interval",
    "write_report",
]

# ------------------------------------------------------------------------------------------
# Student's t distribution, in pure Python: the CDF through the regularized incomplete beta
# function, the quantile by bisection
# ------------------------------------------------------------------------------------------

_EPS = 1e-16
_LARGE_DF = 2e4  # above: the central probability is summed as a series (see _t_tail)


def _log_beta(a: float, b: float) -> float:
    """``log B(a, b)``; for a large argument through Stirling's series, so that the difference
    ``lgamma(big) - lgamma(big + small)`` keeps its digits (lgamma of 5e8 is about 1e10)."""
    small, big = min(a, b), max(a, b)
    if big < 20:
        return math.lgamma(a) + math.lgamma(b) - math.lgamma(a + b)

    def correction(z: float) -> float:  # lgamma(z) - ((z - 1/2) log z - z + log(2 pi) / 2)
        z2 = z * z
        return (1 / 12 - (1 / 360 - (1 / 1260 - 1 / (1680 * z2)) / z2) / z2) / z

    difference = (
        -small * math.log(big)
        - (big + small - 0.5) * math.log1p(small / big)
        + small
        + correction(big)
        - correction(big + small)
    )
    return math.lgamma(small) + difference


def _beta_front(a: float, b: float, x: float, y: float) -> float:
    """``x**a * y**b / B(a, b)`` with ``y = 1 - x`` (both given, so that neither loses digits)."""
    log_x = math.log(x) if x <= 0.5 else math.log1p(-y)
    log_y = math.log(y) if y <= 0.5 else math.log1p(-x)
    return math.exp(a * log_x + b * log_y - _log_beta(a, b))


def _beta_fraction(a: float, b: float, x: float) -> float:
    """The continued fraction of the incomplete beta function, by the modified Lentz method."""
    tiny = 1e-300
    c, d = 1.0, 1.0 - (a + b) * x / (a + 1.0)
    d = 1.0 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, 100_000):
        for coefficient in (
            m * (b - m) * x / ((a + 2 * m - 1) * (a + 2 * m)),
            -(a + m) * (a + b + m) * x / ((a + 2 * m) * (a + 2 * m + 1)),
        ):
            d = 1.0 + coefficient * d
            d = 1.0 / (d if abs(d) > tiny else tiny)
            c = 1.0 + coefficient / c
            c = c if abs(c) > tiny else tiny
            h *= d * c
        if abs(d * c - 1.0) < _EPS:
            return h
    raise ArithmeticError(f"the incomplete beta continued fraction did not converge (a={a}, b={b}, x={x})")


def _beta_series(a: float, b: float, x: float, y: float) -> float:
    """``I_x(a, b)`` as the power series ``x^a y^b / (a B(a, b)) sum_n (a+b)_n / (a+1)_n x^n``
    (all terms positive; converges for x < 1, quickly when ``b x`` is moderate)."""
    if x <= 0.0:
        return 0.0
    term, total, n = 1.0, 1.0, 0
    while term > _EPS * total:
        term *= (a + b + n) * x / (a + 1 + n)
        total += term
        n += 1
    return _beta_front(a, b, x, y) * total / a


def _regularized_beta(a: float, b: float, x: float, y: Optional[float] = None) -> float:
    """The regularized incomplete beta function ``I_x(a, b)`` (a, b > 0, 0 <= x <= 1); pass
    ``y = 1 - x`` when it is known more exactly than ``1 - x``."""
    y = 1.0 - x if y is None else y
    if x <= 0.0:
        return 0.0
    if y <= 0.0:
        return 1.0
    # the fraction converges quickly below (a + 1) / (a + b + 2); above, use I_x(a, b) = 1 - I_y(b, a)
    if x < (a + 1.0) / (a + b + 2.0):
        return _beta_front(a, b, x, y) * _beta_fraction(a, b, x) / a
    return 1.0 - _beta_front(a, b, x, y) * _beta_fraction(b, a, y) / b


def _check_df(df: float) -> None:
    if not df > 0:  # also rejects nan
        raise ValueError(f"degrees of freedom must be > 0, got {df}")


def _t_tail(t: float, df: float) -> float:
    """``P(T > t)`` for ``t >= 0``: ``I_x(df/2, 1/2) / 2`` with ``x = df / (df + t^2)``."""
    if math.isinf(df):
        return 0.5 * math.erfc(t / math.sqrt(2.0))
    if t > 1e150:  # t^2 overflows (only tiny df get there): I_x(a, b) = x^a / (a B(a, b)) to 1e-300
        a = df / 2
        return 0.5 * math.exp(a * (math.log(df) - 2 * math.log(t)) - _log_beta(a, 0.5)) / a
    t2 = t * t
    x, y = df / (df + t2), t2 / (df + t2)
    if df > _LARGE_DF and t2 < 1000.0:
        # near x = 1 the fraction loses about df * 1e-16 (relative); the central probability
        # P(|T| < t) = I_y(1/2, df/2) is a series of positive terms there, exact to 1e-16
        # (absolute, so 1e-16 / tail relative): the better of the two unless tail < 1 / df
        # (always so from t^2 = 1000 on, where the tail is below 1e-200)
        tail = 0.5 * (1.0 - _beta_series(0.5, df / 2, y, x))
        if tail * df > 1.0:
            return tail
    return 0.5 * _regularized_beta(df / 2, 0.5, x, y)


def t_cdf(x: float, df: float) -> float:
    """``P(T <= x)`` for Student's t with ``df > 0`` (possibly fractional, or ``math.inf``)
    degrees of freedom."""
    _check_df(df)
    tail = _t_tail(abs(x), df)
    return tail if x < 0 else 1.0 - tail


def t_quantile(p: float, df: float) -> float:
    """The ``p`` quantile of Student's t with ``df > 0`` degrees of freedom (possibly fractional,
    or ``math.inf``): bisection on the tail probability, to a relative 1e-12 or better, except
    for tails below 1e-8 at df above 1e9 (1e-5 there)."""
    _check_df(df)
    if not 0.0 < p < 1.0:
        raise ValueError(f"a quantile needs a probability strictly between 0 and 1, got {p}")
    if p < 0.5:
        return -t_quantile(1.0 - p, df)
    tail = 1.0 - p
    if tail == 0.5:
        return 0.0
    low, high = 0.0, 1.0
    while _t_tail(high, df) > tail:
        if high > 1e300:  # tiny df: the quantile exceeds the floats
            return math.inf
        low, high = high, 2.0 * high
    while high - low > 1e-13 * high:
        middle = 0.5 * (low + high)
        if _t_tail(middle, df) > tail:
            low = middle
        else:
            high = middle
    return 0.5 * (low + high)


def t_quantile_975(df: float) -> float:
    """The 0.975 quantile of Student's t with ``df`` (possibly fractional) degrees of freedom."""
    return t_quantile(0.975, df)


def welch_interval(a: Sequence[float], b: Sequence[float]) -> Optional[Tuple[float, float, float]]:
    """Mean difference ``mean(a) - mean(b)`` and its 95% Welch interval; None with < 2 samples."""
    if len(a) < 2 or len(b) < 2:
        return None
    diff = statistics.fmean(a) - statistics.fmean(b)
    va, vb = statistics.variance(a) / len(a), statistics.variance(b) / len(b)
    if va + vb == 0:
        return diff, diff, diff
    df = (va + vb) ** 2 / (va**2 / (len(a) - 1) + vb**2 / (len(b) - 1))
    half = t_quantile_975(df) * math.sqrt(va + vb)
    return diff, diff - half, diff + half


def paired_interval(a: Dict[int, float], b: Dict[int, float]) -> Optional[Tuple[float, float, float, int]]:
    """Mean of ``a[seed] - b[seed]`` over the seeds both have, its 95% t interval (n - 1 degrees
    of freedom) and n; None with fewer than 2 shared seeds."""
    diffs = [a[seed] - b[seed] for seed in a if seed in b]
    if len(diffs) < 2:
        return None
    interval = mean_interval(diffs)
    assert interval is not None  # at least two differences
    mean, half = interval
    return mean, mean - half, mean + half, len(diffs)


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
        return statistics.fmean(self.accuracies)

    @property
    def std(self) -> float:
        return statistics.stdev(self.accuracies) if len(self.accuracies) > 1 else 0.0

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
            from .localisation import localisation_of_run

            result.localisation.append(localisation_of_run(run.run_dir))
    results = list(groups.values())
    _attach_baselines(study, results)
    return results


def _on_locate_data(run) -> bool:
    from ..data import procedural_name

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


def mean_interval(values: Sequence[float]) -> Optional[Tuple[float, float]]:
    """The mean of ``values`` and the half-width of its 95% t interval (Student's t with n - 1
    degrees of freedom); the half-width is nan for a single value; None for none."""
    if not values:
        return None
    if len(values) == 1:
        return float(values[0]), math.nan
    half = t_quantile_975(len(values) - 1) * statistics.stdev(values) / math.sqrt(len(values))
    return statistics.fmean(values), half


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
                    from .localisation import localisation_of_run

                    cached = localisation_of_run(run.run_dir)  # read back from the run's cache
                    loc = [_fmt_value(_figure(cached, where)) for _, _, where in _LOCALISATION_COLUMNS]
            writer.writerow([run.name, _group_label(run.group), run.seed, state, top1, precision, machines, *loc])

    figures = _figures(study, results, study_dir)
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


def _figures(study: Study, results: List[GroupResult], out: Path) -> List[Tuple[str, str]]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    # (params and flops are measured together, by _cost)
    costed = [(r, r.params, r.flops) for r in results if r.accuracies and r.params is not None and r.flops]
    done = [r for r, _, _ in costed]
    figures = []
    if done:
        fig, ax = plt.subplots(figsize=(7, 4.5))
        largest = max(params for _, params, _ in costed)
        for r, params, flops in costed:
            ax.errorbar(flops / 1e9, r.mean, yerr=r.std, fmt="none", ecolor="0.5", capsize=3, zorder=1)
            ax.scatter(flops / 1e9, r.mean, s=60 + 600 * params / largest, alpha=0.6, zorder=2)
            ax.annotate(r.label, (flops / 1e9, r.mean), textcoords="offset points", xytext=(6, 6), fontsize=8)
        ax.margins(x=0.25, y=0.15)
        ax.set_xlabel("GFLOPs")
        ax.set_ylabel("test top-1 (%)")
        ax.set_title("Accuracy against cost (marker area ~ parameters)")
        ax.grid(alpha=0.3)
        fig.tight_layout()
        fig.savefig(out / "accuracy_vs_gflops.png", dpi=120)
        plt.close(fig)
        figures.append(("Accuracy against GFLOPs (the paper's Figure 1)", "accuracy_vs_gflops.png"))

    keys = set().union(*(r.group for r in results)) if results else set()
    if {"model_options.nlsam_stages", "model_options.nlsam_pool"} <= keys:
        stages = sorted(
            {_fmt(r.group["model_options.nlsam_stages"]) for r in done if "model_options.nlsam_stages" in r.group}
        )
        ks = sorted({r.group["model_options.nlsam_pool"] for r in done if "model_options.nlsam_pool" in r.group})
        fig, ax = plt.subplots(figsize=(7, 4.5))
        width = 0.8 / max(len(ks), 1)
        for i, k in enumerate(ks):
            xs, ys, es = [], [], []
            for j, stage in enumerate(stages):
                match = [
                    r
                    for r in done
                    if _fmt(r.group.get("model_options.nlsam_stages")) == stage
                    and r.group.get("model_options.nlsam_pool") == k
                ]
                if match:
                    xs.append(j + i * width)
                    ys.append(match[0].mean)
                    es.append(match[0].std)
            ax.bar(xs, ys, width, yerr=es, capsize=3, label=f"k = {k}")
        baseline = next((r.baseline for r in done if r.baseline is not None), None)
        if baseline is not None and baseline.accuracies:
            ax.axhline(baseline.mean, color="k", linestyle="--", linewidth=1, label="baseline")
        ax.set_xticks([j + width * (len(ks) - 1) / 2 for j in range(len(stages))])
        ax.set_xticklabels([f"stages {s}" for s in stages])
        lows = [r.mean - r.std for r in done]
        ax.set_ylim(min(lows) - 1.0, max(r.mean + r.std for r in done) + 1.0)
        ax.set_ylabel("test top-1 (%)")
        ax.set_title("NL-SAM by insertion stage and pooling kernel k")
        ax.legend(fontsize=8)
        fig.tight_layout()
        fig.savefig(out / "accuracy_by_stage_k.png", dpi=120)
        plt.close(fig)
        figures.append(("Accuracy by stage and k (the paper's Figure 3)", "accuracy_by_stage_k.png"))

    curves = [r for r in results if r.curves]
    if curves:
        fig, ax = plt.subplots(figsize=(7, 4.5))
        for r in curves:
            length = min(len(c) for c in r.curves)
            mean = [statistics.fmean(c[i] for c in r.curves) for i in range(length)]
            # markers: a run of one epoch gives one point, which a line alone would not show
            ax.plot(range(1, length + 1), mean, marker="o", markersize=4 if length > 1 else 7, label=r.label)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True, min_n_ticks=1))
        ax.set_xlabel("epoch")
        ax.set_ylabel("test top-1 (%), mean over seeds")
        ax.set_title("Test accuracy during training")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
        fig.tight_layout()
        fig.savefig(out / "curves.png", dpi=120)
        plt.close(fig)
        figures.append(("Test accuracy per epoch", "curves.png"))
    return figures
