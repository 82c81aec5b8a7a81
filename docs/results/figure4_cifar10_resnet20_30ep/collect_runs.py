"""Bring a study directory's runs into this folder: the finished ones for the page, the
unfinished ones with their last checkpoint, so that the next machine resumes them.

The study gets a 2-core machine a few hours at a time, and a machine that goes takes its disk
with it. So each run that has started is kept here, with the machine's paths shortened (the
data to ``../shared/data/NAME``, the study directory the run trained in to
``studies/figure4_cifar10_resnet20_30ep``, the home folder to ``~``):

- a finished run (``nlsam study`` counts it as done): ``config.yaml``, ``metrics.jsonl`` and
  ``meta.json`` go to ``runs/NAME/``, its config to ``configs/`` and its log to ``logs/``; its
  final weights (the state dict of ``last.pt``, about 1.1 MB for a ResNet-20) go to
  ``runs/NAME/model.safetensors``, the rest of the checkpoint (optimiser, random states) does
  not. Its folder under ``unfinished/`` is removed.
- an unfinished run with a checkpoint (``partial``): the same files and ``last.pt`` go to
  ``unfinished/runs/NAME/``, its config and log to ``unfinished/configs/`` and ``unfinished/logs/``. The checkpoint's recorded data
  path is shortened too, so resume the study with ``--set data=../shared/data/NAME`` from a
  checkout beside ``shared/`` (a resumed run refuses data other than its own; at c110e5a, where
  the study is pinned, it refuses any other path to the same file too).

Runs not started are left out. Then, from the repository root,
``nlsam report docs/results/figure4_cifar10_resnet20_30ep`` writes the report.

    python docs/results/figure4_cifar10_resnet20_30ep/collect_runs.py STUDY_DIR
"""

import shutil
import sys
from pathlib import Path

from nlsam.engine.checkpoint import load_checkpoint, save_checkpoint
from nlsam.engine.config import load_yaml
from nlsam.engine.study import load_study, run_state

HERE = Path(__file__).resolve().parent
SHORT_STUDY = "studies/figure4_cifar10_resnet20_30ep"
RUN_FILES = ("config.yaml", "metrics.jsonl", "meta.json")


def shorten(text: str, study_dir_then: Path, data: str) -> str:
    if data:
        text = text.replace(data, short_data(data))
    return text.replace(str(study_dir_then), SHORT_STUDY).replace(str(Path.home()) + "/", "~/")


def short_data(data: str) -> str:
    return "../shared/data/" + Path(data).name if data else data


def copy_run(study_dir: Path, run, dest: Path) -> None:
    """The run's files (and its config and log, where the study has them) into ``dest``, which
    mirrors a study directory: ``runs/NAME/``, ``configs/NAME.yaml``, ``logs/NAME.log``."""
    # the paths as the run recorded them where it trained (the study may have moved since)
    recorded = load_yaml(run.run_dir / "config.yaml")
    study_dir_then = Path(str(recorded["out"])).parent.parent
    data = str(recorded.get("data") or "")
    out = dest / "runs" / run.name
    out.mkdir(parents=True, exist_ok=True)
    for name in RUN_FILES:
        if (run.run_dir / name).is_file():
            (out / name).write_text(shorten((run.run_dir / name).read_text(), study_dir_then, data))
    for sub, suffix in (("configs", ".yaml"), ("logs", ".log")):
        source = study_dir / sub / f"{run.name}{suffix}"
        if source.is_file():
            (dest / sub).mkdir(parents=True, exist_ok=True)
            (dest / sub / source.name).write_text(shorten(source.read_text(), study_dir_then, data))


def keep_checkpoint(run, dest: Path) -> None:
    """``last.pt`` with its recorded data path shortened, written atomically."""
    state = load_checkpoint(run.run_dir / "last.pt")
    state["config"] = dict(state["config"], data=short_data(str(state["config"].get("data") or "")))
    save_checkpoint(state, dest / "runs" / run.name / "last.pt")


def keep_weights(run, dest: Path) -> bool:
    """The final weights of a finished run, ``runs/NAME/model.safetensors`` (written atomically);
    False when the run kept no checkpoint (the runs copied here before weights were kept)."""
    if not (run.run_dir / "last.pt").is_file():
        return False
    from safetensors.torch import save

    from nlsam._io import atomic_write_bytes

    weights = {k: v.detach().contiguous() for k, v in load_checkpoint(run.run_dir / "last.pt")["model"].items()}
    atomic_write_bytes(dest / "runs" / run.name / "model.safetensors", save(weights))
    return True


def main(study_dir: Path, here: Path = HERE) -> None:
    study = load_study(study_dir / "study.yaml", out=study_dir)
    unfinished = here / "unfinished"
    for run in study.runs:
        state = run_state(run)
        if state == "done":
            copy_run(study_dir, run, here)
            weights = keep_weights(run, here)
            for stale in (
                unfinished / "runs" / run.name,
                unfinished / "configs" / f"{run.name}.yaml",
                unfinished / "logs" / f"{run.name}.log",
            ):
                if stale.is_dir():
                    shutil.rmtree(stale)
                elif stale.is_file():
                    stale.unlink()
            print(f"added {run.name}" + (" with its final weights" if weights else ""))
        elif state == "partial":
            copy_run(study_dir, run, unfinished)
            keep_checkpoint(run, unfinished)
            print(f"kept unfinished {run.name} (to resume)")
    for folder in (unfinished / "runs", unfinished / "configs", unfinished / "logs", unfinished):
        if folder.is_dir() and not any(folder.iterdir()):
            folder.rmdir()


if __name__ == "__main__":
    main(Path(sys.argv[1]))
