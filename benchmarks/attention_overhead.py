"""The time an attention module adds to its partner network on the CPU, with the gate fused
into the residual addition ("after") and without it ("before"), measured in one process.

    python benchmarks/attention_overhead.py --out docs/benchmarks/attention_overhead.md
    python benchmarks/attention_overhead.py --smoke    # a tiny run that checks the script works

``--smoke``: 2 rounds of 0.01 s timings, ResNet-20 training at batch 8, ResNet-50 inference at
64x64, the NL-SAM pair only (``--pairs`` adds the others). Its figures are not measurements.

Pairs (attended network over its partner): NL-SAM over the plain ResNet, SE + NL-SAM over SE,
CBAM with NL-SAM over CBAM (``nlsam.create_model(NAME, attention=...)``); an attended network
takes every weight it shares with its partner from it (``_common.share_weights``), so a pair
differs only by the attention added. Each network runs two ways:

* after (fused): nlsam as it is; a block computes ``shortcut + attention(x)`` in one pass
  (:func:`nlsam.attention.add_attended`, ``torch.addcmul``) from the gate the attention module
  hands out, NL-SAM's at its pooled grid;
* before (unfused): the paper's formulation; every block computes ``attention(x) + shortcut``
  and NL-SAM computes ``x * attention_map(x)`` with the upsampled map (``NLSAM._attend``). It is
  forced by patching ``nlsam.models.resnet.add_attended`` and ``NLSAM.forward`` for the duration
  of each timing (restored after it); before anything is timed, the logits of both ways are
  checked to agree for every network (eval mode, float64).

Workloads (``--only``):

* ``train:resnet20``, ``train:resnet110``: one training step (forward, cross-entropy, backward,
  SGD with momentum) of the CIFAR network (32x32, 10 classes, ``--batch-size`` 128),
  channels_last, in the precision ``nlsam train --amp auto`` picks on this CPU
  (``nlsam.engine.resolve_amp``: bfloat16 autocast where the CPU computes bf16 natively, else
  float32), on one random batch prepared outside the timings;
* ``infer:resnet50:eager``: a forward pass of ResNet-50 (224x224, 1000 classes, random weights
  with batch-norm statistics taken on random batches) in eval mode under
  ``torch.inference_mode``, channels_last, float32, batch 1 and 8;
* ``infer:resnet50:onnx``: the same network exported the way ``nlsam export --format onnx``
  does (:func:`nlsam.analysis.export.export_model`, which checks the file against PyTorch),
  once with each path, run in onnxruntime (CPU execution provider, ``intra_op_num_threads`` =
  the torch threads); the node count of each exported graph is listed by op type.

Method: every variant (network x path) of a workload is warmed up, then the workload's timing
length is fixed once: as many calls as take about ``--seconds`` for its slowest variant. Then
``--rounds`` rounds run; in each, every variant of every workload is timed once, the variants of a
workload in a shuffled order (seeded). A slow spell of the machine hits the variants of one round
alike and cancels in their ratio, so each comparison is a set of per-round ratios: attended over
partner (the overhead, before and after), and attended fused over attended unfused (the change).
Reported: the median ratio as a percentage, a 95% bootstrap interval of the median (2000
resamples of the rounds, seeded), and a two-sided sign test (how many rounds the first network was
slower, against a fair coin). Where ``perf stat`` can read the CPU's cycle and instruction
counters, each variant's loop also runs in a child process under ``perf stat`` (the counts of a
run without the loop are subtracted). Absolute times depend on the machine; the ratios are the
figures to read.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import importlib
import json
import math
import random
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Dict, Iterator, List, Optional, Sequence, Tuple

import numpy as np
import torch
from torch import nn

import nlsam
from nlsam.attention.nlsam import NLSAM
from nlsam.engine import machine_name, resolve_amp

sys.path.insert(0, str(Path(__file__).resolve().parent))  # _common, also when imported by path
from _common import export_onnx as _export_onnx  # noqa: E402
from _common import (  # noqa: E402
    onnx_session,
    onnxruntime_version,
    publish,
    set_batchnorm_statistics,
    share_weights,
)

if TYPE_CHECKING:
    import onnxruntime

SCRIPT = "benchmarks/attention_overhead.py"

#: the attended network of each pair -> its partner (None: the plain network)
PAIRS: Dict[str, Optional[str]] = {"nlsam": None, "se+nlsam": "se", "cbam+nlsam": "cbam"}
PAIR_LABELS = {
    "nlsam": "NL-SAM over plain",
    "se+nlsam": "SE + NL-SAM over SE",
    "cbam+nlsam": "CBAM with NL-SAM over CBAM",
}
#: the two ways a network runs, in the order they are shown
PATHS = ("before", "after")
PATH_LABELS = {"before": "before = unfused", "after": "after = fused"}

WORKLOADS = ("train:resnet20", "train:resnet110", "infer:resnet50:eager", "infer:resnet50:onnx")
INFERENCE_BATCH_SIZES = (1, 8)
#: untimed calls of each variant before anything is measured (and before its timing length is set)
WARMUP_CALLS = 3
#: the fused and unfused logits of one network must agree within this share of the logits' scale
AGREEMENT_TOLERANCE = 1e-9
BOOTSTRAP_RESAMPLES = 2000
#: the issue's targets, by workload kind: (the largest median overhead in %, the value the upper end
#: of its 95% interval must stay below, or None)
TARGETS = {"train": (2.0, 3.0), "eager": (1.0, None), "onnx": (1.0, None)}
#: op types always shown in the table of ONNX node counts
SHOWN_OPS = ("Mul", "Add", "Resize", "Reshape")
#: calls of the timed loop a variant runs under ``perf stat``, in units of its timing length
PERF_TIMINGS = 3

#: the cell of a comparison that lacks a variant (its ONNX export failed)
NOT_MEASURED = "not measured (ONNX export failed)"

Call = Callable[[], object]
Variant = Tuple[str, str]  # (network, path); network "none" is the plain network


def network_name(attention: Optional[str]) -> str:
    return attention or "none"


def network_attention(network: str) -> Optional[str]:
    return None if network == "none" else network


# ------------------------------------------------------------------------------------------
# the unfused path ("before")
# ------------------------------------------------------------------------------------------


def _unfused_add_attended(attention: nn.Module, x: torch.Tensor, shortcut: torch.Tensor) -> torch.Tensor:
    return attention(x) + shortcut


def _unfused_nlsam_forward(self: NLSAM, x: torch.Tensor) -> torch.Tensor:
    return self._attend(x)


@contextlib.contextmanager
def unfused_path() -> Iterator[None]:
    """Inside the ``with`` statement every residual block computes ``attention(x) + shortcut``
    and every NL-SAM ``x * attention_map(x)`` (the upsampled map): the formulation before the
    fusion. Both are restored on leaving it."""
    resnet_module = importlib.import_module("nlsam.models.resnet")
    saved_add_attended = resnet_module.add_attended
    saved_forward = NLSAM.forward
    resnet_module.add_attended = _unfused_add_attended
    NLSAM.forward = _unfused_nlsam_forward  # type: ignore[method-assign]
    try:
        yield
    finally:
        resnet_module.add_attended = saved_add_attended
        NLSAM.forward = saved_forward  # type: ignore[method-assign]


def path_context(path: str) -> contextlib.AbstractContextManager:
    return unfused_path() if path == "before" else contextlib.nullcontext()


# ------------------------------------------------------------------------------------------
# workloads, networks and their calls
# ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Workload:
    key: str  # one of WORKLOADS
    kind: str  # "train", "eager" or "onnx"
    model: str
    input_size: int
    num_classes: int
    batch_sizes: Tuple[int, ...]


def make_workloads(args: argparse.Namespace) -> List[Workload]:
    """The selected workloads, in the order of :data:`WORKLOADS`."""
    workloads = []
    for key in WORKLOADS:
        if key not in args.only:
            continue
        parts = key.split(":")
        if parts[0] == "train":
            workloads.append(Workload(key, "train", parts[1], 32, 10, (args.batch_size,)))
        else:
            batches = tuple(args.inference_batch_sizes)
            workloads.append(Workload(key, parts[2], parts[1], args.inference_input_size, 1000, batches))
    return workloads


def build_network(workload: Workload, network: str, partner: Optional[nn.Module] = None) -> nn.Module:
    """The network, with the same random weights every time it is built (seeded). With
    ``partner`` (the network it is compared with), every weight the two have in common is the
    partner's (``_common.share_weights``), so that a pair differs only by the attention it adds.
    Inference networks get batch-norm statistics from random batches and eval mode; training
    networks are in train mode. Contiguous memory layout, float32."""
    torch.manual_seed(0)
    model = nlsam.create_model(
        workload.model,
        attention=network_attention(network),
        num_classes=workload.num_classes,
        input_size=workload.input_size,
    )
    if partner is not None:
        share_weights(model, partner)
    if workload.kind == "train":
        return model.train()
    set_batchnorm_statistics(model, (3, workload.input_size, workload.input_size))
    return model.eval()


def random_images(workload: Workload, batch: int, channels_last: bool) -> torch.Tensor:
    generator = torch.Generator().manual_seed(batch)
    images = torch.randn(batch, 3, workload.input_size, workload.input_size, generator=generator)
    return images.contiguous(memory_format=torch.channels_last if channels_last else torch.contiguous_format)


def train_step_call(model: nn.Module, workload: Workload, batch: int, amp: Optional[torch.dtype]) -> Call:
    """One training step of ``model`` (channels_last, train mode) on a fixed random batch:
    forward under autocast ``amp`` (None: float32), cross-entropy, backward, SGD momentum step."""
    model = model.to(memory_format=torch.channels_last).train()
    images = random_images(workload, batch, channels_last=True)
    labels = torch.randint(0, workload.num_classes, (batch,), generator=torch.Generator().manual_seed(batch))
    # a small learning rate: thousands of steps on one random batch must stay finite
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=1e-4)
    criterion = nn.CrossEntropyLoss()

    def step() -> torch.Tensor:
        optimizer.zero_grad(set_to_none=True)
        with torch.autocast("cpu", dtype=amp) if amp is not None else contextlib.nullcontext():
            loss = criterion(model(images), labels)
        loss.backward()
        optimizer.step()
        return loss

    return step


def eager_call(model: nn.Module, workload: Workload, batch: int) -> Call:
    """One forward pass of ``model`` (channels_last, eval mode, float32) under
    ``torch.inference_mode`` on a fixed random channels_last batch."""
    images = random_images(workload, batch, channels_last=True)

    def forward() -> torch.Tensor:
        with torch.inference_mode():
            return model(images)

    return forward


def onnx_call(session: "onnxruntime.InferenceSession", workload: Workload, batch: int) -> Call:
    """One ``session.run`` on a fixed random batch (a NumPy array made here, not timed)."""
    feed = {session.get_inputs()[0].name: random_images(workload, batch, channels_last=False).numpy()}
    return lambda: session.run(None, feed)[0]


def export_onnx(model: nn.Module, workload: Workload, network: str, path: str, directory: Path, exporter: str) -> Dict:
    """Export ``model`` as ``nlsam export CHECKPOINT --format onnx`` does (``_common.export_onnx``),
    with the fused or the unfused path. Returns export_model's result."""
    size = workload.input_size
    onnx_path = directory / f"{workload.model}-{network}-{path}.onnx"
    with path_context(path), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return _export_onnx(model, workload.model, network_attention(network), (3, size, size), onnx_path, exporter)


