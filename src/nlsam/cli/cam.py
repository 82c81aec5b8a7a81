"""``nlsam cam``: Grad-CAM heat maps of one or more networks, side by side (:mod:`nlsam.analysis.gradcam`)."""

from __future__ import annotations

import argparse
from pathlib import Path

from .._optional import require
from ._args import CHECKPOINT_HELP, CMAP_HELP, IMAGES_HELP, SIZE_HELP

__all__ = ["add_parser", "run"]


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "cam",
        help="Grad-CAM heat maps of one or more networks, side by side",
        description="For each image, write DIR/IMAGE.png: the input, then for each checkpoint the "
        "Grad-CAM heat map of its last convolutional stage for the predicted class (or "
        "--target-class), titled with the predicted class and its softmax score P. Give more "
        "networks with --compare, e.g. a baseline first, then NL-SAM, then GE + NL-SAM.",
        epilog="example: nlsam cam runs/base img1.png img2.png --compare runs/nlsam --compare runs/ge-nlsam --out cam/",
    )
    p.add_argument("checkpoint", metavar="CHECKPOINT", help=CHECKPOINT_HELP)
    p.add_argument("images", nargs="+", metavar="IMAGE", help=IMAGES_HELP)
    p.add_argument(
        "--compare",
        action="append",
        metavar="CHECKPOINT",
        default=[],
        help="another checkpoint, shown in the next column (repeat for more)",
    )
    p.add_argument(
        "--labels",
        nargs="+",
        metavar="NAME",
        default=None,
        help="column titles, one per checkpoint (default: model + attention, and the run directory where that repeats)",
    )
    p.add_argument(
        "--target-class",
        default=None,
        metavar="CLASS",
        help="class to explain: an index (a number is always an index) or a name; "
        "default: each network's predicted class",
    )
    p.add_argument("--out", default="cam", metavar="DIR", help="output directory (default: ./cam)")
    p.add_argument(
        "--grid",
        default=None,
        metavar="NAME.png",
        help="write one figure DIR/NAME.png with a row per image instead of one per image",
    )
    p.add_argument("--input-size", type=int, nargs="+", default=None, metavar="N", help=SIZE_HELP)
    p.add_argument("--cmap", default="jet", help=CMAP_HELP)
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from ..analysis.figures import check_cmap, png_bytes, write_files
    from ..analysis.gradcam import cam_figure, target_layer
    from ..analysis.predict import load_images, load_inspected, output_names, parse_input_size, resolve_target_class

    # everything is checked before anything is computed or written
    require("pytorch_grad_cam", "nlsam cam")
    require("matplotlib", "nlsam cam")
    check_cmap(args.cmap)
    images = load_images(args.images)
    input_size = parse_input_size(args.input_size)
    paths = [args.checkpoint] + list(args.compare or [])
    if args.grid and (Path(args.grid).name != args.grid or not args.grid.lower().endswith(".png")):
        raise ValueError(f"--grid takes a file name ending in .png (written inside --out), got {args.grid!r}")
    if args.labels and len(args.labels) != len(paths):
        raise ValueError(f"--labels got {len(args.labels)} names for {len(paths)} checkpoints")
    checkpoints = [load_inspected(p) for p in paths]
    for c in checkpoints:
        resolve_target_class(args.target_class, c.classes)
        target_layer(c.model)
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {out} exists and is not a directory")
    files = {}
    if args.grid:
        fig = cam_figure(checkpoints, images, args.target_class, args.labels, input_size, args.cmap)
        files[out / args.grid] = png_bytes(fig)
    else:
        for name, item in zip(output_names([p for p, _ in images]), images):
            fig = cam_figure(checkpoints, [item], args.target_class, args.labels, input_size, args.cmap)
            files[out / name] = png_bytes(fig)
    write_files(files)
    return 0
