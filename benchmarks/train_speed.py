"""Training throughput on the CPU, side by side on the same images: the public reference trainer
(akamaster/pytorch_resnet_cifar10, its own ``train()`` and data pipeline) against ``nlsam
train``'s real training loop, with and without NL-SAM.

    python benchmarks/train_speed.py --reference-dir PATH/TO/pytorch_resnet_cifar10 \\
        --data ../shared/data/cifar10-jpg.zip --out docs/benchmarks/train_speed.md

``--reference-dir`` is a checkout of https://github.com/akamaster/pytorch_resnet_cifar10 (its
``trainer.py`` and ``resnet.py``); both are imported from there and run, never copied.

* Reference: its ``trainer.train(train_loader, model, criterion, optimizer, epoch)`` with
  ``trainer.args`` from its own parser (``--arch NAME -b 128``, its default ``-j 4``), its model
  ``nn.DataParallel(resnet.NAME())``, ``nn.CrossEntropyLoss()``, SGD(lr, momentum 0.9, wd 1e-4),
  and its data pipeline as its ``main()`` builds it: RandomHorizontalFlip, RandomCrop(32, 4),
  ToTensor, Normalize in a shuffled DataLoader with 4 workers and pin_memory. The DataLoader
  reads a torchvision-style dataset serving the images that nlsam's loader decoded, as PIL
  images, so both sides train on the same pixels. Its ``.cuda()`` calls return their object
  (the benchmark runs on the CPU) and its prints are silenced.
* Ours: the data from :func:`nlsam.data.build_data` (channels_last, as ``nlsam train``), the
  network from :func:`nlsam.create_model` (channels_last), and ``nlsam train``'s
  ``nlsam.engine.Optimisation.train_epoch`` (autocast, loss, backward, optimizer, scheduler, progress check)
  with the shipped config ``cifar10_resnet20_fast`` read by the project's config loader.

Both sides take a bounded number of batches per timing from one long-lived loader iterator
(re-created only when an epoch is exhausted), so loader start-up is not paid every round. A
reference timing lasts until its loader workers have finished the batches they prefetch, so it
pays for producing as many batches as it trained on. Variants are timed round-robin (NL-SAM
right after or before the plain network of the same precision, alternating), and medians are
kept. ``--data builtin`` (nlsam's synthetic set) runs anywhere; without ``--data`` the CIFAR-10
JPEG zip is used when present.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import importlib.util
import io
import os
import platform
import statistics
import sys
import tempfile
import time
import types
import warnings
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence, Tuple

import torch
from torch import nn

import nlsam
from nlsam.attention import set_compiled_forward
from nlsam.configs import config_path
from nlsam.data import build_data
from nlsam.engine import AMP_MODES, DistInfo, Optimisation, Progress, TrainConfig, resolve_amp, resolve_config

REPO = Path(__file__).resolve().parents[1]
DEFAULT_CONFIG = config_path("cifar10_resnet20_fast")
DEFAULT_ZIP = REPO.parent / "shared" / "data" / "cifar10-jpg.zip"
REFERENCE_FILES = ("trainer.py", "resnet.py")
SCRIPT = "benchmarks/train_speed.py"


# ----------------------------------------------------------------------------- batches
class BatchStream:
    """One long-lived iterator over a loader: ``next()`` gives a batch and counts its images;
    the iterator is re-created only when the loader's epoch is exhausted."""

    def __init__(self, loader: Any) -> None:
        self.loader = loader
        self.iterator: Optional[Iterator] = None
        self.images = 0

    def next(self) -> Any:
        if self.iterator is None:
            self.iterator = iter(self.loader)
        try:
            batch = next(self.iterator)
        except StopIteration:
            self.iterator = iter(self.loader)
            batch = next(self.iterator)
        self.images += int(batch[1].shape[0])
        return batch

    def take(self, steps: int) -> "Batches":
        return Batches(self, steps)

    def close(self) -> None:
        """Drop the iterator (a DataLoader's workers end with it)."""
        self.iterator = None