def onnx_node_counts(path: Path) -> Counter:
    """Nodes of the exported graph by op type (nodes of local functions included)."""
    import onnx

    proto = onnx.load(str(path), load_external_data=False)
    counts = Counter(node.op_type for node in proto.graph.node)
    for function in proto.functions:
        counts.update(node.op_type for node in function.node)
    return counts


@torch.no_grad()
def fused_unfused_difference(model: nn.Module, workload: Workload) -> float:
    """Largest difference between the logits of the fused and the unfused path on a random
    batch of 2, eval mode, in a float64 copy of ``model``, divided by the logits' scale (max
    |logit|, at least 1). In float32 the two differ by rounding alone, which a deep network with
    random weights amplifies beyond any tolerance that would still catch a wrong path (3e-4 of
    the logits' scale for SE on ResNet-110)."""
    model = copy.deepcopy(model).double().eval()
    images = random_images(workload, 2, channels_last=False).double()
    fused = model(images)
    with unfused_path():
        unfused = model(images)
    scale = max(1.0, float(fused.abs().max()))
    return float((fused - unfused).abs().max()) / scale


# ------------------------------------------------------------------------------------------
# timing
# ------------------------------------------------------------------------------------------


@dataclass
class Group:
    """The variants of one workload at one batch size, timed in the same rounds. ``seconds``:
    each variant's time per call, one value per round."""

    workload: Workload
    batch: int
    calls: Dict[Variant, Call]
    reps: int = 1
    seconds: Dict[Variant, List[float]] = field(default_factory=dict)

    @property
    def label(self) -> str:
        return f"{self.workload.key}, batch {self.batch}"


