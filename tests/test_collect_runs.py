"""The 30-epoch study's collect_runs.py: finished runs go to the page with their final weights
(safetensors) but no checkpoint, unfinished ones with a checkpoint whose paths name no machine, so
the next machine resumes them."""

from __future__ import annotations

import json

import torch

from nlsam.engine.checkpoint import load_checkpoint, save_checkpoint
from nlsam.engine.config import save_yaml
from nlsam.engine.study import load_study, run_state

SCRIPT = "docs/results/figure4_cifar10_resnet20_30ep/collect_runs.py"


def _make_run(run, data: str, epochs_done: int, checkpoint: bool) -> None:
    run.run_dir.mkdir(parents=True)
    config = dict(run.config.to_dict(), data=data)
    save_yaml(config, run.run_dir / "config.yaml")
    rows = [{"epoch": e, "test_top1": 50.0 + e} for e in range(1, epochs_done + 1)]
    (run.run_dir / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (run.run_dir / "meta.json").write_text(json.dumps({"data": "cifar10-jpg", "precision": "bfloat16"}))
    if checkpoint:
        state = {"model": {"w": torch.zeros(2)}, "config": config, "epoch": epochs_done - 1, "history": rows}
        save_checkpoint(state, run.run_dir / "last.pt")


def test_finished_runs_keep_their_weights_and_unfinished_ones_their_checkpoints(load_script, tmp_path):
    machine_data = str(tmp_path / "machine" / "data" / "cifar10-jpg.zip")
    study_dir = tmp_path / "machine" / "studies" / "s"
    study_dir.mkdir(parents=True)
    save_yaml(
        {
            "name": "s",
            "base": {"data": machine_data, "model": "resnet20", "epochs": 2},
            "grid": {"attention": [None, "nlsam"]},
            "seeds": [0, 1],
        },
        study_dir / "study.yaml",
    )
    study = load_study(study_dir / "study.yaml", out=study_dir)
    done, partial, _, not_started = study.runs
    _make_run(done, machine_data, epochs_done=2, checkpoint=True)
    _make_run(partial, machine_data, epochs_done=1, checkpoint=True)
    (study_dir / "logs").mkdir()
    (study_dir / "configs").mkdir()
    save_yaml(partial.config.to_dict(), study_dir / "configs" / f"{partial.name}.yaml")
    (study_dir / "logs" / f"{partial.name}.log").write_text(f"epoch 1/2 ... {machine_data}\n")
    assert [run_state(r) for r in (done, partial, not_started)] == ["done", "partial", "todo"]

    collect_runs = load_script(SCRIPT)
    page = tmp_path / "page"
    collect_runs.main(study_dir, here=page)

    assert sorted(p.name for p in (page / "runs" / done.name).iterdir()) == [
        "config.yaml",
        "meta.json",
        "metrics.jsonl",
        "model.safetensors",
    ]
    from safetensors.torch import load_file

    weights = load_file(str(page / "runs" / done.name / "model.safetensors"))
    assert list(weights) == ["w"] and torch.equal(weights["w"], torch.zeros(2))
    kept = page / "unfinished" / "runs" / partial.name
    assert sorted(p.name for p in kept.iterdir()) == ["config.yaml", "last.pt", "meta.json", "metrics.jsonl"]
    assert not (page / "runs" / partial.name).exists() and not (page / "runs" / not_started.name).exists()
    # no text and no checkpoint names the machine's folders
    for path in page.rglob("*"):
        if path.is_file() and path.suffix != ".pt":
            assert str(tmp_path) not in path.read_text(), path
    state = load_checkpoint(kept / "last.pt")
    assert state["config"]["data"] == "../shared/data/cifar10-jpg.zip"
    assert state["history"] == [{"epoch": 1, "test_top1": 51.0}]
    assert (
        page / "unfinished" / "logs" / f"{partial.name}.log"
    ).read_text() == "epoch 1/2 ... ../shared/data/cifar10-jpg.zip\n"

    # the run finishes on the next machine: it moves to runs/ and unfinished/ is gone
    (partial.run_dir / "metrics.jsonl").write_text('{"epoch": 1}\n{"epoch": 2}\n')
    (partial.run_dir / "last.pt").unlink()
    collect_runs.main(study_dir, here=page)
    assert (page / "runs" / partial.name / "metrics.jsonl").is_file()
    assert not (page / "runs" / partial.name / "model.safetensors").exists()  # it kept no checkpoint
    assert not (page / "unfinished").exists()
