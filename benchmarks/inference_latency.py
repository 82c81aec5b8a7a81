"""Inference latency on the CPU of ResNets with and without NL-SAM: PyTorch eager beside the same
network exported by ``nlsam export --format onnx`` and run in onnxruntime.

    python benchmarks/inference_latency.py --out docs/benchmarks/inference_latency.md

Each network (``nlsam.create_model(NAME, attention=None)`` and ``attention="nlsam"``, random
weights with batch-norm statistics taken on random batches, eval mode, its native input size and
number of classes: 224x224 and 1000 for ``resnet50``; the NL-SAM network with the plain one's
weights wherever they share one) runs three or four ways on the same random batch:

* ``eager, contiguous``: the module under ``torch.inference_mode`` on an NCHW tensor;
* ``eager, channels_last``: a channels_last copy of the module on a channels_last tensor;
* ``eager, channels_last, bf16``: the same under bf16 autocast, where the CPU computes bf16
  natively (AVX512-BF16 or AMX-BF16; there ``nlsam eval`` and ``nlsam predict --amp auto`` run
  so); the page then also gives bf16's speed-up over float32;
* ``onnxruntime``: the file that ``nlsam export`` writes (the network is saved as a checkpoint
  and exported by :func:`nlsam.analysis.export.export_model`, check included), in an
  onnxruntime session on the CPU execution provider with ``intra_op_num_threads`` = ``--threads``.

The inputs are prepared once, outside the timings. Every variant is warmed up, then timed
round-robin ``--rounds`` times; a timing is ``--reps`` calls (by default as many as take about
1 s) and gives the time per call. Within each round plain and NL-SAM of the same runtime and
batch size run back to back (in alternating order from round to round), so a slow spell of the
machine hits both and cancels in their ratio: NL-SAM's overhead is the median of these per-round
ratios, with the lowest and highest round. The logits of onnxruntime and eager are compared once
per network, at the largest batch size. Ratios within one table are the figures to compare;
absolute figures depend on the machine.
"""

from __future__ import annotations

import argparse
import copy
import importlib
import re
import shlex
import statistics
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Dict, List, Optional, Sequence, Tuple

import torch
from torch import nn

import nlsam
from nlsam.engine import cpu_has_native_bf16, machine_name

sys.path.insert(0, str(Path(__file__).resolve().parent))  # _common, also when imported by path
from _common import (  # noqa: E402
    export_onnx,
    onnx_session,
    onnxruntime_version,
    plural,
    publish,
    set_batchnorm_statistics,
    share_weights,
)

if TYPE_CHECKING:
    import onnxruntime

#: the two networks of each model, in the order they are timed (and shown)
NETWORKS: Dict[str, Optional[str]] = {"plain": None, "nlsam": "nlsam"}
NETWORK_LABELS = {"plain": "plain", "nlsam": "+ NL-SAM"}
#: the runtimes, in the order they are timed (and shown)
RUNTIMES = ("eager, contiguous", "eager, channels_last", "eager, channels_last, bf16", "onnxruntime")
#: the runtime measured only where the CPU computes bf16 natively (what ``--amp auto`` picks there)
BF16_RUNTIME = "eager, channels_last, bf16"
#: seconds a timing aims at when --reps is not given
TARGET_SECONDS = 1.0
#: untimed calls of each variant before anything is measured
WARMUP_CALLS = 2

Call = Callable[[], object]


# ------------------------------------------------------------------------------------------
# the networks and their runners
# ------------------------------------------------------------------------------------------


def build_networks(name: str) -> Dict[str, nn.Module]:
    """``{"plain": ..., "nlsam": ...}``: the model without and with NL-SAM, the NL-SAM network
    with every weight the plain one has (:func:`share_weights`), with batch-norm statistics set
    on random batches (:func:`set_batchnorm_statistics`), in eval mode."""
    networks: Dict[str, nn.Module] = {}
    for net, attention in NETWORKS.items():
        model = nlsam.create_model(name, attention=attention)
        if networks:
            share_weights(model, networks["plain"])
        set_batchnorm_statistics(model, input_shape(model))
        networks[net] = model.eval()
    return networks


def input_shape(model: nn.Module) -> Tuple[int, int, int]:
    """(C, H, W) the network was built for (its ``in_chans`` and ``input_size``)."""
    return (int(model.in_chans), *(int(v) for v in model.input_size))


def to_channels_last(model: nn.Module) -> nn.Module:
    """A channels_last copy of ``model`` (the original is left as it is)."""
    return copy.deepcopy(model).to(memory_format=torch.channels_last)