def time_variant(call: Call, path: str, reps: int) -> float:
    """Seconds per call of ``call`` over ``reps`` calls in a row; the unfused path (when
    ``path`` is "before") is switched on around the loop, outside the timing."""
    with path_context(path):
        start = time.perf_counter()
        for _ in range(reps):
            call()
        return (time.perf_counter() - start) / reps


def warm_up(group: Group, seconds: float, patched: bool) -> None:
    """Run each variant :data:`WARMUP_CALLS` times, then fix the group's timing length: as many
    calls as take about ``seconds`` for its slowest variant (one timed call each)."""
    slowest = 0.0
    for (_, path), call in group.calls.items():
        effective_path = path if patched else "after"
        time_variant(call, effective_path, WARMUP_CALLS)
        slowest = max(slowest, time_variant(call, effective_path, 1))
    group.reps = max(1, round(seconds / slowest))
    group.seconds = {variant: [] for variant in group.calls}


def measure(groups: Sequence[Group], rounds: int, seed: int) -> None:
    """``rounds`` rounds; each times every variant of every group once, a group's variants back
    to back in an order shuffled each round (seeded)."""
    order_rng = random.Random(seed)
    for r in range(rounds):
        start = time.perf_counter()
        for group in groups:
            variants = list(group.calls)
            order_rng.shuffle(variants)
            patched = group.workload.kind != "onnx"  # an ONNX file carries its path already
            for variant in variants:
                path = variant[1] if patched else "after"
                group.seconds[variant].append(time_variant(group.calls[variant], path, group.reps))
        print(f"round {r + 1}/{rounds}: {time.perf_counter() - start:.1f} s", flush=True)


# ------------------------------------------------------------------------------------------
# statistics of per-round ratios
# ------------------------------------------------------------------------------------------


@dataclass
class Comparison:
    """Per-round ratios ``numerator / denominator`` of one group's timings, summarised."""

    ratios: List[float]
    median_percent: float
    low_percent: float
    high_percent: float
    slower_rounds: int
    sign_test_p: float


def sign_test_p(slower: int, rounds: int) -> float:
    """Two-sided binomial test of ``slower`` out of ``rounds`` against a fair coin."""
    if rounds == 0:
        return float("nan")
    tail = min(slower, rounds - slower)
    p = 2.0 * sum(math.comb(rounds, k) for k in range(tail + 1)) / 2.0**rounds
    return min(1.0, p)


