"""``nlsam predict``: top-k classes of images, as text or JSON (:mod:`nlsam.analysis.predict`)."""

from __future__ import annotations

import argparse
import json

from ._args import CHECKPOINT_HELP, IMAGES_HELP, SIZE_HELP

__all__ = ["add_parser", "run"]


def add_parser(sub: argparse._SubParsersAction) -> None:
    from ..engine.config import AMP_MODES

    p = sub.add_parser(
        "predict",
        help="top-k classes of images, as text or JSON",
        description="Print the top-k classes and softmax scores of each image.",
        epilog="example: nlsam predict runs/nlsam cat.jpg dog.png --topk 3 --json",
    )
    p.add_argument("checkpoint", metavar="CHECKPOINT", help=CHECKPOINT_HELP)
    p.add_argument("images", nargs="+", metavar="IMAGE", help=IMAGES_HELP)
    p.add_argument("--topk", type=int, default=5, help="classes per image (default 5; at most all classes)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--input-size", type=int, nargs="+", default=None, metavar="N", help=SIZE_HELP)
    p.add_argument(
        "--amp",
        choices=AMP_MODES,
        default=None,
        help="mixed precision (default: the precision the run trained in; auto: bf16 on CPUs with "
        "native bf16, else fp32; see nlsam train --help)",
    )
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    import torch

    from ..analysis.predict import load_images, load_inspected, parse_input_size, predict
    from ..engine.precision import precision_name, resolve_amp

    input_size = parse_input_size(args.input_size)  # checked first: it costs nothing
    images = load_images(args.images)
    inspected = load_inspected(args.checkpoint)
    amp_dtype = resolve_amp(args.amp, torch.device("cpu")) if args.amp else inspected.precision
    results = predict(inspected, [img for _, img in images], topk=args.topk, input_size=input_size, amp_dtype=amp_dtype)
    size = input_size or inspected.input_size
    if args.json:
        print(
            json.dumps(
                dict(
                    checkpoint=str(inspected.path),
                    model=inspected.config.get("model"),
                    attention=inspected.config.get("attention"),
                    input_size=list(size),
                    precision=precision_name(amp_dtype),
                    topk=min(args.topk, len(inspected.classes)),
                    results=[dict(image=str(path), predictions=preds) for (path, _), preds in zip(images, results)],
                )
            )
        )
        return 0
    print(f"{inspected.path}: {inspected.label}, {len(inspected.classes)} classes, input {size[0]}x{size[1]}")
    width = max(len(p["class"]) for preds in results for p in preds)
    for (path, _), preds in zip(images, results):
        print(path)
        for p in preds:
            print(f"  {p['rank']:>2d}. {p['class']:<{width}s}  {p['score']:.4f}")
    return 0
