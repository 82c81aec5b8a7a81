"""NL-SAM's compiled forward (``nlsam.attention.set_compiled_forward``) against the eager
formulation: the module alone, and inside ``nlsam train``'s real training loop.

    python benchmarks/nlsam_compiled.py --data ../shared/data/cifar10-jpg.zip \\
        --out docs/benchmarks/nlsam_compiled.md

Module: forward + backward of one NL-SAM at the shape of each stage it sits in (batch
``--batch-size``), eager and compiled, median of paired rounds. Network: three copies of the same
training set-up run ``nlsam.engine.Optimisation.train_epoch`` (the loop of ``nlsam train``) on the same
batches, the plain network, NL-SAM eager and NL-SAM compiled, one after another in each round
(order alternating); NL-SAM's overhead over the plain network is the median of the per-round
ratios, with their range. The compile time is the first timing of the compiled copy, from an
empty compile cache (in memory and, switched off for this script, inductor's on-disk cache), minus what the same batches take once compiled (in the network: the
training graphs of every NL-SAM configuration, forward and backward; evaluation compiles once
more, without gradients).
"""

from __future__ import annotations

import argparse
import copy
import importlib.util
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import torch
import torch._inductor.config as inductor_config

import nlsam
from nlsam.attention import NLSAM, set_compiled_forward
from nlsam.engine import AMP_MODES, resolve_amp, resolve_config

SCRIPT = "benchmarks/nlsam_compiled.py"
HERE = Path(__file__).resolve().parent
VARIANTS = ("plain", "eager", "compiled")


