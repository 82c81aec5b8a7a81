"""``nlsam attention``: the NL-SAM attention maps of every block, overlaid on the image
(:mod:`nlsam.analysis.attention_maps`, whose ``main_attention`` does the work)."""

from __future__ import annotations

import argparse

from ._args import CHECKPOINT_HELP, CMAP_HELP, IMAGES_HELP, SIZE_HELP

__all__ = ["add_parser", "run"]


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "attention",
        help="the NL-SAM attention maps of every block, overlaid on the image",
        description="For each image, write DIR/IMAGE.png with the spatial attention map of every "
        "NL-SAM block (or of the blocks of --stage), one row per stage, overlaid on the input. "
        "The maps are read with forward hooks; the colour bar shows the gate values.",
        epilog="example: nlsam attention runs/nlsam img1.png --stage 3 --out attention/",
    )
    p.add_argument("checkpoint", metavar="CHECKPOINT", help=CHECKPOINT_HELP)
    p.add_argument("images", nargs="+", metavar="IMAGE", help=IMAGES_HELP)
    p.add_argument(
        "--stage",
        type=int,
        default=None,
        help="only this stage (numbered as in the paper: 1-3 on CIFAR, 2-5 on ImageNet)",
    )
    p.add_argument("--out", default="attention", metavar="DIR", help="output directory (default: ./attention)")
    p.add_argument(
        "--range",
        type=float,
        nargs=2,
        default=None,
        metavar=("LOW", "HIGH"),
        help="colour range of the gate values (default: their min and max in the figure)",
    )
    p.add_argument("--input-size", type=int, nargs="+", default=None, metavar="N", help=SIZE_HELP)
    p.add_argument("--cmap", default="jet", help=CMAP_HELP)
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from ..analysis.attention_maps import main_attention

    return main_attention(args)