class Batches:
    """``steps`` batches of a :class:`BatchStream`, as a loader a training loop can iterate once
    (``len()`` is what a loop prints as the length of its epoch)."""

    def __init__(self, stream: BatchStream, steps: int) -> None:
        self.stream, self.steps = stream, steps

    def __len__(self) -> int:
        return self.steps

    def __iter__(self) -> Iterator[Any]:
        for _ in range(self.steps):
            yield self.stream.next()


def wait_workers_idle(stream: BatchStream, timeout: float = 30.0, poll: float = 0.02) -> None:
    """Wait until the DataLoader worker processes behind ``stream`` have finished the batches
    they prefetch (all asleep, no CPU time used over two polls). Linux only (``/proc``); elsewhere,
    or without workers, it returns at once."""
    pids = [w.pid for w in getattr(stream.iterator, "_workers", ()) or () if w.pid]
    if not pids or not Path("/proc").is_dir():
        return

    def sample() -> Optional[List[Tuple[str, int]]]:
        out = []
        for pid in pids:
            try:
                fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            except OSError:  # the worker has exited: it is idle
                continue
            out.append((fields[0], int(fields[11]) + int(fields[12])))
        return out

    end = time.monotonic() + timeout
    before, quiet = sample(), 0
    while time.monotonic() < end:
        time.sleep(poll)
        now = sample()
        busy = any(state in "RD" for state, _ in now) or [t for _, t in now] != [t for _, t in before]
        quiet = 0 if busy else quiet + 1
        if quiet >= 2:
            return
        before = now


# ----------------------------------------------------------------------------- the reference
def check_reference_dir(directory: Path) -> None:
    """Exit with one line when ``directory`` is not a checkout of the reference trainer."""
    missing = [name for name in REFERENCE_FILES if not (directory / name).is_file()]
    if missing:
        raise SystemExit(
            f"{SCRIPT}: --reference-dir {directory} lacks {' and '.join(missing)}; pass a checkout of "
            "https://github.com/akamaster/pytorch_resnet_cifar10 (trainer.py and resnet.py)"
        )


def load_reference(directory: Path) -> types.ModuleType:
    """Import the reference's ``trainer.py`` (which imports its ``resnet.py``) from ``directory``,
    with its import-time prints silenced; return the trainer module."""
    check_reference_dir(directory)
    previous = sys.modules.get("resnet")
    spec = importlib.util.spec_from_file_location("resnet", directory / "resnet.py")
    resnet = importlib.util.module_from_spec(spec)
    sys.modules["resnet"] = resnet  # what trainer.py's ``import resnet`` finds
    try:
        spec.loader.exec_module(resnet)
        spec = importlib.util.spec_from_file_location("reference_trainer", directory / "trainer.py")
        trainer = importlib.util.module_from_spec(spec)
        with contextlib.redirect_stdout(io.StringIO()):
            spec.loader.exec_module(trainer)
    finally:
        if previous is None:
            sys.modules.pop("resnet", None)
        else:
            sys.modules["resnet"] = previous
    for name in ("parser", "train"):
        if not hasattr(trainer, name):
            raise SystemExit(f"{SCRIPT}: {directory / 'trainer.py'} has no {name}; is it the reference trainer?")
    trainer.resnet = resnet
    return trainer


@contextlib.contextmanager
def cpu_reference() -> Iterator[None]:
    """Run the reference as on a machine without CUDA: ``Tensor.cuda`` and ``Module.cuda``
    return their object, ``torch.cuda.is_available()`` is False (so ``DataParallel`` wraps
    without devices) and its prints go nowhere. Everything is restored on exit."""
    saved = (torch.Tensor.cuda, nn.Module.cuda, torch.cuda.is_available)
    torch.Tensor.cuda = lambda self, *args, **kwargs: self
    nn.Module.cuda = lambda self, *args, **kwargs: self
    torch.cuda.is_available = lambda: False
    try:
        with open(os.devnull, "w") as null, contextlib.redirect_stdout(null):
            yield
    finally:
        torch.Tensor.cuda, nn.Module.cuda, torch.cuda.is_available = saved


