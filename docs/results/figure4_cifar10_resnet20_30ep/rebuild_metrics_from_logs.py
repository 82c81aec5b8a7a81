"""Rebuild a finished run's ``metrics.jsonl`` from its training log.

The run folders of this study's four seed-0 runs were lost with the machine they trained on;
their logs (``logs/``) survived. A log prints every figure ``metrics.jsonl`` holds, once per
epoch (losses to 4 decimals, accuracies to 2, img/s to the unit, epoch time to 0.1 s); the
learning rate is the one the epoch's last progress line prints, and ``best_top1`` the running
maximum of the test top-1. The precision the log's first line names (``amp bfloat16``; none:
float32) goes into the run's ``meta.json``, which the study's other runs wrote for the same data.
``nlsam report`` on the rebuilt folders gives the figures the study's report gave before the
loss, figure for figure.

    python rebuild_metrics_from_logs.py logs runs
"""

import json
import re
import sys
from pathlib import Path

EPOCH = re.compile(
    r"^epoch (\d+)/(\d+): train loss ([\d.]+) top1 ([\d.]+)% \| test loss ([\d.]+) "
    r"top1 ([\d.]+)% top5 ([\d.]+)% \| (\d+) img/s, ([\d.]+) s$"
)
PROG = re.compile(r"^epoch (\d+)/\d+ \[(\d+)/(\d+)\] loss [\d.]+ lr (\S+) ")


def rebuild(log: Path, run_dir: Path) -> int:
    rows, lr, best = [], {}, 0.0
    for line in log.read_text().splitlines():
        m = PROG.match(line)
        if m:
            lr[int(m[1])] = float(m[4])
            continue
        m = EPOCH.match(line)
        if m:
            e, top1 = int(m[1]), float(m[6])
            best = max(best, top1)
            rows.append(
                dict(
                    epoch=e,
                    lr=lr.get(e),
                    train_loss=float(m[3]),
                    train_top1=float(m[4]),
                    test_loss=float(m[5]),
                    test_top1=top1,
                    test_top5=float(m[7]),
                    best_top1=best,
                    images_per_s=float(m[8]),
                    epoch_time_s=float(m[9]),
                )
            )
    assert [r["epoch"] for r in rows] == list(range(1, len(rows) + 1)), log
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    meta_file = run_dir / "meta.json"
    if meta_file.is_file():
        header = log.read_text().splitlines()[0]
        amp = re.search(r", amp (\w+)$", header)
        meta = json.loads(meta_file.read_text())
        meta["precision"] = amp[1] if amp else "float32"
        meta_file.write_text(json.dumps(meta, indent=1))
    return len(rows)


if __name__ == "__main__":
    logs, out = Path(sys.argv[1]), Path(sys.argv[2])
    for log in sorted(logs.glob("*.log")):
        print(log.stem, rebuild(log, out / log.stem), "epochs")