def compare(numerator: Sequence[float], denominator: Sequence[float], seed: int) -> Comparison:
    """Median of the per-round ratios in % above 1, its 95% bootstrap interval (the rounds
    resampled :data:`BOOTSTRAP_RESAMPLES` times), and the sign test of the rounds where the
    numerator was slower (ties left out)."""
    ratios = np.asarray(numerator, dtype=float) / np.asarray(denominator, dtype=float)
    rng = np.random.default_rng(seed)
    resampled = ratios[rng.integers(0, len(ratios), size=(BOOTSTRAP_RESAMPLES, len(ratios)))]
    low, high = np.percentile(np.median(resampled, axis=1), [2.5, 97.5])
    slower = int((ratios > 1.0).sum())
    untied = int((ratios != 1.0).sum())
    return Comparison(
        ratios=ratios.tolist(),
        median_percent=100.0 * (float(np.median(ratios)) - 1.0),
        low_percent=100.0 * (float(low) - 1.0),
        high_percent=100.0 * (float(high) - 1.0),
        slower_rounds=slower,
        sign_test_p=sign_test_p(slower, untied),
    )


# ------------------------------------------------------------------------------------------
# cycle and instruction counters (perf stat, in a child process)
# ------------------------------------------------------------------------------------------

PERF_EVENTS = ("cycles", "instructions")


def parse_perf_counts(text: str) -> Optional[Dict[str, float]]:
    """``{"cycles": n, "instructions": n}`` from ``perf stat -x,`` output, or None when a counter
    is missing or not supported."""
    counts: Dict[str, float] = {}
    for line in text.splitlines():
        fields = line.split(",")
        if len(fields) < 3:
            continue
        event = fields[2].split(":")[0]
        if event in PERF_EVENTS:
            try:
                counts[event] = float(fields[0])
            except ValueError:  # "<not supported>", "<not counted>"
                return None
    return counts if set(counts) == set(PERF_EVENTS) else None


def cycle_counters_available() -> bool:
    """Whether ``perf stat -e cycles,instructions`` reads real counts here (tried once)."""
    command = ["perf", "stat", "-x,", "-e", ",".join(PERF_EVENTS), "--", "true"]
    try:
        result = subprocess.run(command, capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.SubprocessError):
        return False
    return result.returncode == 0 and parse_perf_counts(result.stderr) is not None


def perf_counts(spec: Dict[str, Any]) -> Optional[Dict[str, float]]:
    """Counts of a child process that builds one variant, warms it up and runs ``spec["calls"]``
    calls (:func:`run_perf_child`), under ``perf stat``."""
    command = ["perf", "stat", "-x,", "-e", ",".join(PERF_EVENTS), "--"]
    command += [sys.executable, str(Path(__file__).resolve()), "--perf-child", json.dumps(spec)]
    try:
        result = subprocess.run(command, capture_output=True, text=True, timeout=1800)
    except (OSError, subprocess.SubprocessError):
        return None
    return parse_perf_counts(result.stderr) if result.returncode == 0 else None


def per_call_counts(spec: Dict[str, Any], calls: int) -> Optional[Dict[str, float]]:
    """Cycles and instructions per call of one variant: a child running ``calls`` calls less a
    child running none (building and warm-up cancel)."""
    with_loop = perf_counts(dict(spec, calls=calls))
    without_loop = perf_counts(dict(spec, calls=0))
    if with_loop is None or without_loop is None:
        return None
    return {event: (with_loop[event] - without_loop[event]) / calls for event in PERF_EVENTS}


def run_perf_child(spec: Dict[str, Any]) -> None:
    """The child process of :func:`perf_counts`: build the variant as the benchmark does, warm it
    up, run its calls."""
    torch.set_num_threads(spec["threads"])
    workload = Workload(**{k: tuple(v) if k == "batch_sizes" else v for k, v in spec["workload"].items()})
    batch, network, path = spec["batch"], spec["network"], spec["path"]
    if workload.kind == "onnx":
        call = onnx_call(onnx_session(Path(spec["onnx_path"]), spec["threads"]), workload, batch)
        path = "after"  # the file carries its path
    else:
        partner = partner_of(network)
        model = build_network(workload, network, build_network(workload, partner) if partner != network else None)
        if workload.kind == "train":
            amp = getattr(torch, spec["amp"]) if spec["amp"] else None
            call = train_step_call(model, workload, batch, amp)
        else:
            call = eager_call(model.to(memory_format=torch.channels_last), workload, batch)
    time_variant(call, path, WARMUP_CALLS)
    if spec["calls"]:
        time_variant(call, path, spec["calls"])


# ------------------------------------------------------------------------------------------
# the report
# ------------------------------------------------------------------------------------------


def percent(value: float) -> str:
    return f"{value:+.2f}%"


def comparison_cell(comparison: Comparison) -> str:
    c = comparison
    return f"{percent(c.median_percent)} [{c.low_percent:+.2f}, {c.high_percent:+.2f}]"


def sign_cell(comparison: Comparison) -> str:
    return f"{comparison.sign_test_p:.3g} ({comparison.slower_rounds}/{len(comparison.ratios)} slower)"