class PixelDataset(torch.utils.data.Dataset):
    """A torchvision-style dataset (``data``: N x H x W x 3 uint8, ``targets``: ints) whose
    ``__getitem__`` is torchvision CIFAR10's: a PIL image through ``transform``, and the target."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, transform: Optional[Callable] = None) -> None:
        self.data = images.permute(0, 2, 3, 1).contiguous().numpy()  # N x 3 x H x W -> N x H x W x 3
        self.targets = [int(t) for t in labels.tolist()]
        self.transform = transform

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, index: int) -> Tuple[Any, int]:
        from PIL import Image

        img, target = Image.fromarray(self.data[index]), self.targets[index]
        if self.transform is not None:
            img = self.transform(img)
        return img, target


def reference_loader(trainer: types.ModuleType, dataset: PixelDataset) -> torch.utils.data.DataLoader:
    """The reference's training DataLoader, as its ``main()`` builds it, over ``dataset``."""
    import torchvision.transforms as transforms

    args = trainer.args
    normalize = transforms.Normalize(mean=[0.485, 0.456, 0.406], std=[0.229, 0.224, 0.225])
    dataset.transform = transforms.Compose(
        [
            transforms.RandomHorizontalFlip(),
            transforms.RandomCrop(32, 4),
            transforms.ToTensor(),
            normalize,
        ]
    )
    return torch.utils.data.DataLoader(
        dataset, batch_size=args.batch_size, shuffle=True, num_workers=args.workers, pin_memory=True
    )


def reference_args(trainer: types.ModuleType, arch: str, batch_size: int, workers: Optional[int]) -> argparse.Namespace:
    """``trainer.args`` from the reference's own parser (``half`` and ``print_freq`` its defaults)."""
    argv = ["--arch", arch, "-b", str(batch_size)] + ([] if workers is None else ["-j", str(workers)])
    with contextlib.redirect_stderr(io.StringIO()) as err:
        try:
            return trainer.parser.parse_args(argv)
        except SystemExit:
            raise SystemExit(
                f"{SCRIPT}: the reference's parser refused {' '.join(argv)}: {err.getvalue().strip().splitlines()[-1]}"
            ) from None


def reference_timer(
    trainer: types.ModuleType, arch: str, stream: BatchStream
) -> Callable[[int, int], Tuple[int, float]]:
    """Build the reference's model, criterion and optimizer as its ``main()`` does; return
    ``run(epoch, steps) -> (images, seconds)`` that drives its ``train()`` over ``steps`` batches."""
    args = trainer.args
    with cpu_reference():
        model = torch.nn.DataParallel(trainer.resnet.__dict__[arch]())
        model.cuda()
        criterion = nn.CrossEntropyLoss().cuda()
    optimizer = torch.optim.SGD(model.parameters(), args.lr, momentum=args.momentum, weight_decay=args.weight_decay)
    if arch in ("resnet1202", "resnet110"):  # its warm-up lr for the first epoch
        for group in optimizer.param_groups:
            group["lr"] = args.lr * 0.1

    def run(epoch: int, steps: int) -> Tuple[int, float]:
        seen = stream.images
        start = time.perf_counter()
        with cpu_reference():
            trainer.train(stream.take(steps), model, criterion, optimizer, epoch)
        wait_workers_idle(stream)  # the batches prefetched for the next round are paid here
        return stream.images - seen, time.perf_counter() - start

    return run


# ----------------------------------------------------------------------------- ours
def our_data(data: Optional[str], batch_size: int) -> Tuple[str, Any, BatchStream]:
    """``(spec, data, stream)``: the dataset ``data`` names (default: the CIFAR-10 zip beside the
    repo, else the built-in one), loaded as ``nlsam train`` loads it, and a stream of its
    training batches."""
    spec = data or (str(DEFAULT_ZIP) if DEFAULT_ZIP.is_file() else "builtin")
    base = resolve_config(DEFAULT_CONFIG, dict(data=spec, device="cpu", batch_size=batch_size))
    loaded = build_data(
        base.data,
        data_dir=base.data_dir,
        batch_size=base.batch_size,
        device="cpu",
        seed=base.seed,
        num_workers=base.num_workers,
        channels_last=base.channels_last is not False,
        cache_dir=base.cache_dir,
    )
    return spec, loaded, BatchStream(loaded.train_loader)