def eager_call(model: nn.Module, x: torch.Tensor, channels_last: bool, amp: Optional[torch.dtype] = None) -> Call:
    """One forward pass of ``model`` under ``torch.inference_mode`` (and autocast to ``amp``, as
    ``nlsam predict`` and ``nlsam eval`` run with ``--amp``) on a contiguous or channels_last copy
    of ``x`` (made here, not timed); ``model`` is in that layout already."""
    x = x.contiguous(memory_format=torch.channels_last if channels_last else torch.contiguous_format)
    autocast = torch.autocast("cpu", dtype=amp, enabled=amp is not None)

    def call() -> torch.Tensor:
        with torch.inference_mode(), autocast:
            return model(x)

    return call


def onnx_call(session: "onnxruntime.InferenceSession", x: torch.Tensor) -> Call:
    """One ``session.run`` on ``x`` (converted to a NumPy array here, not timed)."""
    name = session.get_inputs()[0].name
    feed = {name: x.contiguous().numpy()}
    return lambda: session.run(None, feed)[0]


# ------------------------------------------------------------------------------------------
# timing
# ------------------------------------------------------------------------------------------


class Group:
    """Plain and NL-SAM of one model, runtime and batch size: timed back to back. ``seconds``:
    each network's time per call, one value per round."""

    def __init__(self, model: str, runtime: str, batch: int, calls: Dict[str, Call]) -> None:
        self.model, self.runtime, self.batch, self.calls = model, runtime, batch, calls
        self.reps = 1
        self.seconds: Dict[str, List[float]] = {net: [] for net in calls}


def time_call(call: Call, reps: int) -> float:
    """Seconds per call of ``call``, over ``reps`` calls in a row."""
    start = time.perf_counter()
    for _ in range(reps):
        call()
    return (time.perf_counter() - start) / reps


def warm_up(group: Group, reps: Optional[int]) -> None:
    """Run every call of ``group`` a few times; then set its reps: ``reps``, or as many calls as
    take about :data:`TARGET_SECONDS` for the slower of its networks (one timed call each)."""
    slowest = 0.0
    for call in group.calls.values():
        for _ in range(WARMUP_CALLS):
            call()
        if reps is None:
            slowest = max(slowest, time_call(call, 1))
    group.reps = reps if reps is not None else max(1, round(TARGET_SECONDS / slowest))


def measure(groups: Sequence[Group], rounds: int) -> None:
    """Time every group once per round, round-robin; within a group its networks back to back,
    in alternating order from round to round. Fills each group's ``seconds``."""
    for r in range(rounds):
        for group in groups:
            order = list(group.calls) if r % 2 == 0 else list(reversed(list(group.calls)))
            for net in order:
                group.seconds[net].append(time_call(group.calls[net], group.reps))


def paired_overhead(seconds: Dict[str, List[float]], variant: str = "nlsam", base: str = "plain") -> List[float]:
    """Per-round latency overhead of ``variant`` over ``base`` in %: each round's two timings ran
    back to back, so a slow spell of the machine hits both and cancels in their ratio."""
    return [100.0 * (v / b - 1.0) for b, v in zip(seconds[base], seconds[variant])]


@torch.no_grad()
def max_abs_diff(models: Dict[bool, nn.Module], session: "onnxruntime.InferenceSession", x: torch.Tensor) -> float:
    """Largest absolute difference between onnxruntime's and eager PyTorch's logits on ``x``,
    over both memory layouts (``models``: channels_last? -> the network in that layout)."""
    got = torch.from_numpy(onnx_call(session, x)())
    worst = 0.0
    for channels_last, model in models.items():
        expected = eager_call(model, x, channels_last)()
        worst = max(worst, float((got - expected.float()).abs().max()))
    return worst


# ------------------------------------------------------------------------------------------
# the report
# ------------------------------------------------------------------------------------------


def machine_line(threads: int) -> str:
    now = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    return (
        f"Machine: {machine_name(torch.device('cpu'))}, torch {torch.__version__}, "
        f"onnxruntime {onnxruntime_version()} (CPUExecutionProvider, intra_op_num_threads {threads}); "
        f"measured {now}."
    )


def _title(models: Sequence[str]) -> str:
    shown = ", ".join(
        re.sub(r"^(pre)?resnet(\d+)$", lambda m: f"{'Pre' if m[1] else ''}ResNet-{m[2]}", name) for name in models
    )
    return f"# Inference latency, {shown} with and without NL-SAM (CPU)"


