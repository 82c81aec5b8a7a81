"""Training throughput of CIFAR ResNets with and without NL-SAM, the data pipeline alone, and
our ResNet-110 beside a public reference implementation, measured side by side in one process.

    python benchmarks/train_speed.py --reference-dir PATH/TO/pytorch_resnet_cifar10 \
        --out docs/benchmarks/train_speed.md

``--reference-dir`` is a checkout of a reference CIFAR ResNet (a directory holding a
``resnet.py`` with ``resnet20/56/110`` builders, e.g. Yerlan Idelbayev's
pytorch_resnet_cifar10); it is imported from there, not copied. Each variant does the same
training step (forward, cross-entropy, backward, SGD with momentum) on the same batch; variants
are timed round-robin several times and the median is kept, so machine noise hits all alike.
Speed ratios within one table are the figures to compare; absolute figures depend on the machine.
"""
from __future__ import annotations

import argparse
import importlib.util
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Callable, Dict, List

import torch
import torch.nn.functional as F
from torch import nn

import nlsam
from nlsam.data import build_data


def train_step_timer(model: nn.Module, batch: int, channels_last: bool, steps: int) -> Callable[[], float]:
    """Return a function that runs ``steps`` training steps and gives images per second."""
    x = torch.randn(batch, 3, 32, 32)
    y = torch.randint(0, 10, (batch,))
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    model.train()
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-4)

    def step() -> None:
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    step()  # warm-up

    def run() -> float:
        start = time.perf_counter()
        for _ in range(steps):
            step()
        return batch * steps / (time.perf_counter() - start)

    return run


def load_reference(directory: Path):
    path = directory / "resnet.py"
    if not path.is_file():
        raise SystemExit(f"--reference-dir {directory} has no resnet.py")
    spec = importlib.util.spec_from_file_location("reference_resnet", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def measure(timers: Dict[str, Callable[[], float]], rounds: int) -> Dict[str, List[float]]:
    """Time every variant once per round, round-robin, and return each one's images/s per round."""
    samples: Dict[str, List[float]] = {name: [] for name in timers}
    for _ in range(rounds):
        for name, timer in timers.items():
            samples[name].append(timer())
    return samples


def paired_overhead(samples: Dict[str, List[float]], variant: str, base: str = "plain") -> List[float]:
    """Per-round time overhead of ``variant`` over ``base`` in %: each round's two timings ran
    back to back, so a slow spell of the machine hits both and cancels in their ratio."""
    return [100.0 * (b / v - 1.0) for b, v in zip(samples[base], samples[variant])]


def data_pipeline_speed(data: str, batch: int, epochs: int) -> float:
    bundle = build_data(data, batch_size=batch, channels_last=True)
    seen, start = 0, time.perf_counter()
    for epoch in range(epochs):
        bundle.train_loader.set_epoch(epoch)
        for images, labels in bundle.train_loader:
            seen += labels.shape[0]
    return seen / (time.perf_counter() - start)


def _shown_args(args: argparse.Namespace) -> List[str]:
    """The command line, with the reference checkout shown by name only (paths differ per machine)."""
    shown = [sys.argv[0]]
    skip = False
    for arg in sys.argv[1:]:
        if skip:
            shown.append(f"PATH/TO/{args.reference_dir.name}")
            skip = False
        else:
            shown.append(arg)
            skip = arg == "--reference-dir"
    return shown


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=["resnet20", "resnet56", "resnet110"])
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--steps", type=int, default=5, help="training steps per timing")
    parser.add_argument("--rounds", type=int, default=3, help="round-robin repetitions (median kept)")
    parser.add_argument("--reference-dir", type=Path, default=None)
    parser.add_argument("--data", default="builtin", help="dataset for the pipeline-only measurement")
    parser.add_argument("--no-channels-last", action="store_true")
    parser.add_argument("--out", type=Path, default=None, help="write the Markdown table here")
    args = parser.parse_args()
    channels_last = not args.no_channels_last

    rows = []
    for name in args.models:
        timers = {
            "plain": train_step_timer(nlsam.create_model(name), args.batch_size, channels_last, args.steps),
            "nlsam": train_step_timer(
                nlsam.create_model(name, attention="nlsam"), args.batch_size, channels_last, args.steps
            ),
        }
        if args.reference_dir is not None:
            reference = load_reference(args.reference_dir)
            if hasattr(reference, name):
                timers["reference"] = train_step_timer(
                    getattr(reference, name)(), args.batch_size, channels_last, args.steps
                )
        samples = measure(timers, args.rounds)
        speed = {k: statistics.median(v) for k, v in samples.items()}
        rows.append((name, speed, paired_overhead(samples, "nlsam")))
        print(name, {k: round(v, 1) for k, v in speed.items()}, flush=True)
    pipeline = data_pipeline_speed(args.data, args.batch_size, 2)

    lines = [
        "# Training throughput, CIFAR ResNets (CPU)",
        "",
        f"Command: `python {' '.join(_shown_args(args))}`",
        "",
        f"Machine: {platform.processor() or platform.machine()}, {torch.get_num_threads()} threads, "
        f"torch {torch.__version__}, batch {args.batch_size}, 32x32, "
        f"{'channels_last' if channels_last else 'contiguous'}; median of {args.rounds} rounds x {args.steps} steps. "
        "NL-SAM's overhead is the median of the per-round ratios (each round times both networks back "
        "to back), with the lowest and highest round in brackets.",
        "",
        "Reference: Yerlan Idelbayev's pytorch_resnet_cifar10 (`resnet.py`, option A shortcuts, the "
        "same architecture and parameter count), imported from a checkout, not copied.",
        "",
        "| model | plain img/s | + NL-SAM img/s | NL-SAM time overhead [range] | reference img/s | ours / reference |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for name, speed, overheads in rows:
        ref = speed.get("reference")
        lines.append(
            f"| {name} | {speed['plain']:.0f} | {speed['nlsam']:.0f} | {statistics.median(overheads):+.1f}% "
            f"[{min(overheads):+.1f}, {max(overheads):+.1f}] | "
            + (f"{ref:.0f} | {speed['plain'] / ref:.2f} |" if ref else "- | - |")
        )
    lines += ["", f"Data pipeline alone (`{args.data}`, batched crop + flip + normalise, 2 epochs): "
              f"{pipeline:.0f} images/s.", ""]
    text = "\n".join(lines)
    print(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text)


if __name__ == "__main__":
    main()
