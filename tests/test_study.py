import csv
import json
import math

import pytest
import yaml

from nlsam.analysis.report import write_report
from nlsam.analysis.statistics import t_quantile_975, welch_interval
from nlsam.cli import main
from nlsam.engine.study import load_study, run_state
from nlsam.engine.study_runner import execute_study

SMALLEST = """
base: {data: builtin, model: resnet20, epochs: 1}
grid: {attention: [null, nlsam]}
seeds: [0, 1]
"""
TINY_BASE = {"data": "builtin:128:64:0", "model": "resnet20", "epochs": 1, "batch_size": 64}


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("NLSAM_CACHE_DIR", str(tmp_path / "cache"))


def write_study(tmp_path, text=None, **spec):
    path = tmp_path / "study.yaml"
    path.write_text(text if text is not None else yaml.safe_dump(spec))
    return path


def test_smallest_study_file_is_accepted(tmp_path):
    study = load_study(write_study(tmp_path, SMALLEST), out=tmp_path / "out")
    # seed-major: a study stopped part-way has whole seeds of every variant
    assert [r.name for r in study.runs] == [
        "attention=none,seed=0",
        "attention=nlsam,seed=0",
        "attention=none,seed=1",
        "attention=nlsam,seed=1",
    ]
    assert all(r.config.data == "builtin" and r.config.epochs == 1 for r in study.runs)
    assert study.runs[0].config.attention is None and study.runs[3].config.seed == 1


def test_model_options_grid_and_variants(tmp_path):
    path = write_study(
        tmp_path,
        base=dict(TINY_BASE, attention="nlsam"),
        grid={"model_options.nlsam_reduction": [2, 8]},
        variants=[{"attention": None}],
        seeds=[0],
    )
    study = load_study(path, out=tmp_path / "out")
    assert [r.config.model_options for r in study.runs] == [{"nlsam_reduction": 2}, {"nlsam_reduction": 8}, {}]
    assert study.runs[2].config.attention is None


def test_a_variant_can_run_on_fewer_seeds(tmp_path):
    path = write_study(
        tmp_path,
        base=TINY_BASE,
        grid={"attention": [None, "nlsam"]},
        variants=[{"attention": "nlsam", "model_options.nlsam_reduction": 2, "seeds": [0]}],
        seeds=[0, 1],
    )
    study = load_study(path, out=tmp_path / "out")
    assert [r.name for r in study.runs] == [
        "attention=none,seed=0",
        "attention=nlsam,seed=0",
        "attention=nlsam,nlsam_reduction=2,seed=0",
        "attention=none,seed=1",
        "attention=nlsam,seed=1",
    ]
    assert "seeds" not in study.runs[2].group and study.runs[2].config.model_options == {"nlsam_reduction": 2}


