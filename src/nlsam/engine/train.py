"""The training loop behind ``nlsam train``.

One process or many (torchrun): the same code path, DistributedDataParallel when
``WORLD_SIZE > 1``. Each epoch atomically rewrites ``last.pt`` (the commit point), then
``best.pt`` on a new best test top-1, then ``metrics.jsonl`` (see :mod:`.run_dir`), so a killed
run loses at most the epoch in progress and ``--resume`` continues it to the same result.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import random
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any, Callable, Dict, Optional, Tuple, cast

import numpy as np
import torch
from torch import nn

from .._io import WriteError, atomic_write_bytes
from .._ranges import short_repr
from .checkpoint import _rng_state, _set_rng_state, _state_dict_mismatch, best_epoch, load_checkpoint, save_checkpoint
from .config import TrainConfig, load_yaml, save_yaml
from .distributed import DistInfo, _all_reduce_sum, _barrier, _cleanup, _init_distributed
from .evaluate import evaluate
from .loading import _share_plain_init, build_network
from .precision import machine_name, precision_name, resolve_amp
from .run_dir import _repair_run_dir, _write_metrics, lock_run_dir, read_metrics, recorded_machines

__all__ = [
    "NonFiniteLossError",
    "Optimisation",
    "Progress",
    "default_run_dir",
    "lr_factor",
    "resolve_device",
    "resume_changes",
    "train",
]


class NonFiniteLossError(RuntimeError):
    """The training loss became NaN or infinite."""


# ----------------------------------------------------------------------------- hardware set-up
def resolve_device(name: str, local_rank: int = 0) -> torch.device:
    """``auto`` picks CUDA when present, else the CPU; asking for CUDA without one is an error."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda":
        if not torch.cuda.is_available():
            raise ValueError("device 'cuda' was asked for but no CUDA device is available; use --device cpu")
        return torch.device("cuda", local_rank)
    if name == "cpu":
        return torch.device("cpu")
    raise ValueError(f"unknown device {name!r}; valid: auto, cpu, cuda")


def _seed_everything(seed: int, deterministic: bool) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        # some CUDA kernels (e.g. upsampling backward) have no deterministic version: warn, don't fail
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.deterministic = True
        torch.backends.cudnn.benchmark = False
    else:
        torch.backends.cudnn.benchmark = True


# ----------------------------------------------------------------------------- optimisation
def _build_optimizer(model: nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    params = [p for p in model.parameters() if p.requires_grad]
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(
            params, lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.nesterov, weight_decay=cfg.weight_decay
        )
    return torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)


def lr_factor(cfg: TrainConfig, epoch: float) -> float:
    """Learning rate as a fraction of ``cfg.lr`` at a (fractional) epoch.

    * warm-up: ``warmup_epochs`` at the constant ``warmup_lr`` (He et al.'s 0.01 for ResNet-110)
      or, without ``warmup_lr``, a linear ramp from 0;
    * ``step``: divide by ``1/gamma`` at each of ``milestones`` (the paper's /10 at 82 and 123);
    * ``cosine``: cosine decay to 0 over the epochs after warm-up;
    * ``linear``: linear decay to 0 over the epochs after warm-up (the budget-aware schedule of
      Li et al., "Budgeted training", ICLR 2020);
    * ``onecycle``: linear rise from lr/25 over the first 15% of training, then cosine to 0;
    * ``constant``.
    """
    if epoch < cfg.warmup_epochs:
        if cfg.warmup_lr is not None:
            return cfg.warmup_lr / cfg.lr
        return (epoch + 1e-3) / cfg.warmup_epochs
    if cfg.scheduler == "step":
        return cfg.gamma ** sum(epoch >= m for m in cfg.milestones)
    if cfg.scheduler == "constant":
        return 1.0
    span = max(cfg.epochs - cfg.warmup_epochs, 1e-8)
    t = min(max((epoch - cfg.warmup_epochs) / span, 0.0), 1.0)
    if cfg.scheduler == "cosine":
        return 0.5 * (1.0 + math.cos(math.pi * t))
    if cfg.scheduler == "linear":
        return 1.0 - t
    rise = 0.15
    if t < rise:
        return 1.0 / 25 + (1.0 - 1.0 / 25) * t / rise
    return 0.5 * (1.0 + math.cos(math.pi * (t - rise) / (1.0 - rise)))


