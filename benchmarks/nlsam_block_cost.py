"""What NL-SAM costs in one residual block's epilogue on the CPU, against the least an eager
PyTorch implementation of it must spend: the floor that bounds its overhead in a network.

    python benchmarks/nlsam_block_cost.py --out docs/benchmarks/nlsam_block_cost.md

A block's epilogue is ``relu(shortcut + branch)``; with NL-SAM it is ``relu(shortcut +
NLSAM(branch))``, which nlsam computes with :func:`nlsam.attention.add_attended` (the gate
fused into the addition). Three variants run on the same random feature maps, in the shapes
of the blocks NL-SAM sits in (``--shapes``: ResNet-20/110 at 32x32, batch 128, layer2 and layer3;
ResNet-50 at 224x224, batch 1 and 8, layer2 to layer4):

* ``plain``: ``relu(shortcut + x)``;
* ``nlsam``: ``relu(add_attended(nlsam, x, shortcut))``, the module built as nlsam's networks
  build it (pool k and reduction r of that layer);
* ``floor``: ``plain`` plus only the passes over full-size tensors that NL-SAM cannot avoid,
  each one eager PyTorch kernel: in the forward pass, the channel sum (a read of ``x``) and the
  gated addition (``torch.addcmul`` in place of the addition); in training also, in the
  backward pass, the gate's gradient (``(grad * x)`` summed over channels) and the branch's
  gradient (``grad * gate`` plus the channel-mean term, one ``torch.addcmul``), where the plain
  block passes the gradient through untouched. The small ops on the pooled grid (pooling, the
  two fc layers, the sigmoid) are left out: the floor is what even a perfect fusion of those
  would still cost.

Training: forward and backward (a fixed channels_last gradient, the way a convolution's
backward hands it over) under the autocast ``nlsam train --amp auto`` picks here; the floor's
backward runs the same kernels by hand under ``torch.no_grad``. Inference: forward under
``torch.inference_mode``, float32. Every variant is warmed up; then ``--rounds`` rounds time
each once (``--calls`` calls per timing), in an order shuffled each round. Reported per shape:
the median time per call of each variant, and the medians over rounds of NL-SAM's and the
floor's extra time over ``plain`` (each round's differences), with 95% bootstrap intervals.
Ratios to the network step times of ``docs/benchmarks/attention_overhead.md`` say which share
of a step the floor alone takes.
"""

from __future__ import annotations

import argparse
import contextlib
import random
import shlex
import statistics
import sys
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F

import nlsam
from nlsam.attention import NLSAM, add_attended
from nlsam.engine import machine_name, resolve_amp

sys.path.insert(0, str(Path(__file__).resolve().parent))  # _common, also when imported by path
from _common import publish  # noqa: E402

Call = Callable[[], object]
VARIANTS = ("plain", "nlsam", "floor")
BOOTSTRAP_RESAMPLES = 2000


@dataclass(frozen=True)
class BlockShape:
    """One block NL-SAM sits in: its network, layer, the feature map and NL-SAM's settings
    there (as ``nlsam.create_model(network, attention="nlsam")`` builds them)."""

    key: str
    network: str
    layer: int
    blocks: int  #: how many blocks of the network have this shape (NL-SAM in each)
    batch: int
    channels: int
    size: int
    pool: int
    reduction: int
    training: bool


def _record_channels(sizes: Dict[int, int], layer: int) -> Callable[..., None]:
    def hook(module: torch.nn.Module, args: Tuple[torch.Tensor, ...]) -> None:
        sizes.setdefault(layer, int(args[0].shape[1]))

    return hook


def nlsam_blocks(network: str, input_size: int, batch: int, training: bool) -> List[BlockShape]:
    """The shapes of the blocks that carry NL-SAM in ``network``, read from the network nlsam
    builds (one per layer, with the number of blocks of that shape)."""
    model = nlsam.create_model(network, attention="nlsam", input_size=input_size)
    found: Dict[Tuple[int, int, int, int], int] = {}
    channels: Dict[int, int] = {}
    hooks = []
    for name, module in model.named_modules():
        if isinstance(module, NLSAM):
            layer = int(name.split(".layer")[1].split(".")[0])
            hooks.append(module.register_forward_pre_hook(_record_channels(channels, layer)))
            key = (layer, module.pool, module.reduction, module.feature_size[0])
            found[key] = found.get(key, 0) + 1
    with torch.no_grad():
        model.eval()(torch.zeros(1, 3, input_size, input_size))
    for hook in hooks:
        hook.remove()
    mode = "train" if training else "infer"
    return [
        BlockShape(
            f"{mode}:{network}:layer{layer}:b{batch}",
            network,
            layer,
            count,
            batch,
            channels[layer],
            size,
            pool,
            reduction,
            training,
        )
        for (layer, pool, reduction, size), count in sorted(found.items())
    ]


