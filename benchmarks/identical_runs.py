"""Fingerprints of a fixed set of short trainings, to show that a restructuring changes no result.

Each case trains a small network on the built-in data (or on a folder of 28 x 28 images this
script writes, which the network's NL-SAM cannot pool, so the run resizes them) and prints one
line: the case, the sha256 of its ``metrics.jsonl`` without the timing fields, and the sha256
of every tensor of its final ``last.pt`` (network, optimiser, scheduler). Run it on two commits
and compare the lines::

    python benchmarks/identical_runs.py --out /tmp/before     # on the old commit
    python benchmarks/identical_runs.py --out /tmp/after      # on the new one
    diff /tmp/before/fingerprints.txt /tmp/after/fingerprints.txt

The cases cover fp32 and bf16 (``--amp bf16``, which the CPU emulates where it lacks native
bf16: still deterministic), resumed and not, paired initialisation, ``init_from``, a model
option, and the resize of images that do not fit the network.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import subprocess
import sys
from pathlib import Path

import torch

_DATA = "builtin:384:128:0"
_COMMON = ["--data", _DATA, "--batch-size", "64", "--epochs", "2", "--log-every", "1000"]
_TIMING = ("images_per_s", "epoch_time_s")


def _cases(out: Path) -> list:
    folder = out / "small-images"
    return [
        ("fp32-nlsam", [["--attention", "nlsam", "--amp", "off"]]),
        ("bf16-se+nlsam", [["--attention", "se+nlsam", "--amp", "bf16"]]),
        ("fp32-plain-step", [["--attention", "none", "--amp", "off", "--scheduler", "step", "--milestones", "1"]]),
        (
            "fp32-cbam+nlsam-resumed",
            [
                ["--attention", "cbam+nlsam", "--amp", "off", "--epochs", "1"],
                ["--attention", "cbam+nlsam", "--amp", "off", "--resume"],
            ],
        ),
        (
            "bf16-nlsam-resumed",
            [["--attention", "nlsam", "--amp", "bf16", "--epochs", "1"], ["--attention", "nlsam", "--resume"]],
        ),
        ("fp32-ge-option", [["--attention", "ge+nlsam", "--amp", "off", "--model-option", "nlsam_reduction=8"]]),
        ("fp32-init-from", [["--attention", "nlsam", "--amp", "off", "--init-from", str(out / "fp32-plain-step")]]),
        ("fp32-resized", [["--attention", "nlsam", "--amp", "off", "--data", str(folder)]]),
    ]


def _small_images(folder: Path) -> None:
    """An ImageFolder of 28 x 28 PNGs (two classes, 48 train and 16 test images each)."""
    from PIL import Image

    generator = torch.Generator().manual_seed(0)
    for split, count in (("train", 48), ("test", 16)):
        for label in ("a", "b"):
            (folder / split / label).mkdir(parents=True, exist_ok=True)
            for i in range(count):
                pixels = torch.randint(0, 256, (28, 28, 3), generator=generator, dtype=torch.uint8)
                Image.fromarray(pixels.numpy()).save(folder / split / label / f"{i}.png")


def _fingerprint(run_dir: Path) -> str:
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    metrics = json.dumps([{k: v for k, v in row.items() if k not in _TIMING} for row in rows], sort_keys=True)
    state = torch.load(run_dir / "last.pt", map_location="cpu", weights_only=False)
    digest = hashlib.sha256()
    for part in ("model", "optimizer", "scheduler"):
        _hash_tree(state[part], digest)
    return f"metrics {hashlib.sha256(metrics.encode()).hexdigest()[:16]} state {digest.hexdigest()[:16]}"


def _hash_tree(value, digest) -> None:
    if isinstance(value, torch.Tensor):
        digest.update(value.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    elif isinstance(value, dict):
        for key in sorted(value, key=str):
            digest.update(str(key).encode())
            _hash_tree(value[key], digest)
    elif isinstance(value, (list, tuple)):
        for item in value:
            _hash_tree(item, digest)
    else:
        digest.update(repr(value).encode())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="an empty folder for the runs")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    _small_images(args.out / "small-images")
    lines = []
    for name, steps in _cases(args.out):
        run_dir = args.out / name
        for flags in steps:
            command = [sys.executable, "-m", "nlsam", "train", *_COMMON, *flags, "--out", str(run_dir)]
            subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
        lines.append(f"{name}: {_fingerprint(run_dir)}")
        print(lines[-1], flush=True)
    (args.out / "fingerprints.txt").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