def median_ms(seconds: Sequence[float]) -> str:
    return f"{1000 * statistics.median(seconds):.2f}"


@dataclass
class Results:
    """Everything the report shows."""

    amp: Optional[torch.dtype]
    threads: int
    groups: List[Group]
    differences: Dict[Tuple[str, str], float]  # (workload key, network) -> fused vs unfused
    export_checks: Dict[Tuple[str, str], float]  # (network, path) -> export_model's worst check
    node_counts: Dict[Tuple[str, str], Counter]  # (network, path) -> ONNX op types
    counters: Optional[Dict[Tuple[str, int, str, str], Optional[Dict[str, float]]]]  # None: not exposed
    export_failures: Dict[Tuple[str, str], str] = field(default_factory=dict)  # (network, path) -> why
    overheads: Dict[Tuple[str, int, str, str], Comparison] = field(default_factory=dict)
    changes: Dict[Tuple[str, int, str], Comparison] = field(default_factory=dict)


def summarise(results: Results, pairs: Sequence[str], seed: int) -> None:
    """Fill ``results.overheads`` ((workload, batch, pair, path) -> attended over partner) and
    ``results.changes`` ((workload, batch, pair) -> attended fused over attended unfused)."""
    for group in results.groups:
        s = group.seconds  # a variant whose ONNX export failed has no timings
        for pair in pairs:
            partner = network_name(PAIRS[pair])
            for path in PATHS:
                if (pair, path) in s and (partner, path) in s:
                    results.overheads[(group.workload.key, group.batch, pair, path)] = compare(
                        s[(pair, path)], s[(partner, path)], seed
                    )
            if (pair, "after") in s and (pair, "before") in s:
                results.changes[(group.workload.key, group.batch, pair)] = compare(
                    s[(pair, "after")], s[(pair, "before")], seed
                )


def workload_title(workload: Workload, args: argparse.Namespace, amp: Optional[torch.dtype]) -> str:
    size = f"{workload.input_size}x{workload.input_size}"
    if workload.kind == "train":
        precision = f"{str(amp).replace('torch.', '')} autocast" if amp is not None else "float32"
        return (
            f"Training step, {workload.model} ({size}, {workload.num_classes} classes, batch "
            f"{args.batch_size}, channels_last, {precision}, SGD momentum)"
        )
    runtime = "eager PyTorch, channels_last, float32" if workload.kind == "eager" else "onnxruntime, float32"
    return f"Inference, {workload.model} ({size}, {workload.num_classes} classes, {runtime})"


def format_report(args: argparse.Namespace, argv: Sequence[str], results: Results, seconds_taken: float) -> str:
    now = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    precision = str(results.amp).replace("torch.", "") + " autocast" if results.amp is not None else "float32"
    lines = [
        "# Attention overhead: NL-SAM and its compositions over their partner networks, before and after fusing "
        "the gate into the residual addition (CPU)",
        "",
        f"Command: `python {SCRIPT}{''.join(' ' + shlex.quote(a) for a in argv)}`",
        "",
        f"Machine: {machine_name(torch.device('cpu'))}, torch {torch.__version__}, "
        f"onnxruntime {onnxruntime_version()}; training precision {precision} (`resolve_amp('auto')`); "
        f"measured {now}, {seconds_taken / 60:.1f} min.",
        "",
    ]
    if args.smoke:
        lines += [
            "**Smoke run**: a tiny configuration that checks the script works; its figures are not measurements.",
            "",
        ]
    lines += [
        "Method: every variant (network x path) is warmed up; each workload's timing is as many calls as take "
        f"about {args.seconds:g} s for its slowest variant, fixed once. {args.rounds} rounds follow; each times "
        "every variant once, a workload's variants back to back in an order shuffled each round (seeded). "
        "Before = unfused (the paper's formulation: `attention(x) + shortcut` in every block, NL-SAM as "
        "`x * attention_map(x)`, forced by patching `nlsam.models.resnet.add_attended` and `NLSAM.forward` "
        "around each of its timings); after = fused (nlsam as it is: `torch.addcmul(shortcut, x, gate)`, "
        "NL-SAM's gate at its pooled grid). Overhead = the median over rounds of attended / partner time "
        "within the same round, with a 95% bootstrap interval of that median "
        f"({BOOTSTRAP_RESAMPLES} resamples of the rounds) and a two-sided sign test of the rounds in which "
        "the attended network was slower. The row *after vs before* is the same statistic for the attended "
        "network's fused time over its unfused time (negative: the fusion made it faster). ms are medians "
        "per call. Networks: random weights (seeded), every weight an attended network shares with its "
        "partner copied from the partner (the backbone, and SE's or CBAM's channel gate in a composition), "
        "so a pair differs only by the attention added; the inference networks with batch-norm statistics of "
        "random batches; random inputs prepared once.",
        "",
    ]
    worst = max(results.differences.values(), default=float("nan"))
    shown = ", ".join(f"{w} {n} {d:.1e}" for (w, n), d in results.differences.items())
    lines += [
        f"Fused and unfused paths agree: largest difference of the logits (eval mode, float64, batch 2) divided "
        f"by the logits' scale, worst {worst:.1e} (tolerance {AGREEMENT_TOLERANCE:g}): {shown}.",
        "",
    ]
    for group in results.groups:
        workload = group.workload
        lines += [
            f"## {workload_title(workload, args, results.amp)}, batch {group.batch}",
            "",
            f"{group.reps} call{'s' if group.reps != 1 else ''} per timing.",
            "",
            "| pair | path | partner ms | attended ms | overhead median [95% CI] | sign test p | rounds |",
            "|---|---|---:|---:|---:|---:|---:|",
        ]
        for pair in args.pairs:
            partner = network_name(PAIRS[pair])
            for path in PATHS:
                c = results.overheads.get((workload.key, group.batch, pair, path))
                if c is None:
                    lines.append(f"| {PAIR_LABELS[pair]} | {PATH_LABELS[path]} | {NOT_MEASURED} | | | | |")
                    continue
                lines.append(
                    f"| {PAIR_LABELS[pair]} | {PATH_LABELS[path]} | {median_ms(group.seconds[(partner, path)])} | "
                    f"{median_ms(group.seconds[(pair, path)])} | {comparison_cell(c)} | {sign_cell(c)} | "
                    f"{len(c.ratios)} |"
                )
            c = results.changes.get((workload.key, group.batch, pair))
            if c is None:
                lines.append(f"| {PAIR_LABELS[pair]} | after vs before (attended) | {NOT_MEASURED} | | | | |")
                continue
            lines.append(
                f"| {PAIR_LABELS[pair]} | after vs before (attended) | - | "
                f"{median_ms(group.seconds[(pair, 'before')])} -> {median_ms(group.seconds[(pair, 'after')])} | "
                f"{comparison_cell(c)} | {sign_cell(c)} | {len(c.ratios)} |"
            )
        lines.append("")
    if results.node_counts or results.export_failures:
        lines += node_count_table(results, args)
    lines += counter_section(results)
    lines += target_table(results, args)
    return "\n".join(lines)