SHAPE_SETS = {
    "train:resnet20": lambda: nlsam_blocks("resnet20", 32, 128, True),
    "train:resnet110": lambda: nlsam_blocks("resnet110", 32, 128, True),
    "infer:resnet50:b1": lambda: nlsam_blocks("resnet50", 224, 1, False),
    "infer:resnet50:b8": lambda: nlsam_blocks("resnet50", 224, 8, False),
}


def variant_calls(shape: BlockShape, amp: Optional[torch.dtype]) -> Dict[str, Call]:
    """The three variants of one block shape, on fixed random tensors made here."""
    torch.manual_seed(0)
    module = NLSAM((shape.size, shape.size), pool=shape.pool, reduction=shape.reduction)
    dims = (shape.batch, shape.channels, shape.size, shape.size)
    layout = torch.channels_last
    dtype = amp if (shape.training and amp is not None) else torch.float32
    x = torch.randn(dims).to(dtype).contiguous(memory_format=layout)
    shortcut = torch.randn(dims).to(dtype).contiguous(memory_format=layout)
    gate = torch.rand(shape.batch, 1, shape.size, shape.size).to(dtype)
    autocast = torch.autocast("cpu", dtype=amp, enabled=shape.training and amp is not None)

    if not shape.training:

        def plain() -> object:
            with torch.inference_mode():
                return F.relu(shortcut + x)

        def attended() -> object:
            with torch.inference_mode():
                return F.relu(add_attended(module, x, shortcut))

        def floor() -> object:
            with torch.inference_mode():
                x.sum(dim=1, keepdim=True)
                return F.relu(torch.addcmul(shortcut, x, gate))

        return {"plain": plain, "nlsam": attended, "floor": floor}

    module.train()
    upstream = torch.randn(dims).to(dtype).contiguous(memory_format=layout)
    context_grad = torch.rand(shape.batch, 1, shape.size, shape.size).to(dtype).expand(dims)

    def leaves() -> Tuple[torch.Tensor, torch.Tensor]:
        return x.detach().requires_grad_(), shortcut.detach().requires_grad_()

    def plain_train() -> object:
        branch, skip = leaves()
        with autocast:
            out = F.relu(skip + branch)
        out.backward(upstream)
        return out

    def attended_train() -> object:
        branch, skip = leaves()
        with autocast:
            out = F.relu(add_attended(module, branch, skip))
        out.backward(upstream)
        return out

    def floor_train() -> object:
        branch, skip = leaves()
        with autocast:
            with torch.no_grad():
                branch.sum(dim=1, keepdim=True)  # the channel sum, forward
            # the branch enters detached: its gradient is computed by hand below, once
            out = F.relu(torch.addcmul(skip, branch.detach(), gate))
        out.backward(upstream)  # relu's backward, and the shortcut's gradient passed through
        with torch.no_grad():
            grad = upstream
            (grad * x).sum(dim=1, keepdim=True)  # the gate's gradient
            torch.addcmul(context_grad, grad, gate)  # the branch's gradient, both terms
        return out

    return {"plain": plain_train, "nlsam": attended_train, "floor": floor_train}


def bootstrap_median(values: Sequence[float], seed: int) -> Tuple[float, float, float]:
    """Median of ``values`` and its 95% bootstrap interval (the rounds resampled)."""
    data = np.asarray(values, dtype=float)
    rng = np.random.default_rng(seed)
    medians = np.median(data[rng.integers(0, len(data), size=(BOOTSTRAP_RESAMPLES, len(data)))], axis=1)
    low, high = np.percentile(medians, [2.5, 97.5])
    return float(np.median(data)), float(low), float(high)


def time_call(call: Call, calls: int) -> float:
    start = time.perf_counter()
    for _ in range(calls):
        call()
    return (time.perf_counter() - start) / calls


def measure(
    groups: Dict[BlockShape, Dict[str, Call]], rounds: int, calls: int, seed: int
) -> Dict[BlockShape, Dict[str, List[float]]]:
    order_rng = random.Random(seed)
    for variants in groups.values():
        for call in variants.values():
            time_call(call, 3)
    seconds: Dict[BlockShape, Dict[str, List[float]]] = {s: {v: [] for v in VARIANTS} for s in groups}
    for r in range(rounds):
        for shape, variants in groups.items():
            names = list(variants)
            order_rng.shuffle(names)
            for name in names:
                seconds[shape][name].append(time_call(variants[name], calls))
        print(f"round {r + 1}/{rounds}", flush=True)
    return seconds