def _train_speed():
    """benchmarks/train_speed.py, for its batch stream, its timer of nlsam train's loop and its
    paired-round helpers."""
    spec = importlib.util.spec_from_file_location("_nlsam_train_speed", HERE / "train_speed.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default=None, help="dataset (default: the CIFAR-10 zip beside the repo, else builtin)")
    p.add_argument("--models", nargs="+", default=["resnet20", "resnet110"])
    p.add_argument("--amp", nargs="+", default=["off", "auto"], choices=AMP_MODES)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--steps", type=int, default=15, help="batches per network timing")
    p.add_argument("--module-reps", type=int, default=30, help="forward + backward passes per module timing")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--out", type=Path, default=None)
    args = p.parse_args(argv)
    _train_speed().require_positive(p, args, ("rounds", "steps", "module_reps", "batch_size"))
    return args


def nlsam_shapes(model: torch.nn.Module, image_size: int) -> List[Tuple[NLSAM, int]]:
    """One NL-SAM per distinct configuration in ``model``, with the channel count it sees."""
    found: Dict[Tuple[Any, ...], Tuple[NLSAM, int]] = {}

    def record(module: NLSAM, inputs: Tuple[torch.Tensor, ...], output: torch.Tensor) -> None:
        channels = inputs[0].shape[1]
        found.setdefault((module.feature_size, module.pool, module.reduction, channels), (module, channels))

    hooks = [m.register_forward_hook(record) for m in model.modules() if isinstance(m, NLSAM)]
    with torch.no_grad():
        model.eval()(torch.zeros(1, 3, image_size, image_size))
    for hook in hooks:
        hook.remove()
    return list(found.values())


def module_timer(module: NLSAM, channels: int, batch: int, dtype: Optional[torch.dtype], reps: int):
    """``run() -> ms`` per forward + backward of ``module`` on a channels-last batch."""
    height, width = module.feature_size
    x0 = torch.randn(batch, channels, height, width).contiguous(memory_format=torch.channels_last)
    if dtype is not None:
        x0 = x0.to(dtype)
    grad = torch.randn_like(x0)

    def run() -> float:
        start = time.perf_counter()
        for _ in range(reps):
            x = x0.detach().requires_grad_(True)
            with torch.autocast("cpu", dtype=dtype or torch.bfloat16, enabled=dtype is not None):
                y = module(x)
            y.backward(grad)
        return (time.perf_counter() - start) / reps * 1e3

    return run


def measure_modules(args: argparse.Namespace, model_name: str, dtype: Optional[torch.dtype]) -> List[Dict[str, Any]]:
    rows = []
    model = nlsam.create_model(model_name, attention="nlsam")
    for module, channels in nlsam_shapes(model, 32):
        eager = copy.deepcopy(module).train()
        compiled = copy.deepcopy(module).train()
        set_compiled_forward(compiled)
        timers = {
            False: module_timer(eager, channels, args.batch_size, dtype, args.module_reps),
            True: module_timer(compiled, channels, args.batch_size, dtype, args.module_reps),
        }
        torch._dynamo.reset()  # so the compile time is this configuration's own, not a cached graph's
        start = time.perf_counter()
        timers[True]()  # compiles
        first = time.perf_counter() - start
        timers[False]()
        times: Dict[bool, List[float]] = {False: [], True: []}
        for r in range(args.rounds):
            for key in (False, True) if r % 2 == 0 else (True, False):
                times[key].append(timers[key]())
        ratios = [e / c for e, c in zip(times[False], times[True])]
        rows.append(
            dict(
                model=model_name,
                shape=f"{channels} x {module.feature_size[0]} x {module.feature_size[1]}",
                eager=statistics.median(times[False]),
                compiled=statistics.median(times[True]),
                ratios=ratios,
                compile_s=max(0.0, first - args.module_reps * statistics.median(times[True]) / 1e3),
            )
        )
    return rows


def main(argv: Optional[Sequence[str]] = None) -> str:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    ts = _train_speed()
    data_spec, data, stream = ts.our_data(args.data, args.batch_size)
    module_rows: List[Dict[str, Any]] = []
    network_rows: List[Dict[str, Any]] = []
    torch.manual_seed(0)
    # compile times as a first use pays them: without inductor's on-disk cache of earlier runs
    with (
        inductor_config.patch(force_disable_caches=True),
        tempfile.TemporaryDirectory(prefix="nlsam_compiled-") as run_dir,
    ):
        for model in args.models:
            for dtype, label in ts.precisions(args.amp):
                for row in measure_modules(args, model, dtype):
                    module_rows.append(dict(row, precision=label))
                    print(
                        f"module {model} {row['shape']} {label}: eager {row['eager']:.3f} ms, compiled "
                        f"{row['compiled']:.3f} ms",
                        file=sys.stderr,
                        flush=True,
                    )
                mode = next(m for m in args.amp if resolve_amp(m, torch.device("cpu")) == dtype)
                timers = {}
                for variant in VARIANTS:
                    cfg = resolve_config(
                        ts.DEFAULT_CONFIG,
                        dict(
                            data=data_spec,
                            model=model,
                            attention=None if variant == "plain" else "nlsam",
                            amp=mode,
                            device="cpu",
                            batch_size=args.batch_size,
                        ),
                    )
                    timers[variant] = ts.our_timer(
                        cfg, data, stream, dtype, Path(run_dir), compiled_nlsam=variant == "compiled"
                    )
                torch._dynamo.reset()
                images, first = timers["compiled"](0, args.steps)  # compiles
                samples = ts.measure(
                    timers,
                    lambda r: list(VARIANTS if r % 2 == 0 else VARIANTS[::-1]),
                    args.rounds,
                    args.steps,
                    warmup=2,
                )
                compiled_speed = statistics.median(samples["compiled"])
                row = dict(
                    model=model,
                    precision=label,
                    speeds={v: statistics.median(samples[v]) for v in VARIANTS},
                    eager_overhead=ts.paired_overhead(samples, "eager", "plain"),
                    compiled_overhead=ts.paired_overhead(samples, "compiled", "plain"),
                    gain=[c / e for e, c in zip(samples["eager"], samples["compiled"])],
                    compile_s=max(0.0, first - images / compiled_speed),
                )
                network_rows.append(row)
                print(
                    f"network {model} {label}: "
                    + ", ".join(f"{v} {s:.0f}" for v, s in row["speeds"].items())
                    + " img/s",
                    file=sys.stderr,
                    flush=True,
                )
    text = render(argv, args, ts.machine_and_data(data, data_spec, args.batch_size), module_rows, network_rows)
    print(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text)
    return text


def _median_range(values: Sequence[float], fmt: str, unit: str) -> str:
    return f"{fmt.format(statistics.median(values))}{unit} [{fmt.format(min(values))}, {fmt.format(max(values))}]"


def render(
    argv: Sequence[str],
    args: argparse.Namespace,
    setting: str,
    module_rows: List[Dict[str, Any]],
    network_rows: List[Dict[str, Any]],
) -> str:
    """The page; ``setting`` is the machine-and-data line (``train_speed.machine_and_data``)."""
    lines = [
        "# NL-SAM's compiled forward against the eager formulation",
        "",
        f"Command: `python {SCRIPT} {' '.join(argv)}`",
        "",
        f"{setting}; medians of {args.rounds} paired rounds, [range] over the rounds. "
        "Compile times are first-use ones: caches emptied, inductor's on-disk cache off.",
        "",
        f"## The module alone: forward + backward, {args.module_reps} passes per timing",
        "",
        "| model | input (C x H x W) | precision | eager ms | compiled ms | speed-up [range] | compile s |",
        "|---|---|---|---:|---:|---:|---:|",
    ]
    for r in module_rows:
        lines.append(
            f"| {r['model']} | {r['shape']} | {r['precision']} | {r['eager']:.3f} | {r['compiled']:.3f} | "
            f"{_median_range(r['ratios'], '{:.2f}', 'x')} | {r['compile_s']:.0f} |"
        )
    lines += [
        "",
        f"## In `nlsam train`'s training loop: {args.steps} batches per timing",
        "",
        "| model | precision | plain img/s | NL-SAM eager | NL-SAM compiled | overhead eager [range] | "
        "overhead compiled [range] | compiled / eager [range] | compile s |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in network_rows:
        s = r["speeds"]
        lines.append(
            f"| {r['model']} | {r['precision']} | {s['plain']:.0f} | {s['eager']:.0f} | {s['compiled']:.0f} | "
            f"{_median_range(r['eager_overhead'], '{:+.1f}', '%')} | {_median_range(r['compiled_overhead'], '{:+.1f}', '%')} | "
            f"{_median_range(r['gain'], '{:.2f}', 'x')} | {r['compile_s']:.0f} |"
        )
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
