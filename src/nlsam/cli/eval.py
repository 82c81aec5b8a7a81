"""``nlsam eval``: accuracy of a checkpoint on its test set (:func:`nlsam.engine.evaluate`)."""

from __future__ import annotations

import argparse
from typing import Any, List, Optional

__all__ = ["add_parser", "run"]


def add_parser(sub: argparse._SubParsersAction) -> None:
    from ..engine.config import AMP_MODES
    from ..engine.evaluate import TTA_MODES

    p = sub.add_parser(
        "eval",
        help="evaluate a checkpoint or run directory",
        description="Top-1/top-5 accuracy, loss and per-class accuracy of a trained network on "
        "its test set (or the one given with --data).",
    )
    p.add_argument(
        "checkpoint",
        help="a .pt checkpoint, a run directory (best.pt is used) or a released "
        "weight, nlsam:NAME (nlsam list pretrained)",
    )
    p.add_argument("--data", default=None, help="dataset to evaluate on (default: the training one)")
    p.add_argument("--data-dir", default=None)
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--device", default="auto")
    p.add_argument(
        "--amp",
        choices=AMP_MODES,
        default=None,
        help="mixed precision (default: the precision the run trained in, so the figure is the one "
        "its log shows; see nlsam train --help)",
    )
    p.add_argument(
        "--tta",
        choices=TTA_MODES,
        default="none",
        help="test-time augmentation: 'flip' averages the probabilities of each image and its "
        "mirror (default: none, the standard protocol)",
    )
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    import json

    import torch

    from ..data import build_data
    from ..engine.checkpoint import load_checkpoint, resolve_checkpoint_path
    from ..engine.device import resolve_device
    from ..engine.evaluate import evaluate
    from ..engine.loading import model_from_checkpoint
    from ..engine.precision import resolve_amp, trained_precision
    from ..models import is_released_name

    path = args.checkpoint if is_released_name(args.checkpoint) else resolve_checkpoint_path(args.checkpoint)
    state = load_checkpoint(path)
    cfg, meta = state["config"], state.get("meta", {})
    device = resolve_device(args.device)
    model = model_from_checkpoint(state).to(device)
    channels_last = cfg.get("channels_last") is not False  # evaluate as the run did
    if channels_last:
        model.to(memory_format=torch.channels_last)
    amp_dtype = resolve_amp(args.amp, device) if args.amp else trained_precision(state, device)
    data = build_data(
        args.data or cfg["data"],
        data_dir=args.data_dir if args.data_dir is not None else cfg.get("data_dir"),
        batch_size=args.batch_size,
        eval_batch_size=args.batch_size,
        device=device,
        seed=cfg.get("seed", 0),
        image_size=cfg.get("image_size"),
        num_workers=cfg.get("num_workers", 2),
        cache_dir=cfg.get("cache_dir"),
        channels_last=channels_last,
    )
    difference = _class_difference(list(data.classes), list(meta.get("classes", [])))
    if difference:
        raise ValueError(
            f"the classes of {data.name} do not match the checkpoint's: {difference}; evaluate on the data "
            f"the network was trained on ({cfg.get('data')}) or on data with the same class folders"
        )
    result = evaluate(
        model,
        data.test_loader,
        num_classes=len(data.classes),
        amp_dtype=amp_dtype,
        tta=args.tta,
        check_finite=True,
    )
    result["per_class_top1"] = dict(zip(map(str, data.classes), result["per_class_top1"]))
    epoch = state.get("epoch")
    result.update(
        checkpoint=str(path),
        epoch=None if epoch is None else epoch + 1,
        data=data.name,
        model=cfg["model"],
        attention=cfg.get("attention"),
        tta=args.tta,
    )
    if args.json:
        print(json.dumps(result))
        return 0
    tta = " with flip test-time augmentation" if args.tta == "flip" else ""
    trained = f", after epoch {epoch + 1} of {cfg.get('epochs')}" if epoch is not None else ""
    print(f"checkpoint {path}{trained}")
    print(f"{cfg['model']} + {cfg.get('attention') or 'no attention'} on {data.name} ({result['n']} images){tta}")
    top5 = f"  top-5 {result['top5']:.2f}%" if result["top5"] is not None else ""
    print(f"top-1 {result['top1']:.2f}%{top5}  loss {result['loss']:.4f}  {result['images_per_s']:.0f} img/s")
    print("per-class top-1:")
    for name, acc in result["per_class_top1"].items():
        print(f"  {name:>20s}  {acc:6.2f}%")
    return 0


def _class_difference(dataset: List[Any], checkpoint: List[Any], limit: int = 3) -> Optional[str]:
    """Where the dataset's classes differ from the checkpoint's, naming the classes (``None``:
    they are the same, in the same order)."""
    if dataset == checkpoint:
        return None

    def names(items: List[Any]) -> str:
        shown = ", ".join(repr(str(c)[:60]) for c in items[:limit])
        return shown + (f" and {len(items) - limit} more" if len(items) > limit else "")

    parts = []
    in_dataset, in_checkpoint = set(dataset), set(checkpoint)
    absent = [c for c in checkpoint if c not in in_dataset]
    extra = [c for c in dataset if c not in in_checkpoint]
    if absent:
        parts.append(f"the checkpoint's class(es) {names(absent)} are not in the dataset")
    if extra:
        parts.append(f"the dataset's class(es) {names(extra)} are not in the checkpoint")
    if not parts:  # the same classes in another order: the labels would be shuffled
        i = next(i for i, (a, b) in enumerate(zip(dataset, checkpoint)) if a != b)
        parts.append(
            f"the same classes in another order: class {i} is {str(dataset[i])[:60]!r} in the dataset "
            f"but {str(checkpoint[i])[:60]!r} in the checkpoint"
        )
    return f"{'; '.join(parts)} ({len(dataset)} classes in the dataset, {len(checkpoint)} in the checkpoint)"
