"""Everything a training settles before its loop: :func:`prepare_run` gives the loop a
:class:`PreparedRun` (the final config, run directory, resume state, device, precision, data,
network and its cost) and the loop changes none of it.

In order, nothing written before the first three steps have passed:

1. the device, the precision (``--amp``) and the random generators;
2. the image size: the network is built (once, for real) for the size the data have
   (:func:`nlsam.data.peek_data`, which reads no more than one image). When it cannot take
   that size (NL-SAM's ``k`` = 2 cannot pool the 7 x 7 last stage of 28 x 28 images, say) and
   ``image_size`` was not set, the images are resized to the network's native size instead;
   unknown network options fail here;
3. the run directory (:func:`~nlsam.engine.run_dir.open_run_dir`): a new run, or ``--resume``'s
   saved state, checked against what is asked now;
4. under the run directory's lock: the repairs a resume needs, the data (loaded once, at the
   size step 2 settled), the network's start (the plain network's initial weights in every
   shared layer for a paired comparison, or ``init_from``'s), its :class:`~.optimisation.Optimisation`
   (with ``last.pt``'s state and random generators on a resume), then ``config.yaml`` and
   ``meta.json``.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Dict, Iterator, Optional, Tuple, cast

import torch
from torch import nn

from .._io import atomic_write_bytes
from ..cost import CostReport, profile
from ..data import DataBundle, build_data, peek_data
from ..models import load_pretrained
from .checkpoint import _set_rng_state, best_epoch, resolve_checkpoint_path
from .config import TrainConfig, save_yaml
from .device import resolve_device, seed_everything
from .distributed import DistInfo, _barrier
from .loading import _share_plain_init, build_network
from .optimisation import Optimisation
from .precision import machine_name, precision_name, resolve_amp
from .progress import _say, _warn
from .run_dir import _repair_run_dir, lock_run_dir, open_run_dir, read_metrics, recorded_machines, resume_changes

__all__ = ["PreparedRun", "data_meta", "prepare_run"]


@dataclass(frozen=True)
class PreparedRun:
    """A training with everything settled: what the loop of :func:`nlsam.engine.train` receives."""

    #: the final config: ``out`` is the run directory, ``image_size`` the size trained at
    cfg: TrainConfig
    run_dir: Path
    #: ``last.pt``'s state for ``--resume``, else None
    resume_state: Optional[Dict[str, Any]]
    dist_info: DistInfo
    device: torch.device
    #: the autocast dtype, None for float32
    amp_dtype: Optional[torch.dtype]
    #: ``float32``, ``bfloat16`` or ``float16``, as checkpoints and ``meta.json`` record it
    precision: str
    channels_last: bool
    data: DataBundle
    #: the network, on ``device``, at its initial (or ``init_from``) weights
    model: nn.Module
    #: :func:`data_meta` of ``data``: checkpoints save it
    meta: Dict[str, Any]
    #: params and FLOPs (main process only; None on the others)
    cost: Optional[CostReport]
    #: the optimiser, schedule and gradient scaler, at ``last.pt``'s state on a resume
    optimisation: Optimisation
    #: the first epoch to train (0-based), and what the finished ones left
    start_epoch: int = 0
    best_top1: float = -math.inf
    best_epoch: Optional[int] = None
    history: Tuple[Dict[str, Any], ...] = ()


def data_meta(data: DataBundle) -> Dict[str, Any]:
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


@contextlib.contextmanager
def prepare_run(cfg: TrainConfig, dist_info: DistInfo) -> Iterator[PreparedRun]:
    """Settle the run ``cfg`` describes (see the module's docstring) and hold its run directory's
    lock while the block runs. ``cfg`` must be validated."""
    device = resolve_device(cfg.device, dist_info.local_rank)
    amp_dtype = resolve_amp(cfg.amp, device)
    seed_everything(cfg.seed + dist_info.rank, cfg.deterministic)
    cfg, model = _settle_image_size(cfg, dist_info)
    cfg, run_dir, resume_state = open_run_dir(cfg)
    # one process trains into a directory at a time (rank 0 speaks for a torchrun job)
    with lock_run_dir(run_dir) if dist_info.is_main else contextlib.nullcontext():
        _report_resume(cfg, run_dir, resume_state, dist_info)
        precision = precision_name(amp_dtype)
        if resume_state is not None and resume_state.get("precision", "float32") != precision:
            # --amp auto resolves per machine (bf16 on CPUs with native bf16): say when that changed
            _say(
                dist_info,
                f"resume: the run trained in {resume_state.get('precision', 'float32')} so far and "
                f"continues in {precision} (--amp {cfg.amp}; --amp off keeps float32)",
            )
        channels_last = cfg.channels_last if cfg.channels_last is not None else True
        data = _load_data(cfg, dist_info, device, channels_last)
        meta = data_meta(data)
        _start_network(model, cfg, meta, fresh=resume_state is None, dist_info=dist_info)
        cost = profile(model, (data.in_chans, *data.input_size)) if dist_info.is_main else None
        model.to(device)
        if channels_last:
            model.to(memory_format=torch.channels_last)
        optimisation = Optimisation(cfg, model, len(data.train_loader), device, amp_dtype, dist_info)
        run = PreparedRun(
            cfg,
            run_dir,
            resume_state,
            dist_info,
            device,
            amp_dtype,
            precision,
            channels_last,
            data,
            model,
            meta,
            cost,
            optimisation,
        )
        if resume_state is not None:
            run = _resume(run, resume_state)
        if dist_info.is_main:
            _record_run(run)
        yield run


def _resume(run: PreparedRun, state: Dict[str, Any]) -> PreparedRun:
    """``run`` at the end of ``last.pt``'s epoch: its weights, optimiser, schedule, history and
    random generators."""
    run.optimisation.load_state(state)
    _set_rng_state(state["rng"][run.dist_info.rank] if isinstance(state["rng"], list) else state["rng"])
    start_epoch = state["epoch"] + 1
    if start_epoch < run.cfg.epochs:
        _say(run.dist_info, f"resuming {run.run_dir} at epoch {start_epoch + 1}/{run.cfg.epochs}")
    return replace(
        run,
        start_epoch=start_epoch,
        best_top1=state.get("best_top1", 0.0),
        best_epoch=best_epoch(state),
        history=tuple(read_metrics(run.run_dir, state)),
    )


def _settle_image_size(cfg: TrainConfig, dist_info: DistInfo) -> Tuple[TrainConfig, nn.Module]:
    """``(config, network)``: the network built for the size of the data's images, or, when it
    cannot take that size and ``image_size`` was not set, for its native size, to which the
    images are then resized (the config records it). Raises the network's own error when
    neither fits."""
    info = peek_data(cfg.data, data_dir=cfg.data_dir)
    size = (cfg.image_size, cfg.image_size) if cfg.image_size is not None else tuple(info.input_size)
    # the shape of the data, in the layout of a checkpoint's meta (the class names come with the data)
    meta = dict(classes=range(info.num_classes), in_chans=info.in_chans, input_size=list(size))
    rng = torch.random.get_rng_state()
    try:
        return cfg, build_network(cfg, meta)
    except ValueError as error:
        native = _native_input_size(cfg)
        if cfg.image_size is not None or tuple(native) == size:
            raise
        torch.random.set_rng_state(rng)  # undo the failed build's draws: the network starts as without it
        try:
            model = build_network(cfg, dict(meta, input_size=list(native)))
        except ValueError:
            raise error from None
    _say(
        dist_info,
        f"images of {size[0]}x{size[1]} do not fit {cfg.model} + "
        f"{cfg.attention}; resizing them to the network's native {native[0]}x{native[1]}",
    )
    return replace(cfg, image_size=int(native[0])), model


def _report_resume(
    cfg: TrainConfig, run_dir: Path, resume_state: Optional[Dict[str, Any]], dist_info: DistInfo
) -> None:
    """Check what a resume changes, make the run directory whole, and say both."""
    repairs: list = []
    if resume_state is not None:
        for key, (before, now) in resume_changes(resume_state["config"], cfg).items():
            _say(
                dist_info,
                f"resume: {key} changed from {before!r} to {now!r}"
                + (" (the lr schedule follows the new length from here on)" if key == "epochs" else ""),
            )
    if dist_info.is_main:
        repairs = _repair_run_dir(run_dir, resume_state)
    for repair in repairs:
        _say(dist_info, f"repaired {run_dir}: {repair}")


def _load_data(cfg: TrainConfig, dist_info: DistInfo, device: torch.device, channels_last: bool) -> DataBundle:
    """The data at the settled size; rank 0 downloads and fills the decode cache first, the
    other ranks then read it."""
    if dist_info.enabled and not dist_info.is_main:
        _barrier()
    data = build_data(
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
        image_size=cfg.image_size,
        channels_last=channels_last,
        cache_dir=cfg.cache_dir,
    )
    if dist_info.enabled and dist_info.is_main:
        _barrier()
    return data


def _start_network(model: nn.Module, cfg: TrainConfig, meta: Dict[str, Any], fresh: bool, dist_info: DistInfo) -> None:
    """Give a new run's network its initial weights: ``init_from``'s, or in every layer it
    shares with the plain network those of the plain network of this seed; warn when the input
    is too small for it."""
    if fresh and not cfg.init_from:
        # every layer shared with the plain network starts as in the plain network of this seed,
        # whatever the attention modules drew from the random generator (paired comparisons)
        _share_plain_init(model, cfg, meta, cfg.seed + dist_info.rank)
    if cfg.init_from and fresh:
        source = cfg.init_from
        if os.path.isdir(source):  # an nlsam run directory: its best network
            source = str(resolve_checkpoint_path(source))
        _say(dist_info, f"init from {source}: {load_pretrained(model, source)}")
    final = _final_feature_size(model, meta["input_size"])
    if final is not None and min(final) < 2:
        native = _native_input_size(cfg)
        _warn(
            dist_info,
            f"{cfg.model} reduces {meta['input_size'][0]}x{meta['input_size'][1]} images to a "
            f"{final[0]}x{final[1]} last feature map, too small for its last stages to see any "
            f"spatial context; it is built for {native[0]}x{native[1]}: use --image-size "
            f"{native[0]} or a network for small images (resnet20 ... resnet164)",
        )


def _native_input_size(cfg: TrainConfig) -> Tuple[int, int]:
    """The input size the network ``cfg`` names is built for (32 x 32 for CIFAR networks,
    224 x 224 for ImageNet ones), from the network built on the meta device (no memory, no time)."""
    # nlsam's networks keep their (H, W) as input_size (nn.Module's __getattr__ types it a tensor or module)
    size = cast(Tuple[int, int], build_network(cfg, device="meta").input_size)
    return (int(size[0]), int(size[1]))


def _final_feature_size(model: nn.Module, input_size) -> Optional[tuple]:
    """(H, W) of a network's last feature map for ``input_size``, from its ``feature_info``."""
    info = getattr(model, "feature_info", None)
    if not info:
        return None
    reduction = info[-1]["reduction"]
    return tuple(math.ceil(s / reduction) for s in input_size)


def _record_run(run: PreparedRun) -> None:
    """Write ``config.yaml`` and ``meta.json`` and say what is trained."""
    cfg, data, cost, dist_info = run.cfg, run.data, run.cost, run.dist_info
    assert cost is not None  # profiled on the main process
    save_yaml(cfg.to_dict(), run.run_dir / "config.yaml")
    # what the data looked like (classes, input size, normalisation): enough to rebuild the
    # network and its cost without a checkpoint; the precision, which --amp auto picks per
    # machine, so that a study can tell when its runs trained in different ones; and the
    # machines, which a resumed run adds to
    machines = recorded_machines(run.run_dir) if run.resume_state is not None else []
    here = machine_name(run.device)
    machines += [] if machines[-1:] == [here] else [here]
    atomic_write_bytes(
        run.run_dir / "meta.json",
        json.dumps(dict(run.meta, precision=run.precision, machines=machines), indent=1).encode(),
    )
    _say(
        dist_info,
        f"{cfg.model} + {cfg.attention or 'no attention'} on {data.name}: {len(data.classes)} classes, "
        f"{data.num_train} train / {data.num_test} test images of {data.input_size[0]}x{data.input_size[1]}; "
        f"{cost.params / 1e6:.3f}M params, {cost.flops / 1e9:.4f} GFLOPs; device {run.device}"
        + (f" x {dist_info.world_size} processes" if dist_info.enabled else "")
        + (f", amp {run.precision}" if run.amp_dtype else ""),
    )
    if getattr(data, "cache_path", None):
        _say(dist_info, f"decoded images cached in {data.cache_path} (--cache-dir sets the folder)")
    if data.skipped:
        _say(dist_info, f"skipped {data.skipped} unreadable image file(s)")
