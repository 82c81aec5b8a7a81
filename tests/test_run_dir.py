"""A run directory stays whole after a kill at any instant; one trainer per directory; resume rules."""

import importlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from nlsam.cli import main
from nlsam.engine import TrainConfig, train
from nlsam.engine.checkpoint import best_checkpoint, load_checkpoint, peek_checkpoint
from nlsam.engine.run_dir import RunDirInUseError, lock_holder, lock_run_dir, read_metrics
from nlsam.engine.study import load_study, run_state
from nlsam.engine.study_runner import execute_study

train_module = importlib.import_module("nlsam.engine.train")  # the module, not nlsam.engine.train()

TINY = dict(data="builtin:256:128:0", model="resnet20", attention="nlsam", batch_size=64, log_every=1000)


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("NLSAM_CACHE_DIR", str(tmp_path / "cache"))


def tiny_config(out, **kw):
    return TrainConfig.from_dict({**TINY, "out": str(out), "epochs": 2, **kw})


class Killed(BaseException):
    """Stands for SIGKILL: nothing catches it, no clean-up write runs."""


def _metric_epochs(run):
    return [json.loads(row)["epoch"] for row in (run / "metrics.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """An uninterrupted 2-epoch run: what every killed-and-resumed run must end as."""
    out = tmp_path_factory.mktemp("reference") / "run"
    train(tiny_config(out))
    return out, [r["test_top1"] for r in read_metrics(out)]


@pytest.mark.parametrize("point", ["before last.pt", "before best.pt", "before metrics.jsonl"])
@pytest.mark.parametrize("kill_epoch", [1, 2])
def test_a_kill_between_the_writes_loses_nothing(tmp_path, monkeypatch, reference, point, kill_epoch, capsys):
    run = tmp_path / "run"
    seen = []

    def hook(where):
        seen.append(where)
        if where == point and seen.count(where) == kill_epoch:
            raise Killed

    monkeypatch.setattr(train_module, "_checkpoint_hook", hook)
    with pytest.raises(Killed):
        train(tiny_config(run))
    committed = kill_epoch - (point == "before last.pt")
    # whatever the files say, readers see the committed epochs only, and the best of them
    history = read_metrics(run)
    assert [r["epoch"] for r in history] == list(range(1, committed + 1))
    if committed:
        best = max(range(committed), key=lambda e: history[e]["test_top1"])
        assert load_checkpoint(best_checkpoint(run))["epoch"] == best
        capsys.readouterr()
        assert main(["eval", str(run), "--json", "--device", "cpu"]) == 0
        assert json.loads(capsys.readouterr().out)["top1"] == pytest.approx(history[best]["test_top1"])

    monkeypatch.setattr(train_module, "_checkpoint_hook", lambda where: None)
    if committed == 0:
        (run / "last.pt").unlink(missing_ok=True)
        train(tiny_config(run))
    else:
        train(tiny_config(run, resume=True))
    # the files are whole again, and the run ends where the uninterrupted one did
    assert _metric_epochs(run) == [1, 2]
    assert [r["test_top1"] for r in read_metrics(run)] == reference[1]
    best = max(range(2), key=lambda e: reference[1][e])
    assert load_checkpoint(run / "best.pt")["epoch"] == best


def test_resume_after_the_last_epoch_repairs_the_files(tmp_path, monkeypatch, capsys):
    run = tmp_path / "run"

    def hook(where):
        if where == "before best.pt" and load_checkpoint(run / "last.pt")["epoch"] == 1:
            raise Killed

    monkeypatch.setattr(train_module, "_checkpoint_hook", hook)
    with pytest.raises(Killed):
        train(tiny_config(run))
    assert _metric_epochs(run) == [1]  # the final row is missing on disk ...
    assert [r["epoch"] for r in read_metrics(run)] == [1, 2]  # ... but last.pt holds it
    monkeypatch.setattr(train_module, "_checkpoint_hook", lambda where: None)
    capsys.readouterr()
    train(tiny_config(run, resume=True))
    out = capsys.readouterr().out
    assert "rewrote metrics.jsonl from last.pt (1 -> 2 epochs)" in out and "nothing to do" in out
    assert _metric_epochs(run) == [1, 2]
    state = load_checkpoint(run / "last.pt")
    if state["best_epoch"] == 1:
        assert "rewrote best.pt" in out and load_checkpoint(run / "best.pt")["epoch"] == 1


def test_stale_temporaries_are_removed_on_resume(tmp_path):
    run = tmp_path / "run"
    train(tiny_config(run, epochs=1))
    stale = [run / ".last.pt.k2j4h6g8.tmp", run / ".metrics.jsonl.abcdef12.tmp"]
    for path in stale:
        path.write_bytes(b"\0" * 1000)
    (run / "notes.tmp").write_text("mine")  # not one of ours: kept
    train(tiny_config(run, resume=True))
    assert not any(p.exists() for p in stale) and (run / "notes.tmp").exists()


def test_run_files_follow_the_umask(tmp_path):
    old = os.umask(0o027)
    try:
        train(tiny_config(tmp_path / "run", epochs=1))
    finally:
        os.umask(old)
    for name in ("config.yaml", "meta.json", "last.pt", "best.pt", "metrics.jsonl"):
        assert (tmp_path / "run" / name).stat().st_mode & 0o777 == 0o640, name


def test_a_second_trainer_on_a_locked_directory_stops_with_a_message(tmp_path, capsys):
    run = tmp_path / "run"
    with lock_run_dir(run):
        assert main(["train", "--data", TINY["data"], "--epochs", "1", "--out", str(run)]) == 2
        err = capsys.readouterr().err
        assert f"run directory {run} is in use by another training process (pid {os.getpid()})" in err
    assert not (run / "metrics.jsonl").exists()
    assert main(["train", "--data", TINY["data"], "--epochs", "1", "--out", str(run), "--batch-size", "64"]) == 0


def test_killing_the_study_kills_its_trainers(tmp_path):
    study = tmp_path / "s.yaml"
    study.write_text(yaml.safe_dump(dict(base=dict(TINY, data="builtin:4096:128:0", epochs=50), seeds=[0])))
    env = dict(os.environ, NLSAM_CACHE_DIR=str(tmp_path / "cache"))
    proc = subprocess.Popen(
        [sys.executable, "-m", "nlsam", "study", str(study), "--out", str(tmp_path / "out")],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    run = tmp_path / "out" / "runs" / "seed=0"
    deadline = time.time() + 120
    while lock_holder(run) is None and time.time() < deadline:
        time.sleep(0.2)
    child = lock_holder(run)
    assert child is not None and child != proc.pid
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    deadline = time.time() + 30
    while _alive(child) and time.time() < deadline:
        time.sleep(0.2)
    assert not _alive(child), "the trainer outlived its study"
    # the run is free again: the same study resumes it without a second trainer interleaving
    while True:
        try:
            with lock_run_dir(run):
                break
        except RunDirInUseError:
            assert time.time() < deadline, "the run directory stayed locked after its trainer died"
            time.sleep(0.2)


def _alive(pid: int) -> bool:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False
    return "\nState:\tZ" not in status


def test_study_counts_a_run_done_from_its_checkpoint_and_repairs_it(tmp_path, monkeypatch):
    study_file = tmp_path / "s.yaml"
    study_file.write_text(yaml.safe_dump(dict(base=dict(TINY, epochs=1), seeds=[0])))
    study = load_study(study_file, out=tmp_path / "out")
    run = study.runs[0]
    monkeypatch.setattr(
        train_module,
        "_checkpoint_hook",
        lambda where: (_ for _ in ()).throw(Killed) if where == "before metrics.jsonl" else None,
    )
    with pytest.raises(Killed):
        train(run.config)
    assert not (run.run_dir / "metrics.jsonl").exists() and run_state(run) == "done"
    execute_study(study, dry_run=True, log=lambda *_: None)  # writes study.yaml, changes no run
    from nlsam.analysis.report import write_report

    write_report(study.out)  # reads the run from last.pt before anything repaired it
    assert ",done," in (study.out / "runs.csv").read_text()
    logged = []
    counts = execute_study(study, log=logged.append)
    assert counts == dict(done=1, failed=0, ran=0, waiting=0)
    assert any("repaired seed=0: rewrote metrics.jsonl" in line for line in logged)
    assert _metric_epochs(run.run_dir) == [1]


# ----------------------------------------------------------------------------- resume rules
@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    out = tmp_path_factory.mktemp("finished") / "run"
    train(tiny_config(out, epochs=1))
    return out


def test_resume_refuses_changed_settings_from_flags_and_files(finished, tmp_path, capsys):
    before = (finished / "config.yaml").read_text()
    assert main(["train", "--out", str(finished), "--resume", "--lr", "0.5", "--epochs", "3"]) == 2
    err = capsys.readouterr().err
    assert "cannot resume" in err and "lr (saved 0.1, now 0.5)" in err and "start a new run with another --out" in err
    other = tmp_path / "other.yaml"
    other.write_text("model: resnet32\nattention: se\n")
    assert main(["train", "-c", str(other), "--out", str(finished), "--resume"]) == 2
    err = capsys.readouterr().err
    assert "model (saved 'resnet20', now 'resnet32')" in err and "attention (saved 'nlsam', now 'se')" in err
    assert (finished / "config.yaml").read_text() == before
    assert load_checkpoint(finished / "last.pt")["config"]["lr"] == 0.1


def test_resume_takes_the_same_data_by_another_path_but_not_other_data(tmp_path, monkeypatch):
    from nlsam.engine import resume_changes

    (tmp_path / "data").mkdir()
    for name in ("a.zip", "b.zip"):
        (tmp_path / "data" / name).write_bytes(b"PK")
    monkeypatch.chdir(tmp_path / "data")
    saved = {**TINY, "data": "../data/a.zip"}  # the run started elsewhere, naming its data relatively
    now = TrainConfig.from_dict({**TINY, "data": str(tmp_path / "data" / "a.zip")})
    assert resume_changes(saved, now) == {}
    other = TrainConfig.from_dict({**TINY, "data": str(tmp_path / "data" / "b.zip")})
    with pytest.raises(ValueError, match=r"changed data \(saved '../data/a.zip'"):
        resume_changes(saved, other)
    with pytest.raises(ValueError, match="changed data"):  # the saved file is gone: not provably the same
        resume_changes({**TINY, "data": "../gone/a.zip"}, now)


def test_resume_honours_more_epochs_and_says_so(finished, tmp_path, capsys):
    import shutil

    run = tmp_path / "run"
    shutil.copytree(finished, run)
    config = yaml.safe_load((run / "config.yaml").read_text())
    config["out"] = str(run)
    (run / "config.yaml").write_text(yaml.safe_dump(config))
    capsys.readouterr()
    assert main(["train", "--out", str(run), "--resume", "--epochs", "2"]) == 0
    out = capsys.readouterr().out
    assert "resume: epochs changed from 1 to 2" in out and "resuming" in out
    assert _metric_epochs(run) == [1, 2]
    assert yaml.safe_load((run / "config.yaml").read_text())["epochs"] == 2


def test_peek_reads_a_checkpoint_without_loading_it(finished):
    state = peek_checkpoint(finished / "last.pt")
    assert state["epoch"] == 0 and state["history"][0]["epoch"] == 1
    assert peek_checkpoint(finished / "missing.pt") is None