@pytest.mark.parametrize(
    "spec, message",
    [
        (dict(base={"epoch": 1}), "unknown key 'epoch' in .*base.*did you mean 'epochs'.*valid keys:"),
        (dict(base=TINY_BASE, grid={"attenton": ["nlsam"]}), "unknown key 'attenton'.*valid keys:"),
        (
            dict(base=TINY_BASE, grid={"attention": ["nlsam", "sam"]}),
            "unknown attention 'sam' \\(did you mean 'nlsam'\\?\\); valid: none, nlsam",
        ),
        (dict(base=TINY_BASE, grid={"model": ["resnet21"]}), "unknown model 'resnet21'.*valid: .*resnet20"),
        (
            dict(base=TINY_BASE, grid={"model_options.nlsam_pool": [3]}, seeds=[0]),
            "not divisible by the pooling kernel k=3",
        ),
        (
            dict(base=TINY_BASE, grid={"model_options.colour": ["red"]}),
            "unknown option 'colour' for model resnet20.*valid: attention, ",
        ),
        (dict(base=TINY_BASE, grid={"scheduler": ["poly"]}), "unknown scheduler 'poly'; valid: step"),
        (dict(base=TINY_BASE, seeds="zero"), "seeds must be a non-empty list of integers"),
        (dict(base=TINY_BASE, variants=[{"attention": None, "seeds": []}]), "variant seeds must be a non-empty list"),
        (dict(base=dict(TINY_BASE, seed=3)), "base must not set 'seed'"),
        (dict(base=TINY_BASE, runs=3), "unknown key 'runs'.*valid study keys: name, base, grid"),
        (dict(base=TINY_BASE, grid={"attention": "nlsam"}), "must be a non-empty list"),
    ],
)
def test_bad_study_files_are_rejected_before_anything_runs(tmp_path, spec, message):
    with pytest.raises(ValueError, match=message):
        load_study(write_study(tmp_path, **spec), out=tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_study_cli_rejects_bad_file_with_one_line(tmp_path, capsys):
    path = write_study(tmp_path, base=TINY_BASE, grid={"attention": ["eca"]})
    assert main(["study", str(path), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "unknown attention 'eca'" in err[0]


def test_run_skip_resume_and_report(tmp_path, capsys):
    from nlsam.engine import train

    path = write_study(
        tmp_path,
        base=dict(TINY_BASE, epochs=2),
        grid={"attention": [None, "nlsam"]},
        seeds=[0, 1],
        paper={"attention=nlsam": "+0.98 (published)"},
    )
    out = tmp_path / "out"
    study = load_study(path, out=out)
    # a run killed after its first epoch, as a crash would leave it
    killed = study.runs[1]

    def stop(summary):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train(killed.config, on_epoch_end=stop)
    assert run_state(killed) == "partial"
    assert main(["study", str(path), "--out", str(out)]) == 0
    log = capsys.readouterr().out
    assert "0 done, 1 to resume, 3 to start" in log and "started attention=nlsam,seed=0 (resuming)" in log
    assert all(run_state(r) == "done" for r in study.runs)
    epochs = [json.loads(row)["epoch"] for row in (killed.run_dir / "metrics.jsonl").read_text().splitlines()]
    assert epochs == [1, 2]
    # a second invocation has nothing left to do
    assert main(["study", str(path), "--out", str(out)]) == 0
    assert "4 done, 0 to resume, 0 to start" in capsys.readouterr().out

    assert main(["report", str(out)]) == 0
    report = (out / "report.md").read_text()
    assert "| attention=nlsam |" in report and "(n=2)" in report and "+0.98 (published)" in report
    for name in ("results.csv", "runs.csv", "accuracy_vs_gflops.png", "curves.png"):
        assert (out / name).is_file() and (out / name).stat().st_size > 0, name
    rows = {r["variant"]: r for r in csv.DictReader(open(out / "results.csv"))}
    assert rows["attention=none"]["n"] == "2" and rows["attention=none"]["delta"] == ""
    assert rows["attention=nlsam"]["vs"] == "attention=none" and rows["attention=nlsam"]["paired_n"] == "2"
    nl = rows["attention=nlsam"]
    accs = {
        a: [
            json.loads((r.run_dir / "metrics.jsonl").read_text().splitlines()[-1])["test_top1"]
            for r in study.runs
            if r.config.attention == a
        ]
        for a in (None, "nlsam")
    }
    diff, low, high = welch_interval(accs["nlsam"], accs[None])
    assert float(nl["delta"]) == pytest.approx(diff, abs=1e-3)
    assert float(nl["delta_ci_low"]) == pytest.approx(low, abs=1e-3)
    assert int(nl["params"]) > int(rows["attention=none"]["params"])


def test_parallel_workers(tmp_path):
    path = write_study(tmp_path, base=TINY_BASE, grid={"attention": [None, "nlsam"]}, seeds=[0])
    study = load_study(path, out=tmp_path / "out")
    counts = execute_study(study, workers=2, log=lambda *_: None)
    assert counts == dict(done=2, failed=0, ran=2, waiting=0)


def test_submitit_local_executor(tmp_path):
    pytest.importorskip("submitit")
    path = write_study(tmp_path, base=TINY_BASE, grid={"attention": ["nlsam"]}, seeds=[0])
    study = load_study(path, out=tmp_path / "out")
    counts = execute_study(study, executor="submitit", log=lambda *_: None)
    assert counts["failed"] == 0 and run_state(study.runs[0]) == "done"
    assert (tmp_path / "out" / "submitit").is_dir()


def test_missing_data_is_refused_before_any_run_starts(tmp_path, capsys):
    path = write_study(tmp_path, base=dict(TINY_BASE, data=str(tmp_path / "missing-folder")), seeds=[0, 1])
    assert main(["study", str(path), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert "run seed=0: unknown dataset" in err and "missing-folder" in err and "retry" not in err
    assert not (tmp_path / "out" / "runs").exists()
    cifar = write_study(tmp_path, base=dict(TINY_BASE, data="cifar10", data_dir=str(tmp_path / "d")), seeds=[0])
    assert main(["study", str(cifar), "--out", str(tmp_path / "out2")]) == 2
    assert "cifar10 not found" in capsys.readouterr().err


def test_failed_run_is_reported_and_retried(tmp_path, capsys):
    from PIL import Image

    for split in ("train", "test"):  # one class: the run fails when its data are loaded
        (tmp_path / "one" / split / "cat").mkdir(parents=True)
        Image.new("RGB", (8, 8)).save(tmp_path / "one" / split / "cat" / "0.png")
    path = write_study(tmp_path, base=dict(TINY_BASE, data=str(tmp_path / "one")), seeds=[0])
    assert main(["study", str(path), "--out", str(tmp_path / "out")]) == 1
    assert "1 run(s) failed" in capsys.readouterr().err
    log = (tmp_path / "out" / "logs" / "seed=0.log").read_text()
    assert "classification needs at least 2" in log


def test_report_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="not a study directory"):
        write_report(tmp_path)


def test_t_quantiles_and_welch():
    assert t_quantile_975(1) == pytest.approx(12.706204736, rel=1e-9)
    assert t_quantile_975(4) == pytest.approx(2.776445105, rel=1e-9)
    assert t_quantile_975(1e9) == pytest.approx(1.96, abs=1e-3)
    assert 2.776 > t_quantile_975(4.5) > 2.571
    a, b = [1.0, 2.0, 3.0], [0.0, 1.0, 2.0]
    diff, low, high = welch_interval(a, b)
    # equal variances 1, n = 3: se = sqrt(2/3), df = 4
    assert diff == 1.0 and high - diff == pytest.approx(2.776445105 * math.sqrt(2 / 3), rel=1e-9)
    assert welch_interval([1.0], b) is None


def test_shipped_study_files_are_valid(tmp_path):
    from nlsam.configs import list_studies, study_path

    assert len(list_studies()) >= 12
    for name in list_studies():
        study = load_study(study_path(name), out=tmp_path / name)
        assert study.runs


def test_partners_and_paired_differences():
    from types import SimpleNamespace

    from nlsam.analysis.report import GroupResult, _attach_baselines, _row
    from nlsam.analysis.statistics import paired_interval

    def group(attention, accuracies, seeds):
        return GroupResult(f"attention={attention}", {"attention": attention}, list(accuracies), list(seeds))

    base = group(None, [90.0, 91.0, 92.0], [0, 1, 2])
    nl = group("nlsam", [90.5, 91.2, 92.9], [0, 1, 2])
    se = group("se", [91.0, 91.5], [0, 1])
    se_nl = group("se+nlsam", [91.4, 91.6, 93.0], [0, 1, 2])
    cbam_nl = group("cbam+nlsam", [90.0, 90.4], [0, 1])  # no cbam in the study: compared with the baseline
    results = [base, nl, se, se_nl, cbam_nl]
    _attach_baselines(SimpleNamespace(spec={"base": {"model": "resnet20"}}), results)
    assert base.partner is None and base.is_baseline
    assert nl.partner is base and se.partner is base and se_nl.partner is se and cbam_nl.partner is base

    # paired: the per-seed differences 0.4, 0.1 (seed 2 ran only with NL-SAM) -> mean 0.25,
    # half-width t(1) * std / sqrt(2) = 12.706 * 0.2121 / 1.414
    mean, low, high, n = paired_interval(se_nl.by_seed, se.by_seed)
    half = 12.706204736 * math.sqrt(((0.4 - 0.25) ** 2 + (0.1 - 0.25) ** 2) / 1) / math.sqrt(2)
    assert n == 2 and mean == pytest.approx(0.25) and high - mean == pytest.approx(half, rel=1e-6)
    assert paired_interval({0: 1.0}, {0: 0.5, 1: 0.2}) is None  # one shared seed: no interval

    row = _row(se_nl, {})
    welch = welch_interval(se_nl.accuracies, se.accuracies)
    assert row["vs"] == "attention=se" and row["Δ (95% CI)"] == f"{welch[0]:+.2f} [{welch[1]:+.2f}, {welch[2]:+.2f}]"
    assert row["paired Δ (95% CI)"] == f"+0.25 [{0.25 - half:+.2f}, {0.25 + half:+.2f}] (n=2)"
    assert _row(base, {})["vs"] == "(baseline)" and _row(base, {})["Δ (95% CI)"] == ""
    # the same seeds in both: the paired interval is the t interval of the differences
    assert _row(nl, {})["paired Δ (95% CI)"].endswith("(n=3)")


def test_rows_of_one_seed_and_of_no_finished_run():
    """One seed has no spread (no "± 0.00"); a variant with no finished run says so."""
    from types import SimpleNamespace

    from nlsam.analysis.report import GroupResult, _attach_baselines, _row

    base = GroupResult("attention=none", {"attention": None}, [87.22], [0])
    nl = GroupResult("attention=nlsam", {"attention": "nlsam"}, [87.14], [0])
    cbam = GroupResult("attention=cbam", {"attention": "cbam"}, [], [])
    _attach_baselines(SimpleNamespace(spec={"base": {"model": "resnet20"}}), [base, nl, cbam])
    assert _row(base, {})["top-1 (%)"] == "87.22 (n=1)"
    row = _row(nl, {})
    assert row["top-1 (%)"] == "87.14 (n=1)" and row["Δ (95% CI)"] == "-0.08 (CI needs >= 2 seeds)"
    assert row["paired Δ (95% CI)"] == ""
    row = _row(cbam, {})
    assert row["top-1 (%)"] == "no finished run" and row["Δ (95% CI)"] == ""


def _finished_run(run, precision):
    """A run folder as a finished run leaves it, without checkpoints (a copied study)."""
    run.run_dir.mkdir(parents=True)
    (run.run_dir / "metrics.jsonl").write_text(json.dumps(dict(epoch=run.config.epochs, test_top1=50.0)) + "\n")
    (run.run_dir / "meta.json").write_text(json.dumps(dict(precision=precision)))


def test_a_study_is_not_resumed_in_another_precision_than_it_started_in(tmp_path, capsys, monkeypatch):
    import nlsam.engine.precision as precision

    path = write_study(tmp_path, base=TINY_BASE, grid={"attention": [None, "nlsam"]}, seeds=[0])
    out = tmp_path / "out"
    study = load_study(path, out=out)
    _finished_run(study.runs[0], "bfloat16")  # trained where --amp auto picked bf16
    monkeypatch.setattr(precision, "cpu_has_native_bf16", lambda: False)  # resumed on a CPU without
    assert main(["study", str(path), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "seed block 0 trained in bfloat16 (1 run)" in err and "remaining runs in float32 (1 run)" in err
    assert "--set amp=off" in err and not study.runs[1].run_dir.exists()
    # a dry run lists the runs and warns
    assert main(["study", str(path), "--out", str(out), "--dry-run"]) == 0
    assert "warning: study" in capsys.readouterr().out
    # where --amp auto picks the study's precision again, nothing is said
    monkeypatch.setattr(precision, "cpu_has_native_bf16", lambda: True)
    assert main(["study", str(path), "--out", str(out), "--dry-run"]) == 0
    assert "warning" not in capsys.readouterr().out
    # a precision chosen explicitly is the user's choice: the run trains, and says its precision
    monkeypatch.setattr(precision, "cpu_has_native_bf16", lambda: False)
    assert main(["study", str(path), "--out", str(out), "--set", "amp=off"]) == 0
    assert json.loads((study.runs[1].run_dir / "meta.json").read_text())["precision"] == "float32"
    assert main(["report", str(out)]) == 0
    runs = {r["run"]: r for r in csv.DictReader(open(out / "runs.csv"))}
    assert [runs[r.name]["precision"] for r in study.runs] == ["bfloat16", "float32"]
    report = (out / "report.md").read_text()
    assert "trained in different precisions:** bfloat16 (1 run), float32 (1 run)" in report


def test_a_seed_block_trains_in_one_precision_and_the_others_go_on(tmp_path, capsys, monkeypatch):
    """The seed-block rule: on a machine where --amp auto gives another precision, a started
    block's remaining runs wait while a new block trains; paired differences stay in one block."""
    import nlsam.engine.precision as precision

    path = write_study(tmp_path, base=TINY_BASE, grid={"attention": [None, "nlsam"]}, seeds=[0, 1])
    out = tmp_path / "out"
    study = load_study(path, out=out)
    plain0, nlsam0, plain1, nlsam1 = study.runs
    assert [r.seed for r in study.runs] == [0, 0, 1, 1]
    _finished_run(plain0, "bfloat16")  # block 0 started where --amp auto picked bf16
    monkeypatch.setattr(precision, "cpu_has_native_bf16", lambda: False)  # here it picks fp32
    assert main(["study", str(path), "--out", str(out)]) == 0
    captured = capsys.readouterr()
    assert "seed block 0 trained in bfloat16 (1 run)" in captured.out and "the other runs train now" in captured.out
    assert "1 waiting for a machine of their seed block's precision" in captured.out
    assert not nlsam0.run_dir.exists()  # waits for a bf16 machine
    # block 1 trained whole (its runs are subprocesses: they train in this machine's real precision)
    metas = [json.loads((run.run_dir / "meta.json").read_text()) for run in (plain1, nlsam1)]
    assert metas[0]["precision"] == metas[1]["precision"] and all(len(m["machines"]) == 1 for m in metas)
    assert main(["report", str(out)]) == 0
    report = (out / "report.md").read_text()
    assert "a paired Δ compares two runs of one block, never two precisions" in report
    assert "| 0 | 1 of 2 | bfloat16 (1 run) | not recorded (1) |" in report
    assert f"| 1 | 2 of 2 | {metas[0]['precision']} (2 runs) | {metas[0]['machines'][0]} (2) |" in report


def test_a_paired_difference_leaves_out_seeds_of_two_precisions():
    from nlsam.analysis.report import GroupResult

    plain = GroupResult(
        "plain", {}, accuracies=[80.0, 81.0, 82.0], seeds=[0, 1, 2], precisions=["bfloat16", "float32", "float32"]
    )
    variant = GroupResult(
        "nlsam",
        {},
        accuracies=[81.0, 81.5, 83.0],
        seeds=[0, 1, 2],
        precisions=["float32", "float32", "float32"],
        partner=plain,
    )
    _, paired = variant.against_partner()
    assert paired[3] == 2 and abs(paired[0] - 0.75) < 1e-9  # seeds 1 and 2 only
    variant.precisions[0] = None  # not recorded: pairs with any
    assert variant.against_partner()[1][3] == 3


def test_recorded_precision_falls_back_on_the_checkpoint(tmp_path):
    import torch

    from nlsam.engine.run_dir import recorded_precision

    assert recorded_precision(tmp_path) is None  # nothing recorded
    torch.save(dict(precision="bfloat16"), tmp_path / "last.pt")  # a folder of an older version
    (tmp_path / "meta.json").write_text(json.dumps(dict(classes=["a", "b"])))
    assert recorded_precision(tmp_path) == "bfloat16"
    (tmp_path / "meta.json").write_text(json.dumps(dict(classes=["a", "b"], precision="float32")))
    assert recorded_precision(tmp_path) == "float32"