def node_count_cell(counts: Sequence[Optional[Counter]], op: Optional[str]) -> str:
    """``before -> after`` count of ``op`` (None: all nodes); "failed" for a path not exported."""
    return " -> ".join(
        "failed" if count is None else str(sum(count.values()) if op is None else count[op]) for count in counts
    )


def node_count_table(results: Results, args: argparse.Namespace) -> List[str]:
    """Node counts of each exported graph by op type (:data:`SHOWN_OPS` and every op type whose
    count differs between the two paths of a network), and any export that failed."""
    networks = list(dict.fromkeys(n for n, _ in [*results.node_counts, *results.export_failures]))
    ops = list(SHOWN_OPS)
    for network in networks:
        before = results.node_counts.get((network, "before"), Counter())
        after = results.node_counts.get((network, "after"), Counter())
        ops += sorted(op for op in set(before) | set(after) if before[op] != after[op] and op not in ops)
    lines = [
        f"## ONNX graphs, {args.onnx_exporter} exporter (node count by op type, before -> after)",
        "",
        "| network | " + " | ".join(ops) + " | all nodes | export check, before / after |",
        "|---|" + "---:|" * (len(ops) + 2),
    ]
    for network in networks:
        counts = [results.node_counts.get((network, path)) for path in PATHS]
        checks = " / ".join(
            f"{results.export_checks[(network, path)]:.1e}" if (network, path) in results.export_checks else "failed"
            for path in PATHS
        )
        cells = [node_count_cell(counts, op) for op in ops]
        lines.append(f"| {network} | " + " | ".join(cells) + f" | {node_count_cell(counts, None)} | {checks} |")
    lines += [
        "",
        "Export check: `export_model`'s own comparison of onnxruntime with PyTorch (batch 1 and 3, largest "
        "difference / max(1, max |logit|)), each path exported with that path active.",
        "",
    ]
    for (network, path), why in results.export_failures.items():
        lines += [f"Export failed, {network} {PATH_LABELS[path]}: {why}", ""]
    return lines


def counter_section(results: Results) -> List[str]:
    if results.counters is None:
        return [
            "Cycle and instruction counts: cycle counters not exposed on this machine (`perf stat` reports "
            "them as not supported); skipped.",
            "",
        ]
    lines = [
        "## Cycles and instructions per call (`perf stat`, a child process per variant, the counts of a run "
        "without the timed loop subtracted)",
        "",
        "| workload | batch | network | path | Mcycles / call | Minstructions / call | instructions / cycle |",
        "|---|---:|---|---|---:|---:|---:|",
    ]
    for (workload, batch, network, path), counts in results.counters.items():
        if counts is None:
            lines.append(f"| {workload} | {batch} | {network} | {PATH_LABELS[path]} | failed | failed | - |")
            continue
        ipc = counts["instructions"] / counts["cycles"] if counts["cycles"] > 0 else float("nan")
        lines.append(
            f"| {workload} | {batch} | {network} | {PATH_LABELS[path]} | {counts['cycles'] / 1e6:.1f} | "
            f"{counts['instructions'] / 1e6:.1f} | {ipc:.2f} |"
        )
    lines.append("")
    return lines


