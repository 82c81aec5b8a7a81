"""Does ``nlsam train --compile`` pay on the CPU? Compile time and steady speed of ``nlsam
train``'s real training loop, eager against ``torch.compile``, and what they add up to over a run.

    python benchmarks/compile_payoff.py --data ../shared/data/cifar10-jpg.zip \\
        --out docs/benchmarks/compile_payoff.md

For each network (plain and NL-SAM) and precision, two copies of the same training set-up run
through ``nlsam.engine.Optimisation.train_epoch`` (the loop of ``nlsam train``) on the same batches: one eager,
one with ``compile: true``. The compiled copy's first timing includes compilation; its compile
time is that timing minus what the same batches take once compiled. Steady speeds are medians
of paired rounds (eager and compiled back to back). A run of ``--epochs`` epochs of the data then
takes ``epochs * images / speed`` eager and that plus the compile time compiled; the evaluation
after each epoch is the same for both (``nlsam train`` evaluates the uncompiled network), so it
is left out of both. The per-run figures are computed from the measured ones, not timed runs.
"""

from __future__ import annotations

import argparse
import importlib.util
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

import torch

from nlsam.engine import AMP_MODES, resolve_amp, resolve_config

SCRIPT = "benchmarks/compile_payoff.py"
HERE = Path(__file__).resolve().parent


def _train_speed():
    """benchmarks/train_speed.py, for its batch stream and its timer of nlsam train's loop."""
    spec = importlib.util.spec_from_file_location("_nlsam_train_speed", HERE / "train_speed.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default=None, help="dataset (default: the CIFAR-10 zip beside the repo, else builtin)")
    p.add_argument("--models", nargs="+", default=["resnet20", "resnet56", "resnet110"])
    p.add_argument("--attention", nargs="+", default=["none", "nlsam"])
    p.add_argument("--amp", nargs="+", default=["auto"], choices=AMP_MODES)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--steps", type=int, default=20, help="batches per timing")
    p.add_argument("--epochs", type=int, default=30, help="run length the totals are computed for")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--out", type=Path, default=None)
    args = p.parse_args(argv)
    _train_speed().require_positive(p, args, ("rounds", "steps", "epochs", "batch_size"))
    return args


def main(argv: Optional[Sequence[str]] = None) -> str:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    ts = _train_speed()
    data_spec, data, stream = ts.our_data(args.data, args.batch_size)
    rows: List[Dict[str, Any]] = []
    torch.manual_seed(0)
    with tempfile.TemporaryDirectory(prefix="compile_payoff-") as run_dir:
        for model in args.models:
            for attention in args.attention:
                for mode in args.amp:
                    dtype = resolve_amp(mode, torch.device("cpu"))
                    timers = {}
                    for compiled in (False, True):
                        cfg = resolve_config(
                            ts.DEFAULT_CONFIG,
                            dict(
                                data=data_spec,
                                model=model,
                                attention=None if attention == "none" else attention,
                                amp=mode,
                                device="cpu",
                                batch_size=args.batch_size,
                                compile=compiled,
                            ),
                        )
                        timers[compiled] = ts.our_timer(cfg, data, stream, dtype, Path(run_dir))
                    timers[False](0, 2)  # eager warm-up
                    images, first = timers[True](0, args.steps)  # compiles
                    speeds: Dict[bool, List[float]] = {False: [], True: []}
                    for r in range(args.rounds):
                        for compiled in (False, True) if r % 2 == 0 else (True, False):
                            n, seconds = timers[compiled](r + 1, args.steps)
                            speeds[compiled].append(n / seconds)
                    eager, fast = statistics.median(speeds[False]), statistics.median(speeds[True])
                    compile_s = max(0.0, first - images / fast)
                    total = args.epochs * (data.num_train // args.batch_size) * args.batch_size  # drop_last
                    row = dict(
                        model=model,
                        attention=attention,
                        precision=ts.dtype_name(dtype),
                        eager=eager,
                        compiled=fast,
                        compile_s=compile_s,
                        eager_run=total / eager,
                        compiled_run=compile_s + total / fast,
                        ratios=[c / e for e, c in zip(speeds[False], speeds[True])],
                    )
                    rows.append(row)
                    print(
                        f"{model} {attention} {row['precision']}: eager {eager:.0f}, compiled {fast:.0f} img/s, "
                        f"compile {compile_s:.0f} s",
                        file=sys.stderr,
                        flush=True,
                    )
    text = render(argv, args, ts.machine_and_data(data, data_spec, args.batch_size), rows)
    print(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text)
    return text


def render(argv: Sequence[str], args: argparse.Namespace, setting: str, rows: List[Dict[str, Any]]) -> str:
    """The page; ``setting`` is the machine-and-data line (``train_speed.machine_and_data``)."""
    lines = [
        "# `--compile` on the CPU: compile time against steady speed",
        "",
        f"Command: `python {SCRIPT} {' '.join(argv)}`",
        "",
        f"{setting}; median of {args.rounds} paired rounds x {args.steps} batches.",
        "",
        f"Run totals are for {args.epochs} epochs of training (evaluation excluded, the same for both), "
        "computed from the measured speeds and compile time.",
        "",
        f"| model | attention | precision | eager img/s | compiled img/s | speed-up [range] | compile s | "
        f"{args.epochs}-epoch run eager | compiled | run speed-up |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        q = r["ratios"]
        lines.append(
            f"| {r['model']} | {r['attention']} | {r['precision']} | {r['eager']:.0f} | {r['compiled']:.0f} | "
            f"{statistics.median(q):.2f}x [{min(q):.2f}, {max(q):.2f}] | {r['compile_s']:.0f} | "
            f"{r['eager_run'] / 60:.1f} min | {r['compiled_run'] / 60:.1f} min | {r['eager_run'] / r['compiled_run']:.2f}x |"
        )
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
