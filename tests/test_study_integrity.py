"""A study reports only what ran: its directory keeps the settings its runs trained with, a run
is done only with a readable final checkpoint (or none kept), and bad study files, names and
``--set`` values get one clear line."""

import json

import pytest
import torch
import yaml

from nlsam.analysis.report import write_report
from nlsam.cli import main
from nlsam.engine.checkpoint import save_checkpoint
from nlsam.engine.config import save_yaml
from nlsam.engine.study import load_study, run_state, run_status
from nlsam.engine.study_runner import execute_study, lock_study_dir

TINY_BASE = {"data": "builtin:256:64:0", "model": "resnet20", "epochs": 1, "batch_size": 64, "lr": 0.1}


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("NLSAM_CACHE_DIR", str(tmp_path / "cache"))


def write_study(path, text=None, **spec):
    path.write_text(text if text is not None else yaml.safe_dump(spec))
    return path


def fake_run(run, epochs_done=None, checkpoint=True, top1=50.0):
    """A run folder as training leaves it (config.yaml, meta.json, metrics.jsonl, last.pt), without
    training: the epochs' metrics are made up."""
    epochs_done = run.config.epochs if epochs_done is None else epochs_done
    run.run_dir.mkdir(parents=True)
    config = run.config.to_dict()
    save_yaml(config, run.run_dir / "config.yaml")
    rows = [{"epoch": e, "test_top1": top1 + e + run.seed} for e in range(1, epochs_done + 1)]
    (run.run_dir / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    meta = dict(classes=[str(i) for i in range(10)], input_size=[32, 32], in_chans=3)
    (run.run_dir / "meta.json").write_text(json.dumps(meta))
    if checkpoint:
        state = {"model": {"w": torch.zeros(2)}, "config": config, "epoch": epochs_done - 1, "history": rows}
        save_checkpoint(state, run.run_dir / "last.pt")


def one_line_error(capsys):
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    return err[0]


# ----------------------------------------------------------------------------- 1. changed specs
def test_a_changed_spec_is_refused_for_the_runs_the_directory_holds(tmp_path, capsys):
    path = write_study(tmp_path / "s.yaml", base=TINY_BASE, grid={"attention": [None, "nlsam"]}, seeds=[0])
    out = tmp_path / "out"
    study = load_study(path, out=out)
    for run in study.runs:
        fake_run(run)
    assert main(["study", str(path), "--out", str(out)]) == 0
    saved = (out / "study.yaml").read_text()
    assert "lr: 0.1" in saved

    write_study(path, base=dict(TINY_BASE, lr=0.05, momentum=0.8), grid={"attention": [None, "nlsam"]}, seeds=[0])
    for extra in ([], ["--dry-run"]):
        assert main(["study", str(path), "--out", str(out), *extra]) == 2
        err = one_line_error(capsys)
        assert "lr (trained with 0.1, now 0.05)" in err and "momentum (trained with 0.9, now 0.8)" in err
        assert "attention=none,seed=0" in err and "attention=nlsam,seed=0" in err and "--out" in err
        assert (out / "study.yaml").read_text() == saved  # never overwritten with what the runs did not train
    # the same change by --set is refused the same way
    write_study(path, base=TINY_BASE, grid={"attention": [None, "nlsam"]}, seeds=[0])
    assert main(["study", str(path), "--out", str(out), "--set", "lr=0.05"]) == 2
    assert "lr (trained with 0.1, now 0.05)" in one_line_error(capsys)


def test_a_study_may_grow_and_change_what_a_resume_may_change(tmp_path, capsys):
    path = write_study(tmp_path / "s.yaml", base=TINY_BASE, grid={"attention": [None]}, seeds=[0])
    out = tmp_path / "out"
    fake_run(load_study(path, out=out).runs[0])
    # more seeds and another variant: new runs beside the held one
    write_study(
        path, base=TINY_BASE, grid={"attention": [None]}, variants=[{"attention": "nlsam", "seeds": [0]}], seeds=[0, 1]
    )
    assert main(["study", str(path), "--out", str(out), "--dry-run", "--set", "amp=off"]) == 0
    assert "3 runs, 1 done, 0 to resume, 2 to start" in capsys.readouterr().out
    # more epochs: a run with its last.pt is resumed to them ...
    assert main(["study", str(path), "--out", str(out), "--dry-run", "--set", "epochs=2"]) == 0
    assert "1 to resume" in capsys.readouterr().out
    # ... a run kept without checkpoints cannot be: refused, not restarted over its metrics
    (out / "runs" / "attention=none,seed=0" / "last.pt").unlink()
    assert main(["study", str(path), "--out", str(out), "--set", "epochs=2"]) == 2
    err = one_line_error(capsys)
    assert "epochs (trained with 1, now 2)" in err and "attention=none,seed=0" in err
    assert json.loads((out / "runs" / "attention=none,seed=0" / "metrics.jsonl").read_text())["epoch"] == 1


def test_the_report_gives_the_settings_the_runs_trained_with(tmp_path):
    path = write_study(tmp_path / "s.yaml", base=TINY_BASE, grid={"attention": [None, "nlsam"]}, seeds=[0])
    out = tmp_path / "out"
    for run in load_study(path, out=out).runs:
        fake_run(run)
    # a study.yaml that does not say what the runs trained with (as an older nlsam could leave it)
    save_yaml(
        dict(name="s", base=dict(TINY_BASE, lr=0.05), grid={"attention": [None, "nlsam"]}, seeds=[0]),
        out / "study.yaml",
    )
    report = write_report(out).read_text()
    shared = next(line for line in report.splitlines() if line.startswith("Settings shared by all runs"))
    assert "`lr: 0.1`" in shared and "0.05" not in shared and "`epochs: 1`" in shared
    assert "study.yaml gives `lr: 0.05`" in report


def test_settings_that_differ_between_runs_are_not_called_shared(tmp_path):
    path = write_study(tmp_path / "s.yaml", base=TINY_BASE, grid={"attention": [None, "nlsam"]}, seeds=[0])
    out = tmp_path / "out"
    runs = load_study(path, out=out).runs
    fake_run(runs[0])
    runs[1].config.lr = 0.2  # one run trained with another lr
    fake_run(runs[1])
    save_yaml(dict(name="s", base=TINY_BASE, grid={"attention": [None, "nlsam"]}, seeds=[0]), out / "study.yaml")
    report = write_report(out).read_text()
    shared = next(line for line in report.splitlines() if line.startswith("Settings shared by all runs"))
    assert "lr" not in shared and "`model: resnet20`" in shared
    assert "Settings that differ between runs: `lr`: 0.1 (1 run), 0.2 (1 run)" in report


# ----------------------------------------------------------------------------- 2. broken checkpoints
@pytest.mark.parametrize("damage", ["truncated", "text", "tensor", "best"])
def test_a_run_with_a_broken_checkpoint_is_not_done(tmp_path, capsys, damage):
    path = write_study(tmp_path / "s.yaml", base=TINY_BASE, grid={"attention": [None, "nlsam"]}, seeds=[0])
    out = tmp_path / "out"
    study = load_study(path, out=out)
    good, bad = study.runs
    fake_run(good)
    fake_run(bad)
    last = bad.run_dir / "last.pt"
    if damage == "truncated":
        last.write_bytes(last.read_bytes()[: last.stat().st_size // 2])
    elif damage == "text":
        last.write_text("not a checkpoint\n")
    elif damage == "tensor":
        torch.save(torch.zeros(3), last)
    else:
        (bad.run_dir / "best.pt").write_bytes(b"PK\x03\x04 cut")
    broken = "best.pt" if damage == "best" else "last.pt"
    assert run_state(good) == "done" and run_state(bad) == "broken"
    assert broken in run_status(bad).why

    assert main(["study", str(path), "--out", str(out), "--dry-run"]) == 0
    log = capsys.readouterr().out
    assert "2 runs, 1 done" in log and "1 broken" in log
    assert f"[ broken] attention=nlsam,seed=0: its {broken} is there but" in log
    # a study run refuses before anything trains, and deletes nothing
    before = sorted(p.name for p in bad.run_dir.iterdir())
    assert main(["study", str(path), "--out", str(out)]) == 2
    err = one_line_error(capsys)
    assert "attention=nlsam,seed=0" in err and broken in err
    assert sorted(p.name for p in bad.run_dir.iterdir()) == before and not (out / "logs").exists()

    assert main(["report", str(out)]) == 0
    runs = (out / "runs.csv").read_text()
    assert '"attention=nlsam,seed=0",attention=nlsam,0,broken,' in runs
    report = (out / "report.md").read_text()
    assert "1 run(s) not finished yet are left out" in report and f"`attention=nlsam,seed=0`: its {broken}" in report


def test_runs_kept_without_checkpoints_stay_done(tmp_path, capsys):
    path = write_study(tmp_path / "s.yaml", base=TINY_BASE, grid={"attention": [None, "nlsam"]}, seeds=[0])
    out = tmp_path / "out"
    study = load_study(path, out=out)
    fake_run(study.runs[0], checkpoint=False)
    fake_run(study.runs[1], epochs_done=0, checkpoint=False)  # started, nothing committed
    assert [run_state(r) for r in study.runs] == ["done", "todo"]
    assert "no checkpoint kept" in run_status(study.runs[0]).why
    assert main(["study", str(path), "--out", str(out), "--dry-run"]) == 0
    assert "2 runs, 1 done, 0 to resume, 1 to start" in capsys.readouterr().out
    assert main(["report", str(out)]) == 0


def test_the_committed_figure4_folder_still_reports(tmp_path):
    import shutil
    from pathlib import Path

    source = Path(__file__).resolve().parents[1] / "docs" / "results" / "figure4_cifar10_resnet20_30ep"
    copy = tmp_path / "f4"
    shutil.copytree(source, copy, ignore=shutil.ignore_patterns("*.png"))
    study = load_study(copy / "study.yaml", out=copy)
    states = {r.name: run_state(r) for r in study.runs}
    assert sum(s == "done" for s in states.values()) == len(list((copy / "runs").iterdir()))
    write_report(copy)
    assert (copy / "results.csv").read_text() == (source / "results.csv").read_text()
    shared = next(row for row in (copy / "report.md").read_text().splitlines() if row.startswith("Settings shared"))
    assert shared == next(
        row for row in (source / "report.md").read_text().splitlines() if row.startswith("Settings shared")
    )


# ----------------------------------------------------------------------------- 3. bad input, one line
@pytest.mark.parametrize(
    "spec, message",
    [
        (dict(base=TINY_BASE, grid={"seed": [1, 2]}), r"grid must not set 'seed'.*`seeds:`"),
        (dict(base=TINY_BASE, variants=[{"attention": None, "seed": 1}]), r"variants must not set 'seed'.*`seeds:`"),
        (dict(base=TINY_BASE, grid={"out": ["x"]}), r"grid must not set 'out'"),
        (dict(base=[1, 2]), r"base must map `nlsam train` options to values, got a list"),
        (dict(base=TINY_BASE, baseline=["attention"]), r"baseline must map option names to values, got a list"),
        (dict(base=TINY_BASE, paper="+1"), r"paper must map variant labels to published figures, got a string"),
        (dict(base=TINY_BASE, slurm=[1]), r"slurm must map submitit parameters to values, got a list"),
        (dict(base=TINY_BASE, name="../elsewhere"), r"name must be a plain folder name.*got '../elsewhere'"),
        (dict(base=TINY_BASE, name="a/b"), r"name must be a plain folder name"),
        (dict(base=TINY_BASE, name=".."), r"name must be a plain folder name"),
        (dict(base=TINY_BASE, name=["x"]), r"name must be a plain folder name"),
    ],
)
def test_bad_study_files_get_one_clear_error(tmp_path, spec, message):
    with pytest.raises(ValueError, match=message):
        load_study(write_study(tmp_path / "s.yaml", **spec))
    assert not (tmp_path / "studies").exists()


@pytest.mark.parametrize("text", ["", "# nothing yet\n", "\n\n"])
def test_an_empty_study_file_is_an_error(tmp_path, capsys, text):
    path = write_study(tmp_path / "s.yaml", text)
    assert main(["study", str(path), "--out", str(tmp_path / "out")]) == 2
    err = one_line_error(capsys)
    assert "is empty" in err and "base:" in err
    assert not (tmp_path / "out").exists()


def test_base_that_is_not_a_mapping_is_one_line(tmp_path, capsys):
    path = write_study(tmp_path / "s.yaml", "base: [1, 2]\n")
    assert main(["study", str(path), "--out", str(tmp_path / "out")]) == 2
    assert "base must map" in one_line_error(capsys)


@pytest.mark.parametrize(
    "override, message",
    [
        ("epochs=abc", "--set epochs=abc"),
        ("lr=-1", "--set lr=-1: lr must be"),
        ("scheduler=poly", "--set scheduler=poly: unknown scheduler 'poly'"),
        ("attention=sam", "--set attention=sam: unknown attention 'sam'"),
        ("model_options.colour=red", "--set model_options.colour=red: unknown option 'colour'"),
        ("seed=3", "--set seed=3: a study sets each run's seed"),
    ],
)
def test_set_errors_name_the_set_not_the_file(tmp_path, capsys, override, message):
    path = write_study(tmp_path / "s.yaml", base=dict(TINY_BASE, attention="nlsam"), seeds=[0])
    assert main(["study", str(path), "--out", str(tmp_path / "out"), "--dry-run", "--set", override]) == 2
    err = one_line_error(capsys)
    assert message in err and str(path) not in err


def test_set_error_of_a_long_value_is_shortened(tmp_path, capsys):
    path = write_study(tmp_path / "s.yaml", base=TINY_BASE, seeds=[0])
    assert main(["study", str(path), "--out", str(tmp_path / "out"), "--set", "scheduler=" + "x" * 5000]) == 2
    named = one_line_error(capsys).split(": ")[2]  # the --set as the message names it
    assert named.startswith("--set scheduler=xxx") and named.endswith("...") and len(named) < 100


def test_a_file_error_still_names_the_file(tmp_path, capsys):
    path = write_study(tmp_path / "s.yaml", base=dict(TINY_BASE, lr=-1), seeds=[0])
    assert main(["study", str(path), "--out", str(tmp_path / "out"), "--set", "epochs=2"]) == 2
    err = one_line_error(capsys)
    assert str(path) in err and "lr must be" in err and "--set" not in err


def test_a_second_study_into_one_directory_is_refused_while_the_first_runs(tmp_path, capsys):
    path = write_study(tmp_path / "s.yaml", base=TINY_BASE, seeds=[0])
    out = tmp_path / "out"
    fake_run(load_study(path, out=out).runs[0])
    with lock_study_dir(out):  # as the first `nlsam study` holds it
        assert main(["study", str(path), "--out", str(out)]) == 2
        err = one_line_error(capsys)
        assert f"in use by another nlsam study (pid {__import__('os').getpid()})" in err and "--out" in err
        assert main(["study", str(path), "--out", str(out), "--dry-run"]) == 0  # a look is always allowed
    # a lock left by a study that died does not block
    (out / ".lock").write_text("999999999\n")
    assert main(["study", str(path), "--out", str(out)]) == 0
    assert "1 runs, 1 done" in capsys.readouterr().out


def test_lock_holds_while_a_study_executes(tmp_path):
    path = write_study(tmp_path / "s.yaml", base=TINY_BASE, seeds=[0])
    study = load_study(path, out=tmp_path / "out")
    fake_run(study.runs[0])
    seen = []

    def log(line):
        if not seen:
            with pytest.raises(ValueError, match="in use by another nlsam study"):
                with lock_study_dir(study.out):
                    pass
            seen.append(line)

    assert execute_study(study, log=log)["done"] == 1 and seen


def test_a_run_with_epochs_but_no_checkpoint_is_never_trained_over(tmp_path, capsys):
    """metrics.jsonl with some epochs and no last.pt: nothing to resume from, and training again
    would overwrite those epochs; the study and nlsam train both refuse, naming the folder."""
    path = write_study(tmp_path / "s.yaml", base=dict(TINY_BASE, epochs=3), seeds=[0])
    out = tmp_path / "out"
    study = load_study(path, out=out)
    (run,) = study.runs
    fake_run(run, epochs_done=2, checkpoint=False)
    before = (run.run_dir / "metrics.jsonl").read_bytes()
    status = run_status(run)
    assert status.state == "broken" and "2 of 3 epochs but there is no last.pt" in status.why
    assert main(["study", str(path), "--out", str(out)]) == 2
    assert "move the run folder away" in one_line_error(capsys)
    assert main(["train", "--data", "builtin:256:64:0", "--epochs", "3", "--out", str(run.run_dir)]) == 2
    assert "holds metrics.jsonl with 2 epoch(s) but no last.pt" in one_line_error(capsys)
    assert (run.run_dir / "metrics.jsonl").read_bytes() == before
