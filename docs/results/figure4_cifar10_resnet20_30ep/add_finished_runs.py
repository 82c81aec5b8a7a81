"""Bring a study directory's finished runs into this folder, without checkpoints.

For each run whose ``metrics.jsonl`` holds all its epochs: its ``config.yaml``, ``metrics.jsonl``
and ``meta.json`` go to ``runs/NAME/``, its config to ``configs/`` and its log to ``logs/``, with
the machine's paths shortened (the data to ``../shared/data/NAME``, the study directory to
``studies/figure4_cifar10_resnet20_30ep``, the home folder to ``~``). Unfinished runs are left out. Then, from the
repository root, ``nlsam report docs/results/figure4_cifar10_resnet20_30ep`` writes the report.

    python docs/results/figure4_cifar10_resnet20_30ep/add_finished_runs.py STUDY_DIR
"""
import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
SHORT_STUDY = "studies/figure4_cifar10_resnet20_30ep"


def shorten(text: str, study_dir: Path, data: str) -> str:
    if data:
        text = text.replace(data, "../shared/data/" + Path(data).name)
    text = text.replace(str(study_dir.resolve()), SHORT_STUDY).replace(str(study_dir), SHORT_STUDY)
    return text.replace(str(Path.home()) + "/", "~/")


def finished(run_dir: Path, epochs: int) -> bool:
    lines = (run_dir / "metrics.jsonl").read_text().splitlines() if (run_dir / "metrics.jsonl").is_file() else []
    return bool(lines) and json.loads(lines[-1])["epoch"] >= epochs


def main(study_dir: Path) -> None:
    for run_dir in sorted((study_dir / "runs").iterdir()):
        config = run_dir / "config.yaml"
        if not config.is_file():
            continue
        text = config.read_text()
        values = dict(line.split(": ", 1) for line in text.splitlines() if ": " in line and not line.startswith(" "))
        if not finished(run_dir, int(values["epochs"])):
            print(f"not finished, left out: {run_dir.name}")
            continue
        data = values.get("data", "").strip()
        recorded = values.get("out", "").strip()  # the study directory where the run trained
        if recorded.endswith(f"/runs/{run_dir.name}"):
            study_dir_then = Path(recorded[: -len(f"/runs/{run_dir.name}")])
        else:
            study_dir_then = study_dir
        out = HERE / "runs" / run_dir.name
        out.mkdir(parents=True, exist_ok=True)
        for name in ("config.yaml", "metrics.jsonl", "meta.json"):
            (out / name).write_text(shorten((run_dir / name).read_text(), study_dir_then, data))
        for sub, suffix in (("configs", ".yaml"), ("logs", ".log")):
            source = study_dir / sub / f"{run_dir.name}{suffix}"
            if source.is_file():
                (HERE / sub).mkdir(exist_ok=True)
                (HERE / sub / source.name).write_text(shorten(source.read_text(), study_dir_then, data))
        print(f"added {run_dir.name}")


if __name__ == "__main__":
    main(Path(sys.argv[1]))