def format_report(
    args: argparse.Namespace,
    argv: Sequence[str],
    groups: Sequence[Group],
    shapes: Dict[str, Tuple[int, ...]],
    diffs: Dict[Tuple[str, str], float],
    checks: Dict[Tuple[str, str], Dict[int, float]],
) -> str:
    """The Markdown page: command, machine, set-up, the table, the agreement of the outputs."""
    reps = "as many calls as take about 1 s" if args.reps is None else plural(args.reps, "call")
    sizes = "; ".join(f"{m}: {c}x{h}x{w} input, {n} classes" for m, (c, h, w, n) in shapes.items())
    lines = [
        _title(list(dict.fromkeys(args.models))),
        "",
        f"Command: `python benchmarks/inference_latency.py{''.join(' ' + shlex.quote(a) for a in argv)}`",
        "",
        machine_line(args.threads),
        "",
        f'Networks: `nlsam.create_model(NAME, attention=None)` and `attention="nlsam"`, random weights '
        f"with batch-norm statistics taken on random batches, eval mode ({sizes}). Eager: PyTorch under "
        "`torch.inference_mode`, on NCHW (contiguous) tensors or on a channels_last copy of the network "
        "and input. onnxruntime: the file `nlsam export --format onnx` writes (the network saved as a "
        "checkpoint, then `nlsam.analysis.export.export_model`), CPU execution provider. Each variant is "
        f"warmed up; latency is the median of {plural(args.rounds, 'round-robin round')}, each timing "
        f"{reps} on the same batch (shown as calls/timing); images/s = batch / latency. NL-SAM's overhead "
        "is the median of the per-round latency ratios (each round times plain and NL-SAM back to back, "
        "in alternating order), with the lowest and highest round in brackets.",
        "",
        "| model | runtime | batch | network | ms / batch | images/s | NL-SAM overhead [range] | calls/timing |",
        "|---|---|---:|---|---:|---:|---:|---:|",
    ]
    for group in groups:
        overheads = paired_overhead(group.seconds)
        for net in group.calls:
            latency = statistics.median(group.seconds[net])
            overhead = (
                "-"
                if net == "plain"
                else f"{statistics.median(overheads):+.1f}% [{min(overheads):+.1f}, {max(overheads):+.1f}]"
            )
            lines.append(
                f"| {group.model} | {group.runtime} | {group.batch} | {NETWORK_LABELS[net]} | "
                f"{1000 * latency:.2f} | {group.batch / latency:.1f} | {overhead} | {group.reps} |"
            )
    lines += ["", *bf16_section(groups)]
    batch = max(args.batch_sizes)
    agreement = ", ".join(f"{m} {NETWORK_LABELS[n]} {d:.1e}" for (m, n), d in diffs.items())
    worst_check = max((max(c.values()) for c in checks.values() if c), default=float("nan"))
    lines += [
        "",
        f"Outputs agree: largest absolute difference between the logits of onnxruntime and eager PyTorch "
        f"(either layout), batch {batch}, computed once per network: {agreement}. `nlsam export`'s own "
        f"check (batch 1 and 3, max difference / max(1, max |logit|) within 1e-4) passed for every network, "
        f"worst {worst_check:.1e}.",
        "",
    ]
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------