# ----------------------------------------------------------------------------- progress output
class Progress:
    """A one-line progress bar on a terminal, redrawn at most every ``refresh_s`` seconds (and
    at the end of each pass); plain log lines every ``log_every`` steps elsewhere (files, CI)."""

    def __init__(
        self,
        enabled: bool,
        log_every: int,
        refresh_s: float = 0.5,
        tty: Optional[bool] = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.enabled = enabled
        self.tty = enabled and (sys.stderr.isatty() if tty is None else tty)
        self.log_every = log_every
        self.refresh_s = refresh_s
        self.clock = clock
        self._drawn = -math.inf

    def due(self, step: int, steps: int) -> bool:
        """Whether the terminal bar would be redrawn at this step (cheap: no device sync)."""
        return self.tty and (step == steps or self.clock() - self._drawn >= self.refresh_s)

    def _draw(self, step: int, steps: int, text: str) -> None:
        if not self.due(step, steps):
            return
        self._drawn = self.clock()
        filled = int(20 * step / max(steps, 1))
        sys.stderr.write(f"\r[{'#' * filled}{'.' * (20 - filled)}] {text}\033[K")
        sys.stderr.flush()

    def step(self, epoch: int, epochs: int, step: int, steps: int, loss: float, lr: float, ips: float) -> None:
        if not self.enabled:
            return
        text = f"epoch {epoch + 1}/{epochs} [{step}/{steps}] loss {loss:.4f} lr {lr:.4g} {ips:.0f} img/s"
        if self.tty:
            self._draw(step, steps, text)
        elif step % self.log_every == 0 or step == steps:
            print(text, file=sys.stderr, flush=True)

    def eval_step(self, step: int, steps: int) -> None:
        """Progress of the evaluation after an epoch (terminal only)."""
        if self.tty:
            self._draw(step, steps, f"evaluating [{step}/{steps}]")

    def end_epoch(self) -> None:
        if self.tty:
            sys.stderr.write("\r\033[K")
            sys.stderr.flush()
            self._drawn = -math.inf


def _log(dist_info: DistInfo, message: str) -> None:
    if dist_info.is_main:
        print(message, flush=True)


def _warn(dist_info: DistInfo, message: str) -> None:
    if dist_info.is_main:
        print(f"nlsam train: warning: {message}", file=sys.stderr, flush=True)


# ----------------------------------------------------------------------------- the run directory
#: Settings a resumed run may change: they do not alter what was trained so far, and the rest
#: of the run follows them (more or fewer ``epochs`` re-plan the lr schedule from the next epoch).
#: Every other setting must equal the saved one.
_RESUME_CHANGEABLE = (
    "epochs",
    "device",
    "amp",
    "compile",
    "channels_last",
    "deterministic",
    "num_workers",
    "eval_batch_size",
    "data_dir",
    "download",
    "cache_dir",
    "log_every",
    "tensorboard",
)
_NOT_COMPARED = ("out", "resume")


def default_run_dir(cfg: TrainConfig) -> Path:
    """Where ``nlsam train`` writes a run without ``--out``: ``runs/DATA-MODEL-ATTENTION-seedSEED``."""
    data = Path(cfg.data).stem if os.sep in cfg.data or cfg.data.endswith(".zip") else cfg.data
    return Path("runs") / f"{data}-{cfg.model}-{cfg.attention or 'plain'}-seed{cfg.seed}"


def _check_out_dir(run_dir: Path) -> None:
    """Make sure the run directory can be created and written, before any data is loaded."""
    if run_dir.exists() and not run_dir.is_dir():
        raise ValueError(f"--out {run_dir} is a file, not a directory; choose another --out")
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ValueError(f"--out {run_dir} cannot be created: {exc.strerror or exc}; choose another --out") from None
    if not os.access(run_dir, os.W_OK | os.X_OK):
        raise ValueError(f"--out {run_dir} is not writable; choose another --out")


def resume_changes(saved: Dict[str, Any], cfg: TrainConfig) -> Dict[str, tuple]:
    """The settings in which ``cfg`` differs from a run's ``saved`` config, as ``{key: (saved,
    now)}``. Refuses (``ValueError``) any change outside :data:`_RESUME_CHANGEABLE`."""
    defaults = TrainConfig().to_dict()
    changes = {}
    for key, value in cfg.to_dict().items():
        before = saved.get(key, defaults[key])
        if key not in _NOT_COMPARED and before != value and not (key == "data" and _same_path(before, value)):
            changes[key] = (before, value)
    refused = [k for k in changes if k not in _RESUME_CHANGEABLE]
    if refused:
        detail = ", ".join(f"{k} (saved {changes[k][0]!r}, now {changes[k][1]!r})" for k in refused)
        raise ValueError(
            f"cannot resume {cfg.out} with changed {detail}: a resumed run keeps its settings except "
            f"{', '.join(_RESUME_CHANGEABLE)}; start a new run with another --out to change them"
        )
    return changes


def _check_same_run(run_dir: Path, state: Dict[str, Any]) -> None:
    """Refuse a ``last.pt`` whose settings are not those the run directory's ``config.yaml``
    records (outside :data:`_RESUME_CHANGEABLE`): a checkpoint copied from another run, or a
    config edited by hand. Without this the difference reads as a change asked for now."""
    path = run_dir / "config.yaml"
    if not path.is_file():
        return
    try:
        recorded = load_yaml(path)
    except ValueError:  # an unreadable config.yaml is reported where it is read for the resume
        return
    defaults = TrainConfig().to_dict()
    differ = [
        key
        for key in defaults
        if key not in _RESUME_CHANGEABLE + _NOT_COMPARED
        and _differs(key, state["config"].get(key, defaults[key]), recorded.get(key, defaults[key]))
    ]
    if differ:
        detail = ", ".join(
            f"{k} ({short_repr(state['config'].get(k, defaults[k]))} in last.pt, "
            f"{short_repr(recorded.get(k, defaults[k]))} in config.yaml)"
            for k in differ[:4]
        )
        more = f" and {len(differ) - 4} more" if len(differ) > 4 else ""
        raise ValueError(
            f"cannot resume {run_dir}: its last.pt and config.yaml describe different runs: {detail}{more}; "
            "last.pt was copied from another run, or config.yaml was edited. Put back the run's own last.pt "
            "(or config.yaml: a resumed run keeps its settings), or start a new run with another --out"
        )


def _differs(key: str, a: Any, b: Any) -> bool:
    return a != b and not (key == "data" and _same_path(a, b))


def _same_path(a: Any, b: Any) -> bool:
    """Whether ``a`` and ``b`` name one existing file or folder (``../data/x.zip`` and its
    absolute path, say): a resumed run may name its data either way."""
    try:
        return os.path.samefile(str(a), str(b))
    except (OSError, TypeError, ValueError):
        return False


def _prepare_run_dir(cfg: TrainConfig) -> tuple:
    """Return ``(config, run_dir, resume_state)``: check ``--out``, and for ``--resume`` that the
    run exists and the settings may change as asked; refuse to overwrite an existing run."""
    run_dir = Path(cfg.out) if cfg.out else default_run_dir(cfg)
    cfg = replace(cfg, out=str(run_dir))
    _check_out_dir(run_dir)
    last = run_dir / "last.pt"
    if cfg.resume:
        if not last.is_file():
            raise FileNotFoundError(f"cannot resume: no {last}; start the run without --resume")
        state = load_checkpoint(last)
        _check_same_run(run_dir, state)
        return cfg, run_dir, state
    if last.exists():
        raise ValueError(
            f"run directory {run_dir} already holds a run; add --resume to continue it or choose another --out"
        )
    trained = len(read_metrics(run_dir)) if (run_dir / "metrics.jsonl").is_file() else 0
    if trained:  # a run whose checkpoints are gone: starting again would overwrite its epochs
        raise ValueError(
            f"run directory {run_dir} holds metrics.jsonl with {trained} epoch(s) but no last.pt to resume from; "
            "starting again would overwrite them: move the folder away or choose another --out"
        )
    return cfg, run_dir, None


# ----------------------------------------------------------------------------- the network
def _network_error(cfg: TrainConfig, meta: Dict[str, Any]) -> Optional[str]:
    """Why the network ``cfg`` describes cannot be built for the data ``meta`` describes
    (``None``: it can). Built on the meta device: no memory, no time."""
    try:
        build_network(cfg, meta, device="meta")
    except ValueError as exc:
        return str(exc)
    return None


def _native_input_size(cfg: TrainConfig) -> tuple:
    """The input size the network ``cfg`` names is built for (32 x 32 for CIFAR networks,
    224 x 224 for ImageNet ones); fails early on options the network cannot take."""
    # nlsam's networks keep their (H, W) as input_size (nn.Module's __getattr__ types it a tensor or module)
    return tuple(cast(Tuple[int, int], build_network(cfg, device="meta").input_size))


def _choose_image_size(cfg: TrainConfig, meta: Dict[str, Any]) -> Optional[int]:
    """``None`` when the network fits the data ``meta`` describes; else the network's native
    size, to which the data are resized (e.g. 28 x 28 images, whose 7 x 7 last stage NL-SAM's
    k = 2 cannot pool). Raises the network's own error when neither fits or ``image_size`` was set."""
    error = _network_error(cfg, meta)
    if error is None:
        return None
    native = _native_input_size(cfg)
    if cfg.image_size is not None or _network_error(cfg, dict(meta, input_size=native)) is not None:
        raise ValueError(error)
    return int(native[0])


def _data_meta(data) -> Dict[str, Any]:
    """What a :class:`~nlsam.data.DataBundle` looked like (classes, input size, normalisation):
    a checkpoint's ``meta`` and ``meta.json``, enough to rebuild the network and its cost."""
    return dict(
        classes=list(data.classes),
        input_size=list(data.input_size),
        in_chans=data.in_chans,
        mean=list(data.mean),
        std=list(data.std),
        data=data.name,
    )


def _final_feature_size(model: nn.Module, input_size) -> Optional[tuple]:
    """(H, W) of a network's last feature map for ``input_size``, from its ``feature_info``."""
    info = getattr(model, "feature_info", None)
    if not info:
        return None
    reduction = info[-1]["reduction"]
    return tuple(math.ceil(s / reduction) for s in input_size)


def train(cfg: TrainConfig, on_epoch_end: Optional[Callable[[Dict[str, Any]], None]] = None) -> Dict[str, Any]:
    """Run a full training as described by ``cfg``; return the summary of the final epoch."""
    cfg.validate()
    device_type = "cuda" if cfg.device == "cuda" or (cfg.device == "auto" and torch.cuda.is_available()) else "cpu"
    dist_info = _init_distributed(device_type)
    try:
        _native_input_size(cfg)  # unknown network options fail here, before anything is written
        cfg, run_dir, resume_state = _prepare_run_dir(cfg)
        # one process trains into a directory at a time (rank 0 speaks for a torchrun job)
        with lock_run_dir(run_dir) if dist_info.is_main else contextlib.nullcontext():
            return _train(cfg, run_dir, resume_state, dist_info, on_epoch_end)
    finally:
        _cleanup()


def _report_resume(
    cfg: TrainConfig, run_dir: Path, resume_state: Optional[Dict[str, Any]], dist_info: DistInfo
) -> None:
    """Check what a resume changes, make the run directory whole, and say both."""
    repairs: list = []
    if resume_state is not None:
        for key, (before, now) in resume_changes(resume_state["config"], cfg).items():
            _log(
                dist_info,
                f"resume: {key} changed from {before!r} to {now!r}"
                + (" (the lr schedule follows the new length from here on)" if key == "epochs" else ""),
            )
    if dist_info.is_main:
        repairs = _repair_run_dir(run_dir, resume_state)
    for repair in repairs:
        _log(dist_info, f"repaired {run_dir}: {repair}")


def _load_data(cfg: TrainConfig, dist_info: DistInfo, device: torch.device, channels_last: bool) -> tuple:
    """``(config, data)``: the data, resized to the network's native size when their own size
    does not fit it (:func:`_choose_image_size`); the config records the size used."""
    from ..data import build_data

    def load(image_size: Optional[int]):
        # rank 0 downloads and fills the decode cache first; the other ranks then read it
        if dist_info.enabled and not dist_info.is_main:
            _barrier()
        bundle = build_data(
            cfg.data,
            data_dir=cfg.data_dir,
            batch_size=cfg.batch_size,
            eval_batch_size=cfg.eval_batch_size,
            device=device,
            seed=cfg.seed,
            rank=dist_info.rank,
            world_size=dist_info.world_size,
            download=cfg.download and dist_info.is_main,
            num_workers=cfg.num_workers,
            image_size=image_size,
            channels_last=channels_last,
            cache_dir=cfg.cache_dir,
        )
        if dist_info.enabled and dist_info.is_main:
            _barrier()
        return bundle

    data = load(cfg.image_size)
    resize_to = _choose_image_size(cfg, _data_meta(data))
    if resize_to is not None:
        _log(
            dist_info,
            f"images of {data.input_size[0]}x{data.input_size[1]} do not fit {cfg.model} + "
            f"{cfg.attention}; resizing them to the network's native {resize_to}x{resize_to}",
        )
        cfg = replace(cfg, image_size=resize_to)
        data = load(cfg.image_size)
    return cfg, data


def _build_model(cfg: TrainConfig, data, fresh: bool, dist_info: DistInfo) -> nn.Module:
    """The network for ``data``, from ``init_from``'s weights on a fresh run; warns when the
    input is too small for it."""
    model = build_network(cfg, _data_meta(data))
    if fresh and not cfg.init_from:
        # every layer shared with the plain network starts as in the plain network of this seed,
        # whatever the attention modules drew from the random generator (paired comparisons)
        _share_plain_init(model, cfg, _data_meta(data), cfg.seed + dist_info.rank)
    if cfg.init_from and fresh:
        from ..models import load_pretrained
        from .checkpoint import resolve_checkpoint_path

        source = cfg.init_from
        if os.path.isdir(source):  # an nlsam run directory: its best network
            source = str(resolve_checkpoint_path(source))
        _log(dist_info, f"init from {source}: {load_pretrained(model, source)}")
    final = _final_feature_size(model, data.input_size)
    if final is not None and min(final) < 2:
        native = _native_input_size(cfg)
        _warn(
            dist_info,
            f"{cfg.model} reduces {data.input_size[0]}x{data.input_size[1]} images to a "
            f"{final[0]}x{final[1]} last feature map, too small for its last stages to see any "
            f"spatial context; it is built for {native[0]}x{native[1]}: use --image-size "
            f"{native[0]} or a network for small images (resnet20 ... resnet164)",
        )
    return model


class Optimisation:
    """The model being trained and everything that updates it, with one method per epoch."""

    def __init__(
        self,
        cfg: TrainConfig,
        model: nn.Module,
        steps_per_epoch: int,
        device: torch.device,
        amp_dtype: Optional[torch.dtype],
        dist_info: DistInfo,
    ) -> None:
        self.cfg, self.model, self.device, self.amp_dtype = cfg, model, device, amp_dtype
        self.world_size = dist_info.world_size
        self.optimizer = _build_optimizer(model, cfg)
        self.steps_per_epoch = steps_per_epoch
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lambda step: lr_factor(cfg, step / steps_per_epoch)
        )
        self.scaler = torch.amp.GradScaler(device.type, enabled=amp_dtype == torch.float16)
        self.criterion = nn.CrossEntropyLoss(label_smoothing=cfg.label_smoothing)
        self.train_model: nn.Module = model
        if dist_info.enabled:
            self.train_model = nn.parallel.DistributedDataParallel(
                model, device_ids=[device.index] if device.type == "cuda" else None
            )
        if cfg.compile:
            self.train_model = cast(nn.Module, torch.compile(self.train_model))  # an OptimizedModule

    def state(self) -> Dict[str, Any]:
        return dict(
            model=self.model.state_dict(),
            optimizer=self.optimizer.state_dict(),
            scheduler=self.scheduler.state_dict(),
            scaler=self.scaler.state_dict(),
        )

    def load_state(self, state: Dict[str, Any]) -> None:
        mismatch = _state_dict_mismatch(self.model, state["model"])
        if mismatch:
            raise ValueError(
                f"cannot resume {self.cfg.out}: its last.pt holds the weights of another network than "
                f"its config describes ({mismatch}); start a new run with another --out"
            )
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.scaler.load_state_dict(state["scaler"])

    @property
    def lr(self) -> float:
        return self.optimizer.param_groups[0]["lr"]

    def train_epoch(self, epoch: int, loader, progress: Progress, run_dir: Path) -> tuple:
        """One pass over ``loader``; return this process's ``(loss sum, correct, seen, seconds)``."""
        cfg, device, amp_dtype = self.cfg, self.device, self.amp_dtype
        self.train_model.train()
        start = time.perf_counter()
        loss_sum = torch.zeros((), dtype=torch.float64, device=device)
        correct = torch.zeros((), dtype=torch.float64, device=device)
        seen = 0
        for step, (images, labels) in enumerate(loader, start=1):
            with torch.autocast(device.type, dtype=amp_dtype or torch.float32, enabled=amp_dtype is not None):
                logits = self.train_model(images)
                loss = self.criterion(logits, labels)
            self.optimizer.zero_grad(set_to_none=True)
            self.scaler.scale(loss).backward()
            if cfg.grad_clip:
                self.scaler.unscale_(self.optimizer)
                nn.utils.clip_grad_norm_(self.model.parameters(), cfg.grad_clip)
            self.scaler.step(self.optimizer)
            self.scaler.update()
            self.scheduler.step()
            loss_sum += loss.detach().double() * labels.shape[0]
            correct += (logits.detach().argmax(1) == labels).sum()
            seen += labels.shape[0]
            steps = self.steps_per_epoch
            if step % cfg.log_every == 0 or step == steps or progress.due(step, steps):
                mean_loss = loss_sum.item() / seen
                if not math.isfinite(mean_loss):
                    raise NonFiniteLossError(
                        f"training loss became {mean_loss} at epoch {epoch + 1}, step {step}; stopped. "
                        f"The last good checkpoint is kept in {run_dir / 'last.pt'} (if an epoch finished). "
                        "Try a lower --lr, or --amp off."
                    )
                progress.step(
                    epoch,
                    cfg.epochs,
                    step,
                    steps,
                    mean_loss,
                    self.lr,
                    seen * self.world_size / (time.perf_counter() - start),
                )
        return loss_sum.item(), correct.item(), seen, time.perf_counter() - start