def our_timer(
    cfg: TrainConfig,
    data: Any,
    stream: BatchStream,
    amp_dtype: Optional[torch.dtype],
    run_dir: Path,
    compiled_nlsam: bool = False,
) -> Callable[[int, int], Tuple[int, float]]:
    """The network ``cfg`` names and ``nlsam train``'s optimisation of it; return
    ``run(epoch, steps) -> (images, seconds)`` running its ``train_epoch`` over ``steps`` batches.
    ``compiled_nlsam`` switches its NL-SAM modules to their compiled forward."""
    device = torch.device("cpu")
    model = nlsam.create_model(cfg.model, attention=cfg.attention, num_classes=len(data.classes))
    if compiled_nlsam:
        set_compiled_forward(model)
    model.to(device)
    if cfg.channels_last is not False:
        model.to(memory_format=torch.channels_last)
    opt = Optimisation(cfg, model, len(data.train_loader), device, amp_dtype, DistInfo())
    progress = Progress(False, cfg.log_every)  # silent; the loss is still checked every log_every steps

    def run(epoch: int, steps: int) -> Tuple[int, float]:
        start = time.perf_counter()
        _, _, seen, _ = opt.train_epoch(epoch, stream.take(steps), progress, run_dir)
        return seen, time.perf_counter() - start

    return run


def dtype_name(dtype: Optional[torch.dtype]) -> str:
    return {None: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}.get(dtype, str(dtype))


def precisions(modes: Sequence[str]) -> List[Tuple[Optional[torch.dtype], str]]:
    """``(dtype, label)`` for each distinct dtype the ``--amp`` modes resolve to on the CPU;
    modes that resolve alike are timed once, labelled e.g. ``fp32 (off, auto)``."""
    found: Dict[Optional[torch.dtype], List[str]] = {}
    for mode in modes:
        found.setdefault(resolve_amp(mode, torch.device("cpu")), []).append(mode)
    return [(dtype, f"{dtype_name(dtype)} ({', '.join(names)})") for dtype, names in found.items()]


# ----------------------------------------------------------------------------- measuring
def measure(
    timers: Dict[str, Callable[[int, int], Tuple[int, float]]],
    order: Callable[[int], List[str]],
    rounds: int,
    steps: int,
    warmup: int,
) -> Dict[str, List[float]]:
    """Warm every variant up, then time each once per round in ``order(round)``; return each
    variant's images/s per round."""
    for run in timers.values():
        run(0, warmup)
    samples: Dict[str, List[float]] = {name: [] for name in timers}
    for r in range(rounds):
        for name in order(r):
            images, seconds = timers[name](r + 1, steps)
            samples[name].append(images / seconds)
    return samples


def paired_overhead(samples: Dict[str, List[float]], variant: str, base: str) -> List[float]:
    """Per-round time overhead of ``variant`` over ``base`` in %: each round timed the two back
    to back, so a slow spell of the machine hits both and cancels in their ratio."""
    return [100.0 * (b / v - 1.0) for b, v in zip(samples[base], samples[variant])]


def pipeline_speed(stream: BatchStream, batches: int) -> float:
    """Images/s of a loader alone over ``batches`` batches (workers' prefetch included)."""
    wait_workers_idle(stream)
    seen, start = stream.images, time.perf_counter()
    for _ in range(batches):
        stream.next()
    wait_workers_idle(stream)
    return (stream.images - seen) / (time.perf_counter() - start)