def target_table(results: Results, args: argparse.Namespace) -> List[str]:
    lines = [
        "## Targets (after = fused)",
        "",
        "Training: overhead median at most 2% and the upper end of its 95% interval below 3% (ResNet-20 and "
        "ResNet-110). Inference: overhead median at most 1% (eager channels_last and onnxruntime, batch 1 and 8).",
        "",
        "| workload | batch | pair | target | overhead median [95% CI] | result |",
        "|---|---:|---|---|---:|---|",
    ]
    for group in results.groups:
        limit, interval_limit = TARGETS[group.workload.kind]
        target = f"<= {limit:g}%" + (f", CI upper < {interval_limit:g}%" if interval_limit is not None else "")
        for pair in args.pairs:
            c = results.overheads.get((group.workload.key, group.batch, pair, "after"))
            if c is None:
                lines.append(
                    f"| {group.workload.key} | {group.batch} | {PAIR_LABELS[pair]} | {target} | {NOT_MEASURED} | "
                    "not measured |"
                )
                continue
            met = c.median_percent <= limit and (interval_limit is None or c.high_percent < interval_limit)
            lines.append(
                f"| {group.workload.key} | {group.batch} | {PAIR_LABELS[pair]} | {target} | {comparison_cell(c)} | "
                f"{'met' if met else 'missed'} |"
            )
    lines.append("")
    return lines