def us(value: float) -> str:
    return f"{1e6 * value:.0f}"


def interval(values: Sequence[float], seed: int) -> str:
    median, low, high = bootstrap_median(values, seed)
    return f"{1e6 * median:+.0f} [{1e6 * low:+.0f}, {1e6 * high:+.0f}]"


def format_report(
    args: argparse.Namespace,
    argv: Sequence[str],
    seconds: Dict[BlockShape, Dict[str, List[float]]],
    amp: Optional[torch.dtype],
) -> str:
    now = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    precision = str(amp).replace("torch.", "") + " autocast" if amp is not None else "float32"
    lines = [
        "# NL-SAM in one block's epilogue, against the least eager PyTorch must spend on it (CPU)",
        "",
        f"Command: `python benchmarks/nlsam_block_cost.py{''.join(' ' + shlex.quote(a) for a in argv)}`",
        "",
        f"Machine: {machine_name(torch.device('cpu'))}, torch {torch.__version__}; training precision "
        f"{precision} (`resolve_amp('auto')`), inference float32; measured {now}.",
        "",
        f"Method: see the script's docstring. {args.rounds} rounds, calls per timing: {args.calls}; variants "
        "in a shuffled order each round. Times in microseconds per call (median over rounds); extra = the "
        "median over rounds of the variant's time minus plain's in the same round, with its 95% bootstrap "
        f"interval ({BOOTSTRAP_RESAMPLES} resamples). *per network*: extra x the blocks of that shape.",
        "",
        "| block | blocks | feature map | k, r | plain us | NL-SAM us | floor us | NL-SAM extra us [95% CI] "
        "| floor extra us [95% CI] | floor / NL-SAM extra |",
        "|---|---:|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    totals: Dict[str, List[float]] = {}
    for i, (shape, times) in enumerate(seconds.items()):
        extra = [a - p for a, p in zip(times["nlsam"], times["plain"])]
        floor = [f - p for f, p in zip(times["floor"], times["plain"])]
        share = statistics.median(floor) / statistics.median(extra) if statistics.median(extra) > 0 else float("nan")
        set_key = shape.key.rsplit(":layer", 1)[0] + (":b" + str(shape.batch) if not shape.training else "")
        total = totals.setdefault(set_key, [0.0, 0.0])
        total[0] += shape.blocks * statistics.median(extra)
        total[1] += shape.blocks * statistics.median(floor)
        lines.append(
            f"| {shape.key} | {shape.blocks} | {shape.batch}x{shape.channels}x{shape.size}x{shape.size} | "
            f"{shape.pool}, {shape.reduction} | {us(statistics.median(times['plain']))} | "
            f"{us(statistics.median(times['nlsam']))} | {us(statistics.median(times['floor']))} | "
            f"{interval(extra, args.seed + i)} | {interval(floor, args.seed + i)} | {share:.2f} |"
        )
    lines += [
        "",
        "Per network (the extra of each shape times its blocks, summed), ms per step or forward pass:",
        "",
        "| network | NL-SAM extra ms | floor extra ms |",
        "|---|---:|---:|",
    ]
    for key, (extra_total, floor_total) in totals.items():
        lines.append(f"| {key} | {1e3 * extra_total:.2f} | {1e3 * floor_total:.2f} |")
    return "\n".join(lines) + "\n"


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shapes", nargs="+", choices=list(SHAPE_SETS), default=list(SHAPE_SETS), help="default: all")
    parser.add_argument("--rounds", type=int, default=30, help="timed rounds (default 30)")
    parser.add_argument("--calls", type=int, default=10, help="calls per timing (default 10)")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads(), help="torch threads")
    parser.add_argument("--seed", type=int, default=0, help="seed of the round order and the bootstrap")
    parser.add_argument("--out", type=Path, default=None, help="write the Markdown page here")
    args = parser.parse_args(argv)
    for flag, value in (("--rounds", args.rounds), ("--calls", args.calls), ("--threads", args.threads)):
        if value < 1:
            parser.error(f"{flag} must be at least 1")
    return args


def main(argv: Optional[Sequence[str]] = None) -> str:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    amp = resolve_amp("auto", torch.device("cpu"))
    groups = {shape: variant_calls(shape, amp) for key in args.shapes for shape in SHAPE_SETS[key]()}
    seconds = measure(groups, args.rounds, args.calls, args.seed)
    text = format_report(args, argv, seconds, amp)
    return publish(text, args.out)


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        main()
