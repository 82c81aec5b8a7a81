"""Evaluation: top-1/top-5 accuracy, loss and per-class accuracy over a test loader.

Under torchrun each rank evaluates its shard of the test set and the sums are reduced, so the
figures are exact for the whole set.
"""

from __future__ import annotations

import math
import time
from typing import Any, Callable, Dict, Iterable, Optional, Sized

import torch
import torch.nn.functional as F
from torch import nn

from .distributed import _all_reduce_tensor

__all__ = ["TTA_MODES", "check_finite_outputs", "evaluate"]

#: Test-time augmentations :func:`evaluate` knows.
TTA_MODES = ("none", "flip")


def check_finite_outputs(model: nn.Module, outputs: torch.Tensor, where: str = "on the first batch") -> None:
    """Raise a one-line ``ValueError`` unless every value of ``outputs`` (``model``'s logits) is
    finite, saying whether the weights are to blame: ``nlsam eval``, ``predict`` and ``export``
    check their first outputs with it, so broken weights are named instead of reported as an
    accuracy, NaN scores or an exporter failure."""
    if bool(torch.isfinite(outputs).all()):
        return
    raise _non_finite(model, where)


def _non_finite(model: nn.Module, where: str) -> ValueError:
    """The error for outputs that are not finite: how many weight tensors hold NaN/inf."""
    tensors = [t for t in model.state_dict().values() if t.is_floating_point()]
    broken = sum(1 for t in tensors if not bool(torch.isfinite(t).all()))
    if broken:
        cause = f"its weights are broken ({broken} of {len(tensors)} tensors hold NaN/inf)"
    else:
        cause = (
            f"its weights are all finite ({len(tensors)} tensors), so an input or the arithmetic "
            "overflowed (a lower precision, say)"
        )
    return ValueError(f"the network's outputs are not finite (NaN/inf) {where}: {cause}")


@torch.no_grad()
def evaluate(
    model: nn.Module,
    loader: Iterable,
    num_classes: int,
    amp_dtype: Optional[torch.dtype] = None,
    tta: str = "none",
    on_batch: Optional[Callable[[int, int], None]] = None,
    check_finite: bool = False,
) -> Dict[str, Any]:
    """Return ``top1``, ``top5`` (percent), ``loss`` (mean cross-entropy), ``n``,
    ``per_class_top1`` (percent per class) and ``images_per_s``.

    ``top5`` is ``None`` for 5 classes or fewer, where every image would count as a top-5 hit.
    ``on_batch(step, steps)`` is called after each batch (a progress bar, say).

    ``tta="flip"`` scores every image as the mean of the class probabilities of the image and of
    its horizontal mirror (twice the compute). Accuracy under the standard protocol is
    ``tta="none"``; report which one a figure used.

    ``check_finite``: raise a ``ValueError`` (:func:`check_finite_outputs`) when the logits of
    the first batch, or of any image by the end, are not finite, instead of reporting a figure.
    """
    if tta not in TTA_MODES:
        raise ValueError(f"unknown tta {tta!r}; valid: {', '.join(TTA_MODES)}")
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    # columns: loss sum, top-1 hits, top-5 hits, count; then per-class hits and counts
    totals = torch.zeros(4, dtype=torch.float64, device=device)
    class_hits = torch.zeros(num_classes, dtype=torch.float64, device=device)
    class_counts = torch.zeros(num_classes, dtype=torch.float64, device=device)
    non_finite = torch.zeros((), dtype=torch.int64, device=device)
    start = time.perf_counter()
    steps = len(loader) if isinstance(loader, Sized) else 0
    for step, (images, labels) in enumerate(loader, start=1):
        with torch.autocast(device.type, dtype=amp_dtype or torch.float32, enabled=amp_dtype is not None):
            logits = model(images).float()
            if tta == "flip":  # log of the mean probability of the image and its mirror
                mirrored = model(images.flip(3)).float()
                logits = torch.logaddexp(logits.log_softmax(1), mirrored.log_softmax(1)) - math.log(2.0)
        if check_finite:
            if step == 1:
                check_finite_outputs(model, logits)
            non_finite += (~torch.isfinite(logits).all(dim=1)).sum()
        k = min(5, num_classes)
        top = logits.topk(k, dim=1).indices
        hit1 = top[:, 0] == labels
        totals[0] += F.cross_entropy(logits, labels, reduction="sum").double()
        totals[1] += hit1.sum()
        totals[2] += (top == labels[:, None]).any(dim=1).sum()
        totals[3] += labels.shape[0]
        class_hits.index_add_(0, labels, hit1.double())
        class_counts.index_add_(0, labels, torch.ones_like(labels, dtype=torch.float64))
        if on_batch is not None:
            on_batch(step, steps)
    elapsed = time.perf_counter() - start
    _all_reduce_tensor(totals)
    _all_reduce_tensor(class_hits)
    _all_reduce_tensor(class_counts)
    model.train(was_training)
    n = int(totals[3].item())
    if n == 0:
        raise ValueError("the evaluation set is empty")
    if check_finite and int(non_finite.item()):
        raise _non_finite(model, f"for {int(non_finite.item())} of {n} images")
    per_class = (100.0 * class_hits / class_counts.clamp(min=1)).tolist()
    return dict(
        top1=100.0 * totals[1].item() / n,
        top5=100.0 * totals[2].item() / n if num_classes > 5 else None,
        loss=totals[0].item() / n,
        n=n,
        per_class_top1=per_class,
        images_per_s=n / max(elapsed, 1e-9),
    )
