"""nlsam report: Student's t quantiles of the Welch interval, the figures, unfinished studies."""

import json
import math
from pathlib import Path

import pytest

from nlsam.analysis.report import write_report
from nlsam.analysis.statistics import t_quantile_975, welch_interval
from nlsam.cli import main

# the README's smallest study
SMALLEST = """
base: {data: builtin, model: resnet20, epochs: 1}
grid: {attention: [null, nlsam]}
seeds: [0, 1]
"""

# t_{0.975}(df): the integer ones from printed tables, the others computed with mpmath (40 digits)
KNOWN_T975 = {
    0.5: 164.557673480488,
    1: 12.706204736174705,  # tan(0.475 pi)
    1.2: 8.648826510748867,
    1.5: 6.016663104427929,
    2: 4.302652729749464,  # 0.95 / sqrt(0.04875)
    10: 2.228138851986274,
    1e6: 1.959966356814107,
}


@pytest.mark.parametrize("df", list(KNOWN_T975))
def test_t_quantile_975_known_values(df):
    assert t_quantile_975(df) == pytest.approx(KNOWN_T975[df], rel=1e-10)


def test_t_quantile_975_limits_and_errors():
    assert t_quantile_975(1e12) == pytest.approx(1.959963984540054, rel=1e-9)  # the normal quantile
    assert t_quantile_975(math.inf) == pytest.approx(1.959963984540054, rel=1e-12)
    for df in (0, -1, math.nan):
        with pytest.raises(ValueError, match="degrees of freedom"):
            t_quantile_975(df)


def test_t_distribution_matches_scipy():
    stats = pytest.importorskip("scipy.stats")
    from nlsam.analysis.statistics import t_cdf, t_quantile

    dfs = [0.3, 0.7, 1, 1.01, 1.17, 1.5, 1.93, 2, 2.5, 3.7, 7.3, 30.5, 123.4, 1e4, 1e5, 3e5, 1e6, 1e9]
    for df in dfs:
        for p in (0.6, 0.9, 0.975, 0.995, 0.9999):
            assert t_quantile(p, df) == pytest.approx(stats.t.ppf(p, df), rel=1e-9), (p, df)
            assert t_quantile(1 - p, df) == pytest.approx(stats.t.ppf(1 - p, df), rel=1e-9), (p, df)
        for x in (-40.0, -3.0, -0.5, 0.0, 0.3, 1.96, 4.0, 25.0):
            assert t_cdf(x, df) == pytest.approx(stats.t.cdf(x, df), rel=1e-9, abs=1e-300), (x, df)
    assert t_quantile(0.5, 3.3) == 0.0
    with pytest.raises(ValueError, match="probability"):
        t_quantile(1.0, 3)


def test_welch_interval_two_seeds_per_group():
    # two seeds per group and unequal variances: Welch's df = 1.1245, between 1 and 2
    a, b = [70.0, 72.0], [69.0, 69.5]
    diff, low, high = welch_interval(a, b)
    va, vb = 2.0 / 2, 0.125 / 2
    df = (va + vb) ** 2 / (va**2 + vb**2)
    assert df == pytest.approx(1.1245136186770428) and diff == pytest.approx(1.75)
    # t_{0.975}(1.1245) = 9.8195 (scipy); the interpolated table gave 10.845, 10% too wide
    half = 9.819481112107674 * math.sqrt(va + vb)
    assert (low, high) == (pytest.approx(diff - half, rel=1e-9), pytest.approx(diff + half, rel=1e-9))


# ---------------------------------------------------------------------------------------------
# the report of a study
# ---------------------------------------------------------------------------------------------


def _study(tmp_path, finished=True):
    """The README's study in ``tmp_path``, with every run finished (fake metrics, one epoch)."""
    from nlsam.data import BUILTIN_CLASSES
    from nlsam.engine.study import load_study

    (tmp_path / "study.yaml").write_text(SMALLEST)
    study = load_study(tmp_path / "study.yaml", out=tmp_path)
    if finished:
        meta = dict(classes=list(BUILTIN_CLASSES), input_size=[32, 32], in_chans=3)
        for i, run in enumerate(study.runs):
            run.run_dir.mkdir(parents=True)
            (run.run_dir / "meta.json").write_text(json.dumps(meta))
            (run.run_dir / "metrics.jsonl").write_text(json.dumps(dict(epoch=1, test_top1=40.0 + i)) + "\n")
    return study


def test_curves_of_one_epoch_runs_are_visible(tmp_path, monkeypatch):
    pytest.importorskip("matplotlib")
    from matplotlib.figure import Figure

    saved = {}
    original = Figure.savefig

    def savefig(fig, fname, *args, **kwargs):
        saved[Path(fname).name] = fig
        return original(fig, fname, *args, **kwargs)

    monkeypatch.setattr(Figure, "savefig", savefig)
    _study(tmp_path)
    write_report(tmp_path)
    assert (tmp_path / "curves.png").is_file()
    fig = saved["curves.png"]
    lines = fig.axes[0].get_lines()
    # one point per group (one epoch, mean over seeds 0 and 1): visible only with a marker
    assert sorted((tuple(line.get_xdata()), tuple(line.get_ydata())) for line in lines) == [
        ((1,), (41.0,)),
        ((1,), (42.0,)),
    ]
    for line in lines:
        assert line.get_visible() and line.get_marker() not in (None, "", " ", "None", "none")
        assert line.get_markersize() >= 3
    assert sorted(t.get_text() for t in fig.axes[0].get_legend().get_texts()) == ["attention=nlsam", "attention=none"]
    # only whole epochs on the x axis
    assert all(float(tick).is_integer() for tick in fig.axes[0].get_xticks())


def test_report_of_a_study_without_metrics_says_so(tmp_path, capsys):
    _study(tmp_path, finished=False)
    with pytest.raises(ValueError) as info:
        write_report(tmp_path)
    message = str(info.value)
    assert "none of the 4 runs" in message and "has finished" in message
    assert "0 done, 0 partial, 4 not started" in message and "nlsam study" in message
    assert main(["report", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("nlsam report: error: none of the 4 runs")
    assert not (tmp_path / "report.md").exists()


def test_results_csv_leaves_the_spread_of_one_seed_empty(tmp_path):
    import csv

    study = _study(tmp_path)
    unfinished = next(r for r in study.runs if r.name == "attention=nlsam,seed=1")
    (unfinished.run_dir / "metrics.jsonl").unlink()
    write_report(tmp_path)
    rows = {r["variant"]: r for r in csv.DictReader(open(tmp_path / "results.csv"))}
    assert rows["attention=none"]["n"] == "2" and float(rows["attention=none"]["top1_std"]) > 0
    assert rows["attention=nlsam"]["n"] == "1" and rows["attention=nlsam"]["top1_std"] == ""
    assert rows["attention=nlsam"]["top1_mean"] != ""
    table = (tmp_path / "report.md").read_text()
    assert "± 0.00" not in table and "(n=1)" in table
