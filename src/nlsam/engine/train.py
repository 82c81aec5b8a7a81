"""The training loop behind ``nlsam train``: :func:`train`.

One process or many (torchrun): the same code path, DistributedDataParallel when
``WORLD_SIZE > 1``. :func:`~nlsam.engine.prepare.prepare_run` settles the whole run first (run
directory, resume state, image size, config, data, network); the loop then only trains. Each
epoch atomically rewrites ``last.pt`` (the commit point), then ``best.pt`` on a new best test
top-1, then ``metrics.jsonl`` (see :mod:`.run_dir`), so a killed run loses at most the epoch in
progress and ``--resume`` continues it to the same result.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, Callable, Dict, Optional

import torch

from .._io import WriteError
from .checkpoint import _rng_state, save_checkpoint
from .config import TrainConfig
from .distributed import _all_reduce_sum, _barrier, _cleanup, _init_distributed
from .evaluate import evaluate
from .prepare import PreparedRun, prepare_run
from .progress import Progress, _say
from .run_dir import _write_metrics

__all__ = ["train"]


def train(cfg: TrainConfig, on_epoch_end: Optional[Callable[[Dict[str, Any]], None]] = None) -> Dict[str, Any]:
    """Run a full training as described by ``cfg``; return the summary of the final epoch.

    ``on_epoch_end`` is called with each epoch's summary (the line ``metrics.jsonl`` gets)."""
    cfg.validate()
    device_type = "cuda" if cfg.device == "cuda" or (cfg.device == "auto" and torch.cuda.is_available()) else "cpu"
    dist_info = _init_distributed(device_type)
    try:
        with prepare_run(cfg, dist_info) as run:
            return _train(run, on_epoch_end)
    finally:
        _cleanup()


def _train(run: PreparedRun, on_epoch_end: Optional[Callable[[Dict[str, Any]], None]]) -> Dict[str, Any]:
    cfg, run_dir, dist_info, device, data, model = run.cfg, run.run_dir, run.dist_info, run.device, run.data, run.model
    opt = run.optimisation
    start_epoch, best_top1, best_at, history = run.start_epoch, run.best_top1, run.best_epoch, list(run.history)
    writer = _tensorboard(run_dir) if cfg.tensorboard and dist_info.is_main else None
    progress = Progress(dist_info.is_main, cfg.log_every)
    summary: Dict[str, Any] = {}

    for epoch in range(start_epoch, cfg.epochs):
        data.train_loader.set_epoch(epoch)
        loss_sum, correct, seen, train_time = opt.train_epoch(epoch, data.train_loader, progress, run_dir)
        total_loss, total_correct, total_seen = _all_reduce_sum([loss_sum, correct, seen], device)
        result = evaluate(
            model, data.test_loader, num_classes=len(data.classes), amp_dtype=run.amp_dtype, on_batch=progress.eval_step
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
                precision=run.precision,
                config=cfg.to_dict(),
                meta=run.meta,
                metrics=summary,
                history=history,
            )
            _commit_epoch(run_dir, state, is_best=best_at == epoch)
            if writer is not None:
                for key, value in summary.items():
                    if value is not None:
                        writer.add_scalar(key, value, epoch + 1)
            _say(dist_info, _epoch_line(cfg, summary))
        _barrier()
        if on_epoch_end is not None:
            on_epoch_end(summary)

    if dist_info.is_main:
        assert run.cost is not None  # profiled on the main process
        if summary:
            _say(
                dist_info,
                f"done: test top-1 {summary['test_top1']:.2f}% (best {best_top1:.2f}%), "
                f"{run.cost.params / 1e6:.3f}M params, {run.cost.flops / 1e9:.4f} GFLOPs; run directory {run_dir}",
            )
        else:
            _say(dist_info, f"nothing to do: {run_dir} already finished {start_epoch} of {cfg.epochs} epochs")
    if writer is not None:
        writer.close()
    if not summary and history:
        summary = dict(history[-1])
    # a cheap fingerprint of the weights, equal on every rank when replicas are in sync
    checksum = sum(p.detach().double().sum().item() for p in model.parameters())
    return dict(summary, run_dir=str(run_dir), param_checksum=checksum)


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


def _checkpoint_hook(point: str) -> None:
    """Called between the writes at the end of an epoch; tests replace it to kill the run there."""


def _tensorboard(run_dir: Path):
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        print("tensorboard is not installed (pip install tensorboard); continuing without it", file=sys.stderr)
        return None
    return SummaryWriter(str(run_dir / "tensorboard"))
