"""Everything that updates the network: the optimiser (:func:`build_optimizer`), the learning-rate
schedule (:func:`lr_factor`) and :class:`Optimisation`, one training epoch as ``nlsam train``
runs it (autocast, loss, backward, optimiser and schedule step, the loss checked as it goes),
which the benchmarks run too."""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any, Dict, Optional, cast

import torch
from torch import nn

from .checkpoint import _state_dict_mismatch
from .config import TrainConfig
from .distributed import DistInfo
from .progress import Progress

__all__ = ["NonFiniteLossError", "Optimisation", "build_optimizer", "lr_factor"]


class NonFiniteLossError(RuntimeError):
    """The training loss became NaN or infinite."""


def build_optimizer(model: nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    """SGD (momentum, optional Nesterov) or AdamW over the trainable parameters, as ``cfg`` says."""
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
        self.optimizer = build_optimizer(model, cfg)
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
