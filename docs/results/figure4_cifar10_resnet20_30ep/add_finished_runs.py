"""Bring a study directory's finished runs into this folder, without checkpoints.

For each run ``nlsam study`` counts as done: its ``config.yaml``, ``metrics.jsonl`` and
``meta.json`` go to ``runs/NAME/``, its config to ``configs/`` and its log to ``logs/``, with the
machine's paths shortened (the data to ``../shared/data/NAME``, the study directory the run
trained in to ``studies/figure4_cifar10_resnet20_30ep``, the home folder to ``~``). Unfinished
runs are left out. Then, from the repository root,
``nlsam report docs/results/figure4_cifar10_resnet20_30ep`` writes the report.

    python docs/results/figure4_cifar10_resnet20_30ep/add_finished_runs.py STUDY_DIR
"""
import sys
from pathlib import Path

from nlsam.engine.config import load_yaml
from nlsam.engine.study import load_study, run_state

HERE = Path(__file__).resolve().parent
SHORT_STUDY = "studies/figure4_cifar10_resnet20_30ep"


def shorten(text: str, study_dir_then: Path, data: str) -> str:
    if data:
        text = text.replace(data, "../shared/data/" + Path(data).name)
    return text.replace(str(study_dir_then), SHORT_STUDY).replace(str(Path.home()) + "/", "~/")


def main(study_dir: Path) -> None:
    study = load_study(study_dir / "study.yaml", out=study_dir)
    for run in study.runs:
        if run_state(run) != "done":
            print(f"not finished, left out: {run.name}")
            continue
        # the paths as the run recorded them where it trained (the study may have moved since)
        recorded = load_yaml(run.run_dir / "config.yaml")
        study_dir_then = Path(str(recorded["out"])).parent.parent
        data = str(recorded.get("data") or "")
        out = HERE / "runs" / run.name
        out.mkdir(parents=True, exist_ok=True)
        for name in ("config.yaml", "metrics.jsonl", "meta.json"):
            (out / name).write_text(shorten((run.run_dir / name).read_text(), study_dir_then, data))
        for sub, suffix in (("configs", ".yaml"), ("logs", ".log")):
            source = study_dir / sub / f"{run.name}{suffix}"
            if source.is_file():
                (HERE / sub).mkdir(exist_ok=True)
                (HERE / sub / source.name).write_text(shorten(source.read_text(), study_dir_then, data))
        print(f"added {run.name}")


if __name__ == "__main__":
    main(Path(sys.argv[1]))