# ------------------------------------------------------------------------------------------


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=None, help="timed rounds (default 30; 2 with --smoke)")
    parser.add_argument(
        "--seconds", type=float, default=None, help="length of one timing in seconds (default 0.4; 0.01 with --smoke)"
    )
    parser.add_argument(
        "--only",
        nargs="+",
        choices=WORKLOADS,
        default=None,
        help="workloads to run (default: all; with --smoke: train:resnet20 and both resnet50 inference workloads)",
    )
    parser.add_argument(
        "--pairs",
        nargs="+",
        choices=list(PAIRS),
        default=None,
        help="attended networks whose overhead over their partner is measured (default: all; nlsam with --smoke)",
    )
    parser.add_argument(
        "--batch-size", type=int, default=None, help="training batch size (default 128; 8 with --smoke)"
    )
    parser.add_argument(
        "--inference-batch-sizes", type=int, nargs="+", default=list(INFERENCE_BATCH_SIZES), help="default 1 8"
    )
    parser.add_argument(
        "--inference-input-size", type=int, default=None, help="ResNet-50's input side (default 224; 64 with --smoke)"
    )
    parser.add_argument(
        "--onnx-exporter",
        choices=("auto", "dynamo", "legacy"),
        default="auto",
        help="the exporter export_model uses (default auto, as `nlsam export`)",
    )
    parser.add_argument("--threads", type=int, default=torch.get_num_threads(), help="torch and onnxruntime threads")
    parser.add_argument("--seed", type=int, default=0, help="seed of the round order and the bootstrap")
    parser.add_argument("--smoke", action="store_true", help="a tiny run that checks the script works end to end")
    parser.add_argument("--out", type=Path, default=None, help="write the Markdown page here")
    parser.add_argument("--perf-child", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    defaults = dict(rounds=(30, 2), seconds=(0.4, 0.01), batch_size=(128, 8), inference_input_size=(224, 64))
    for name, (full, smoke) in defaults.items():
        if getattr(args, name) is None:
            setattr(args, name, smoke if args.smoke else full)
    if args.only is None:
        args.only = [w for w in WORKLOADS if w != "train:resnet110"] if args.smoke else list(WORKLOADS)
    args.only = list(dict.fromkeys(args.only))
    if args.pairs is None:
        args.pairs = ["nlsam"] if args.smoke else list(PAIRS)
    args.pairs = [p for p in PAIRS if p in args.pairs]
    for flag, value in (
        ("--rounds", args.rounds),
        ("--batch-size", args.batch_size),
        ("--threads", args.threads),
        ("--inference-batch-sizes", min(args.inference_batch_sizes)),
    ):
        if value < 1:
            parser.error(f"{flag} must be at least 1")
    if not args.seconds > 0:
        parser.error("--seconds must be positive")
    if args.inference_input_size % 32:
        parser.error("--inference-input-size must be a multiple of 32 (ResNet-50's total stride)")
    return args


def partner_of(network: str) -> str:
    """The network an attended network is compared with (itself for a partner)."""
    return network_name(PAIRS[network]) if network in PAIRS else network


def networks_of(pairs: Sequence[str]) -> List[str]:
    """The networks the pairs need: each partner, then its attended network."""
    return list(dict.fromkeys(n for pair in pairs for n in (network_name(PAIRS[pair]), pair)))


def prepare(args: argparse.Namespace, workloads: Sequence[Workload], amp: Optional[torch.dtype], tmp: Path) -> Results:
    """Build every variant and check the paths agree; export and load the ONNX files."""
    networks = networks_of(args.pairs)
    results = Results(
        amp=amp, threads=args.threads, groups=[], differences={}, export_checks={}, node_counts={}, counters=None
    )
    built: Dict[Tuple[str, int, str], nn.Module] = {}  # (model, input size, network) -> eval network
    for workload in workloads:
        if workload.kind == "train":
            models: Dict[str, nn.Module] = {}
            for n in networks:  # each partner is built before the networks compared with it
                models[n] = build_network(workload, n, partner=models.get(partner_of(n)))
            for network, model in models.items():
                results.differences[(workload.key, network)] = fused_unfused_difference(model, workload)
            for batch in workload.batch_sizes:
                calls = {
                    (n, path): train_step_call(copy.deepcopy(models[n]), workload, batch, amp)
                    for n in networks
                    for path in PATHS
                }
                results.groups.append(Group(workload, batch, calls))
            continue
        models = {}
        for network in networks:
            key = (workload.model, workload.input_size, network)
            if key not in built:
                partner = built.get((workload.model, workload.input_size, partner_of(network)))
                built[key] = build_network(workload, network, partner=partner)
                results.differences[(f"infer:{workload.model}", network)] = fused_unfused_difference(
                    built[key], workload
                )
            models[network] = built[key]
        if workload.kind == "eager":
            channels_last = {n: copy.deepcopy(m).to(memory_format=torch.channels_last) for n, m in models.items()}
            for batch in workload.batch_sizes:
                calls = {(n, path): eager_call(channels_last[n], workload, batch) for n in networks for path in PATHS}
                results.groups.append(Group(workload, batch, calls))
            continue
        sessions = {}
        for network in networks:
            for path in PATHS:
                start = time.perf_counter()
                try:
                    exported = export_onnx(models[network], workload, network, path, tmp, args.onnx_exporter)
                except Exception as error:  # export_model's ValueError, or onnxruntime failing its check
                    why = (str(error).strip().splitlines() or [type(error).__name__])[0]
                    results.export_failures[(network, path)] = f"{type(error).__name__}: {why}"
                    print(f"{workload.model} {network} {path}: export FAILED: {why}", flush=True)
                    continue
                onnx_path = Path(exported["path"])
                results.export_checks[(network, path)] = max(exported["max_diff"].values())
                results.node_counts[(network, path)] = onnx_node_counts(onnx_path)
                sessions[(network, path)] = onnx_session(onnx_path, args.threads)
                print(f"{workload.model} {network} {path}: exported in {time.perf_counter() - start:.1f} s", flush=True)
        for batch in workload.batch_sizes:
            calls = {variant: onnx_call(session, workload, batch) for variant, session in sessions.items()}
            if calls:
                results.groups.append(Group(workload, batch, calls))
    return results


def check_agreement(results: Results) -> None:
    worst_key, worst = max(results.differences.items(), key=lambda item: item[1])
    if not worst <= AGREEMENT_TOLERANCE:
        raise SystemExit(
            f"the fused and unfused paths of {worst_key[1]} ({worst_key[0]}) differ by {worst:.3g} of the logits' "
            f"scale (tolerance {AGREEMENT_TOLERANCE:g}); nothing timed"
        )
    print(f"fused and unfused logits agree for every network (worst {worst:.1e} of the logits' scale)", flush=True)


def measure_counters(args: argparse.Namespace, results: Results, amp: Optional[torch.dtype], tmp: Path) -> None:
    """Cycles and instructions per call of every variant, where ``perf stat`` can count them."""
    if not cycle_counters_available():
        print("cycle counters not exposed on this machine; skipping cycle and instruction counts", flush=True)
        return
    results.counters = {}
    for group in results.groups:
        workload = group.workload
        for network, path in group.calls:
            spec = dict(
                workload=dict(workload.__dict__),
                batch=group.batch,
                network=network,
                path=path,
                threads=args.threads,
                amp=str(amp).replace("torch.", "") if amp is not None else None,
                onnx_path=str(tmp / f"{workload.model}-{network}-{path}.onnx"),
            )
            counts = per_call_counts(spec, group.reps * PERF_TIMINGS)
            results.counters[(workload.key, group.batch, network, path)] = counts
            print(f"perf stat {group.label} {network} {path}: {'done' if counts else 'failed'}", flush=True)


def main(argv: Optional[Sequence[str]] = None) -> str:
    """Run the benchmark; print the Markdown page (and write it to ``--out``) and return it."""
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    if args.perf_child is not None:
        run_perf_child(json.loads(args.perf_child))
        return ""
    workloads = make_workloads(args)
    if any(w.kind == "onnx" for w in workloads):
        try:  # before the minutes of work, not after
            for module in ("onnx", "onnxruntime"):
                importlib.import_module(module)
        except ImportError:
            raise SystemExit(
                "the ONNX workload needs onnxruntime, onnx and onnxscript: pip install -e '.[inspect]'"
            ) from None
    torch.set_num_threads(args.threads)
    amp = resolve_amp("auto", torch.device("cpu"))
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="nlsam-attention-overhead-") as tmp:
        results = prepare(args, workloads, amp, Path(tmp))
        check_agreement(results)
        for group in results.groups:
            warm_up(group, args.seconds, patched=group.workload.kind != "onnx")
            print(f"{group.label}: warmed up, {group.reps} call(s) per timing", flush=True)
        measure(results.groups, args.rounds, args.seed)
        measure_counters(args, results, amp, Path(tmp))
    summarise(results, args.pairs, args.seed)
    text = format_report(args, argv, results, time.perf_counter() - started)
    return publish(text, args.out)


if __name__ == "__main__":
    main()