def bf16_section(groups: Sequence[Group]) -> List[str]:
    """The speed-up of bf16 autocast over float32 in eager channels_last, per network and batch:
    the median of the per-round ratios float32 time / bf16 time, lowest and highest round."""
    fp32 = {(g.model, g.batch): g for g in groups if g.runtime == "eager, channels_last"}
    pairs = [(fp32[(g.model, g.batch)], g) for g in groups if g.runtime == BF16_RUNTIME and (g.model, g.batch) in fp32]
    if not pairs:
        return [
            "bf16 autocast: not measured; this CPU has no native bf16 (AVX512-BF16 or AMX-BF16), so "
            "`--amp auto` runs float32 here.",
        ]
    lines = [
        "bf16 autocast against float32, eager channels_last (as `nlsam eval` and `nlsam predict` run with "
        "`--amp bf16`, or `--amp auto` on this CPU): speed-up = the median of the per-round ratios float32 "
        "time / bf16 time (both timed in the same round), lowest and highest round in brackets.",
        "",
        "| model | batch | network | float32 ms | bf16 ms | bf16 speed-up [range] |",
        "|---|---:|---|---:|---:|---:|",
    ]
    for full, half in pairs:
        for net in half.calls:
            ratios = [f / h for f, h in zip(full.seconds[net], half.seconds[net])]
            lines.append(
                f"| {half.model} | {half.batch} | {NETWORK_LABELS[net]} | "
                f"{1000 * statistics.median(full.seconds[net]):.2f} | {1000 * statistics.median(half.seconds[net]):.2f} | "
                f"{statistics.median(ratios):.2f}x [{min(ratios):.2f}, {max(ratios):.2f}] |"
            )
    return lines


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--models",
        nargs="+",
        default=["resnet50"],
        help="nlsam network names; each runs at its native input size (default resnet50)",
    )
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 8], help="default 1 8")
    parser.add_argument("--rounds", type=int, default=7, help="round-robin repetitions (median kept; default 7)")
    parser.add_argument(
        "--reps",
        type=int,
        default=None,
        help="calls per timing (default: as many as take about 1 s, chosen per runtime and batch)",
    )
    parser.add_argument(
        "--threads",
        type=int,
        default=torch.get_num_threads(),
        help="PyTorch threads and onnxruntime intra_op_num_threads (default: torch.get_num_threads())",
    )
    parser.add_argument("--out", type=Path, default=None, help="write the Markdown page here")
    args = parser.parse_args(argv)
    for flag, values in (
        ("--batch-sizes", args.batch_sizes),
        ("--rounds", [args.rounds]),
        ("--threads", [args.threads]),
        ("--reps", [args.reps or 1]),
    ):
        if min(values) < 1:
            parser.error(f"{flag} must be at least 1")
    return args


def main(argv: Optional[Sequence[str]] = None) -> str:
    """Run the benchmark; print the Markdown page (and write it to ``--out``) and return it."""
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    try:  # before the minutes of work, not after
        importlib.import_module("onnxruntime")
    except ImportError:
        raise SystemExit("this benchmark needs onnxruntime, onnx and onnxscript: pip install -e '.[inspect]'") from None
    torch.set_num_threads(args.threads)
    runtimes = [r for r in RUNTIMES if r != BF16_RUNTIME or cpu_has_native_bf16()]

    groups: List[Group] = []
    shapes: Dict[str, Tuple[int, ...]] = {}
    diffs: Dict[Tuple[str, str], float] = {}
    checks: Dict[Tuple[str, str], Dict[int, float]] = {}
    with tempfile.TemporaryDirectory(prefix="nlsam-latency-") as tmp:
        for name in dict.fromkeys(args.models):  # each once, in the order given
            networks = build_networks(name)
            layouts = {False: networks, True: {net: to_channels_last(m) for net, m in networks.items()}}
            shape = input_shape(networks["plain"])
            shapes[name] = (*shape, networks["plain"].num_classes)
            sessions = {}
            for net, model in networks.items():
                start = time.perf_counter()
                result = export_onnx(model, name, NETWORKS[net], shape, Path(tmp) / f"{name}-{net}.onnx")
                path = Path(result["path"])
                sessions[net] = onnx_session(path, args.threads)
                checks[(name, net)] = result["max_diff"]
                print(
                    f"{name} {net}: exported in {time.perf_counter() - start:.1f} s ({result['bytes'] / 1e6:.1f} MB)",
                    flush=True,
                )
                x = torch.randn(max(args.batch_sizes), *shape, generator=torch.Generator().manual_seed(0))
                diffs[(name, net)] = max_abs_diff({cl: layouts[cl][net] for cl in layouts}, sessions[net], x)
            for batch in args.batch_sizes:
                x = torch.randn(batch, *shape, generator=torch.Generator().manual_seed(batch))
                for runtime in runtimes:
                    if runtime == "onnxruntime":
                        calls = {net: onnx_call(sessions[net], x) for net in networks}
                    else:
                        cl = "channels_last" in runtime
                        amp = torch.bfloat16 if runtime == BF16_RUNTIME else None
                        calls = {net: eager_call(m, x, cl, amp) for net, m in layouts[cl].items()}
                    group = Group(name, runtime, batch, calls)
                    warm_up(group, args.reps)
                    groups.append(group)
                    print(
                        f"{name} batch {batch} {runtime}: warmed up, {plural(group.reps, 'call')} per timing",
                        flush=True,
                    )
        start = time.perf_counter()
        measure(groups, args.rounds)
        print(f"measured in {time.perf_counter() - start:.0f} s", flush=True)
    text = format_report(args, argv, groups, shapes, diffs, checks)
    return publish(text, args.out)


if __name__ == "__main__":
    main()