# ----------------------------------------------------------------------------- the page
def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_and_data(data: Any, data_spec: str, batch_size: int) -> str:
    """The page line naming the machine, the time, the data (a path shown by its file name) and
    the batch size."""
    now = datetime.datetime.now(datetime.timezone.utc)
    shown = data_spec if not os.path.isabs(data_spec) else Path(data_spec).name
    return (
        f"Machine: {cpu_model()}, {torch.get_num_threads()} threads, torch {torch.__version__}, Python "
        f"{platform.python_version()}; {now:%Y-%m-%d %H:%M} UTC. Data: `{shown}` ({data.num_train} training "
        f"images); batch {batch_size}"
    )


def shown_command(argv: Sequence[str]) -> str:
    """The command line, with the reference checkout shown as PATH/TO/pytorch_resnet_cifar10."""
    shown, hide = [SCRIPT], False
    for arg in argv:
        if hide:
            shown.append("PATH/TO/pytorch_resnet_cifar10")
        elif arg.startswith("--reference-dir="):
            shown.append("--reference-dir=PATH/TO/pytorch_resnet_cifar10")
        else:
            shown.append(arg)
        hide = arg == "--reference-dir"
    return "python " + " ".join(shown)


def render(
    argv: Sequence[str],
    args: argparse.Namespace,
    data: Any,
    data_spec: str,
    cfg: TrainConfig,
    ref_args: argparse.Namespace,
    rows: List[Dict[str, Any]],
    pipeline: Optional[Tuple[float, float]],
) -> str:
    """The Markdown page: command, machine, what each side runs, the table."""
    workers = ref_args.workers
    now = datetime.datetime.now(datetime.timezone.utc)
    try:
        config = args.config.resolve().relative_to(REPO)
    except ValueError:
        config = args.config
    lines = [
        "# Training throughput: the reference trainer against `nlsam train` (CPU)",
        "",
        f"Command: `{shown_command(argv)}`",
        "",
        f"Machine: {cpu_model()}, {torch.get_num_threads()} threads ({os.cpu_count()} CPUs), torch "
        f"{torch.__version__}, Python {platform.python_version()}; {now:%Y-%m-%d %H:%M} UTC.",
        "",
        f"Data: `{data_spec}` ({data.num_train} training images of {data.input_size[0]}x{data.input_size[1]}, "
        f"{len(data.classes)} classes), decoded once by nlsam's loader; both sides train on these pixels. "
        f"Batch {args.batch_size}; median of {args.rounds} round{'' if args.rounds == 1 else 's'} x "
        f"{args.steps} batches per variant, "
        f"after {args.warmup} warm-up batch{'' if args.warmup == 1 else 'es'} each.",
        "",
        "- **reference**: akamaster/pytorch_resnet_cifar10, imported from a checkout: its `trainer.train()` "
        "with `trainer.args` from its own parser, `nn.DataParallel(resnet.NAME())`, `nn.CrossEntropyLoss()`, "
        f"SGD (lr {ref_args.lr:g}, momentum {ref_args.momentum:g}, wd {ref_args.weight_decay:g}), fp32, "
        "contiguous memory; its data pipeline as its `main()` builds it "
        f"(RandomHorizontalFlip, RandomCrop(32, 4), ToTensor, Normalize; DataLoader shuffle, "
        f"{workers} workers, pin_memory) over the same images served as PIL images. Its `.cuda()` calls "
        "return their object. A timing lasts until its workers have finished their prefetched batches.",
        f"- **ours**: `nlsam train`'s loop (`nlsam.engine.Optimisation.train_epoch`: autocast, loss, backward, "
        f"optimizer, scheduler, progress check) with `{config}` ({'nesterov ' if cfg.nesterov else ''}"
        f"{cfg.optimizer.upper()}, lr {cfg.lr:g}, wd {cfg.weight_decay:g}, label smoothing {cfg.label_smoothing:g}, "
        f"{cfg.scheduler} schedule), "
        "nlsam's in-memory loader (batched crop + flip + normalise), `nlsam.create_model(NAME, "
        'attention=None | "nlsam")`, channels_last. **plain**: no attention; **NL-SAM**: NL-SAM in its '
        "default places.",
        "- mode: the dtype autocast used (the `--amp` values that resolve to it); the reference always "
        "trains in fp32. NL-SAM overhead: median over rounds of the paired ratio plain / NL-SAM (timed "
        "back to back in each round), lowest and highest round in brackets. plain / reference: ratio "
        "of the medians.",
        "",
        "| model | mode | reference img/s | plain img/s | NL-SAM img/s | NL-SAM overhead [range] | plain / reference |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for row in rows:
        o = row["overhead"]
        lines.append(
            f"| {row['model']} | {row['mode']} | {row['reference']:.0f} | {row['plain']:.0f} | {row['nlsam']:.0f} "
            f"| {statistics.median(o):+.1f}% [{min(o):+.1f}, {max(o):+.1f}] | {row['plain'] / row['reference']:.2f} |"
        )
    if pipeline is not None:
        ours, ref = pipeline
        lines += [
            "",
            f"Data pipeline alone, {args.pipeline_batches} batches of {args.batch_size}: nlsam's "
            f"in-memory loader {ours:.0f} img/s; the reference's DataLoader ({workers} workers, PIL "
            f"transforms) {ref:.0f} img/s.",
        ]
    return "\n".join(lines) + "\n"


# ----------------------------------------------------------------------------- main
def require_positive(parser: argparse.ArgumentParser, args: argparse.Namespace, names: Sequence[str]) -> None:
    """Stop with the parser's error when any of the options ``names`` (dest names) is below 1."""
    for name in names:
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be >= 1")


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--reference-dir",
        type=Path,
        required=True,
        help="checkout of akamaster/pytorch_resnet_cifar10 (trainer.py, resnet.py)",
    )
    parser.add_argument(
        "--data",
        default=None,
        help=f"dataset for both sides: a path nlsam reads (default {DEFAULT_ZIP} when present) "
        "or builtin[:N_TRAIN[:N_TEST[:SEED]]]",
    )
    parser.add_argument("--models", nargs="+", default=["resnet20", "resnet56", "resnet110"])
    parser.add_argument(
        "--amp",
        nargs="+",
        default=["off", "auto"],
        choices=AMP_MODES,
        help="our precisions; auto is what nlsam train picks on the CPU (modes that resolve "
        "to the same dtype are timed once)",
    )
    parser.add_argument("--rounds", type=int, default=5, help="round-robin repetitions (medians kept)")
    parser.add_argument("--steps", type=int, default=20, help="batches per timing")
    parser.add_argument("--warmup", type=int, default=3, help="warm-up batches per variant")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument(
        "--config",
        type=config_path,
        default=DEFAULT_CONFIG,
        help="our training recipe: a YAML file or a shipped config's name",
    )
    parser.add_argument(
        "--reference-workers", type=int, default=None, help="the reference's -j (default: its own default, 4)"
    )
    parser.add_argument(
        "--pipeline-batches", type=int, default=100, help="batches for the data-pipeline-alone figure (0: skip it)"
    )
    parser.add_argument("--out", type=Path, default=None, help="write the Markdown page here")
    args = parser.parse_args(argv)
    require_positive(parser, args, ("rounds", "steps", "batch_size"))
    if args.warmup < 0 or args.pipeline_batches < 0:
        parser.error("--warmup and --pipeline-batches must be >= 0")
    return args