def _commit_epoch(run_dir: Path, state: Dict[str, Any], is_best: bool) -> None:
    """Write an epoch's files in the order that makes ``last.pt`` the commit point (run_dir.py).
    A failed write (a full disk) says what the run keeps and how to go on."""
    try:
        _checkpoint_hook("before last.pt")
        save_checkpoint(state, run_dir / "last.pt")
        _checkpoint_hook("before best.pt")
        if is_best:
            save_checkpoint(state, run_dir / "best.pt")
        _checkpoint_hook("before metrics.jsonl")
        _write_metrics(run_dir, state["history"])
    except WriteError as exc:
        kept = (
            f"{run_dir} keeps the epochs its last.pt holds; when there is room again, "
            f"continue with nlsam train --out {run_dir} --resume"
        )
        raise WriteError(exc.filename, exc, advice="; ".join(filter(None, [exc.advice, kept]))) from None


def _epoch_line(cfg: TrainConfig, summary: Dict[str, Any]) -> str:
    top5 = f" top5 {summary['test_top5']:.2f}%" if summary["test_top5"] is not None else ""
    return (
        f"epoch {summary['epoch']}/{cfg.epochs}: train loss {summary['train_loss']:.4f} "
        f"top1 {summary['train_top1']:.2f}% | test loss {summary['test_loss']:.4f} "
        f"top1 {summary['test_top1']:.2f}%{top5} | {summary['images_per_s']:.0f} img/s, "
        f"{summary['epoch_time_s']:.1f} s"
    )