def main(argv: Optional[Sequence[str]] = None) -> str:
    """Run the benchmark; print the Markdown page (and write it to ``--out``) and return it."""
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    trainer = load_reference(args.reference_dir)
    missing = [m for m in args.models if not callable(getattr(trainer.resnet, m, None))]
    if missing:
        raise SystemExit(f"{SCRIPT}: the reference's resnet.py has no {', '.join(missing)}")
    data_spec, shown_data = args.data, args.data
    if data_spec is None:
        if DEFAULT_ZIP.is_file():
            data_spec, shown_data = str(DEFAULT_ZIP), os.path.relpath(DEFAULT_ZIP, REPO)
        else:
            data_spec = shown_data = "builtin"
            print(f"{SCRIPT}: {DEFAULT_ZIP} not found; using nlsam's builtin data", file=sys.stderr)
    with warnings.catch_warnings():
        # the reference's pin_memory without a GPU, and its 4 workers on fewer CPUs: its own settings
        warnings.filterwarnings("ignore", message=".*pin_memory.*")
        warnings.filterwarnings("ignore", message="This DataLoader will create")
        text = run(args, argv, data_spec, shown_data, trainer)
    print(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text)
    return text


def run(
    args: argparse.Namespace, argv: Sequence[str], data_spec: str, shown_data: str, trainer: types.ModuleType
) -> str:
    """Load the data, time every variant of every model, and return the Markdown page."""
    torch.manual_seed(0)

    def config(model: str, attention: Optional[str], amp: str) -> TrainConfig:
        return resolve_config(
            args.config,
            dict(data=data_spec, model=model, attention=attention, amp=amp, device="cpu", batch_size=args.batch_size),
        )

    # our data, as nlsam train loads it (_load_data); its decoded pixels feed the reference too
    cfg = config(args.models[0], "nlsam", "off")
    channels_last = cfg.channels_last if cfg.channels_last is not None else True
    data = build_data(
        cfg.data,
        data_dir=cfg.data_dir,
        batch_size=cfg.batch_size,
        eval_batch_size=cfg.eval_batch_size,
        device="cpu",
        seed=cfg.seed,
        num_workers=cfg.num_workers,
        channels_last=channels_last,
        cache_dir=cfg.cache_dir,
    )
    if not hasattr(data.train_loader, "images"):
        raise SystemExit(f"{SCRIPT}: {data_spec} is not a small-image dataset nlsam holds in memory")
    ours = BatchStream(data.train_loader)
    trainer.args = reference_args(trainer, args.models[0], args.batch_size, args.reference_workers)
    theirs = BatchStream(reference_loader(trainer, PixelDataset(data.train_loader.images, data.train_loader.labels)))
    modes = precisions(args.amp)

    rows: List[Dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="train_speed-") as run_dir, contextlib.ExitStack() as stack:
        stack.callback(theirs.close)
        for name in args.models:
            trainer.args = reference_args(trainer, name, args.batch_size, args.reference_workers)
            timers = {"reference": reference_timer(trainer, name, theirs)}
            for dtype, label in modes:
                amp = "off" if dtype is None else dtype_name(dtype)
                for variant, attention in (("plain", None), ("nlsam", "nlsam")):
                    timers[f"{variant} {label}"] = our_timer(
                        config(name, attention, amp), data, ours, dtype, Path(run_dir)
                    )

            def order(r: int) -> List[str]:
                pairs = [[f"plain {label}", f"nlsam {label}"][:: 1 if r % 2 == 0 else -1] for _, label in modes]
                return ["reference"] + [v for pair in pairs for v in pair]

            samples = measure(timers, order, args.rounds, args.steps, args.warmup)
            reference = statistics.median(samples["reference"])
            for _, label in modes:
                row = dict(
                    model=name,
                    mode=label,
                    reference=reference,
                    plain=statistics.median(samples[f"plain {label}"]),
                    nlsam=statistics.median(samples[f"nlsam {label}"]),
                    overhead=paired_overhead(samples, f"nlsam {label}", f"plain {label}"),
                )
                rows.append(row)
                print(
                    f"{name} {label}: reference {reference:.0f}, plain {row['plain']:.0f}, NL-SAM "
                    f"{row['nlsam']:.0f} img/s",
                    file=sys.stderr,
                    flush=True,
                )
        pipeline = None
        if args.pipeline_batches:
            pipeline = (pipeline_speed(ours, args.pipeline_batches), pipeline_speed(theirs, args.pipeline_batches))
    return render(argv, args, data, shown_data, cfg, trainer.args, rows, pipeline)


if __name__ == "__main__":
    main()