def _train(
    cfg: TrainConfig, run_dir: Path, resume_state: Optional[Dict[str, Any]], dist_info: DistInfo, on_epoch_end
) -> Dict[str, Any]:
    from ..cost import profile

    _report_resume(cfg, run_dir, resume_state, dist_info)
    device = resolve_device(cfg.device, dist_info.local_rank)
    _seed_everything(cfg.seed + dist_info.rank, cfg.deterministic)
    amp_dtype = resolve_amp(cfg.amp, device)
    precision = precision_name(amp_dtype)
    if resume_state is not None and resume_state.get("precision", "float32") != precision:
        # --amp auto resolves per machine (bf16 on CPUs with native bf16): say when that changed
        _log(
            dist_info,
            f"resume: the run trained in {resume_state.get('precision', 'float32')} so far and "
            f"continues in {precision} (--amp {cfg.amp}; --amp off keeps float32)",
        )
    channels_last = cfg.channels_last if cfg.channels_last is not None else True
    cfg, data = _load_data(cfg, dist_info, device, channels_last)
    meta = _data_meta(data)
    model = _build_model(cfg, data, resume_state is None, dist_info)
    cost = profile(model, (data.in_chans, *data.input_size)) if dist_info.is_main else None
    model.to(device)
    if channels_last:
        model.to(memory_format=torch.channels_last)
    opt = Optimisation(cfg, model, len(data.train_loader), device, amp_dtype, dist_info)

    start_epoch, best_top1, best_at = 0, -math.inf, None
    history: list = []
    if resume_state is not None:
        opt.load_state(resume_state)
        start_epoch = resume_state["epoch"] + 1
        best_top1 = resume_state.get("best_top1", 0.0)
        best_at = best_epoch(resume_state)
        history = read_metrics(run_dir, resume_state)
        _set_rng_state(
            resume_state["rng"][dist_info.rank] if isinstance(resume_state["rng"], list) else resume_state["rng"]
        )
        if start_epoch < cfg.epochs:
            _log(dist_info, f"resuming {run_dir} at epoch {start_epoch + 1}/{cfg.epochs}")

    num_classes = len(data.classes)
    if dist_info.is_main:
        assert cost is not None  # profiled on the main process
        save_yaml(cfg.to_dict(), run_dir / "config.yaml")
        # what the data looked like (classes, input size, normalisation): enough to rebuild the
        # network and its cost without a checkpoint; and the precision, which --amp auto picks per
        # machine, so that a study can tell when its runs trained in different ones
        # machine, which a resumed run adds to
        machines = recorded_machines(run_dir) if resume_state is not None else []
        here = machine_name(device)
        machines += [] if machines[-1:] == [here] else [here]
        atomic_write_bytes(
            run_dir / "meta.json", json.dumps(dict(meta, precision=precision, machines=machines), indent=1).encode()
        )
        _log(
            dist_info,
            f"{cfg.model} + {cfg.attention or 'no attention'} on {data.name}: {num_classes} classes, "
            f"{data.num_train} train / {data.num_test} test images of {data.input_size[0]}x{data.input_size[1]}; "
            f"{cost.params / 1e6:.3f}M params, {cost.flops / 1e9:.4f} GFLOPs; device {device}"
            + (f" x {dist_info.world_size} processes" if dist_info.enabled else "")
            + (f", amp {precision}" if amp_dtype else ""),
        )
        if getattr(data, "cache_path", None):
            _log(dist_info, f"decoded images cached in {data.cache_path} (--cache-dir sets the folder)")
        if data.skipped:
            _log(dist_info, f"skipped {data.skipped} unreadable image file(s)")
    writer = _tensorboard(run_dir) if cfg.tensorboard and dist_info.is_main else None
    progress = Progress(dist_info.is_main, cfg.log_every)
    summary: Dict[str, Any] = {}

    for epoch in range(start_epoch, cfg.epochs):
        data.train_loader.set_epoch(epoch)
        loss_sum, correct, seen, train_time = opt.train_epoch(epoch, data.train_loader, progress, run_dir)
        total_loss, total_correct, total_seen = _all_reduce_sum([loss_sum, correct, seen], device)
        result = evaluate(
            model, data.test_loader, num_classes=num_classes, amp_dtype=amp_dtype, on_batch=progress.eval_step
        )
        progress.end_epoch()
        if result["top1"] > best_top1:
            best_top1, best_at = result["top1"], epoch
        summary = dict(
            epoch=epoch + 1,
            lr=opt.lr,
            train_loss=total_loss / total_seen,
            train_top1=100.0 * total_correct / total_seen,
            test_loss=result["loss"],
            test_top1=result["top1"],
            test_top5=result["top5"],
            best_top1=best_top1,
            images_per_s=total_seen / train_time,
            epoch_time_s=train_time + result["n"] / max(result["images_per_s"], 1e-9),
        )
        history.append(summary)
        if dist_info.is_main:
            state = dict(
                opt.state(),
                epoch=epoch,
                best_top1=best_top1,
                best_epoch=best_at,
                rng=_rng_state(),
                precision=precision,
                config=cfg.to_dict(),
                meta=meta,
                metrics=summary,
                history=history,
            )
            _commit_epoch(run_dir, state, is_best=best_at == epoch)
            if writer is not None:
                for key, value in summary.items():
                    if value is not None:
                        writer.add_scalar(key, value, epoch + 1)
            _log(dist_info, _epoch_line(cfg, summary))
        _barrier()
        if on_epoch_end is not None:
            on_epoch_end(summary)

    if dist_info.is_main:
        assert cost is not None
        if summary:
            _log(
                dist_info,
                f"done: test top-1 {summary['test_top1']:.2f}% (best {best_top1:.2f}%), "
                f"{cost.params / 1e6:.3f}M params, {cost.flops / 1e9:.4f} GFLOPs; run directory {run_dir}",
            )
        else:
            _log(dist_info, f"nothing to do: {run_dir} already finished {start_epoch} of {cfg.epochs} epochs")
    if writer is not None:
        writer.close()
    if not summary and history:
        summary = dict(history[-1])
    # a cheap fingerprint of the weights, equal on every rank when replicas are in sync
    checksum = sum(p.detach().double().sum().item() for p in model.parameters())
    return dict(summary, run_dir=str(run_dir), param_checksum=checksum)


def _checkpoint_hook(point: str) -> None:
    """Called between the writes at the end of an epoch; tests replace it to kill the run there."""


def _tensorboard(run_dir: Path):
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        print("tensorboard is not installed (pip install tensorboard); continuing without it", file=sys.stderr)
        return None
    return SummaryWriter(str(run_dir / "tensorboard"))
