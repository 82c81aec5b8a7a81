"""Parsers of the commands that look inside a trained network: cam, attention, predict, export.

All four take CHECKPOINT first (a ``.pt`` file or a run directory, whose ``best.pt`` is used),
then the images; options may follow in any order. Their work lives in
:mod:`nlsam.analysis.gradcam`, :mod:`~nlsam.analysis.attention_maps`,
:mod:`~nlsam.analysis.predict` and :mod:`~nlsam.analysis.export`, which import their optional
packages (grad-cam, matplotlib, onnx, onnxruntime, onnxscript, safetensors) only when run.
"""
from __future__ import annotations

import argparse

_CHECKPOINT_HELP = "a .pt checkpoint or a run directory (its best.pt, else last.pt)"
_IMAGES_HELP = "image files (any size and format PIL reads); each is resized as the model's test data"
_SIZE_HELP = ("run the network at this input size H [W] instead of its training size (the image is "
              "resized to it; the networks accept any size)")
_CMAP_HELP = "matplotlib colour map of the heat maps (default: jet)"


def _add_cam(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "cam",
        help="Grad-CAM heat maps of one or more networks, side by side",
        description="For each image, write DIR/IMAGE.png: the input, then for each checkpoint the "
        "Grad-CAM heat map of its last convolutional stage for the predicted class (or "
        "--target-class), titled with the predicted class and its softmax score P. Give more "
        "networks with --compare, e.g. a baseline first, then NL-SAM, then GE + NL-SAM.",
        epilog="example: nlsam cam runs/base img1.png img2.png --compare runs/nlsam "
        "--compare runs/ge-nlsam --out cam/",
    )
    p.add_argument("checkpoint", metavar="CHECKPOINT", help=_CHECKPOINT_HELP)
    p.add_argument("images", nargs="+", metavar="IMAGE", help=_IMAGES_HELP)
    p.add_argument("--compare", action="append", metavar="CHECKPOINT", default=[],
                   help="another checkpoint, shown in the next column (repeat for more)")
    p.add_argument("--labels", nargs="+", metavar="NAME", default=None,
                   help="column titles, one per checkpoint (default: model + attention, and the run "
                   "directory where that repeats)")
    p.add_argument("--target-class", default=None, metavar="CLASS",
                   help="class to explain: an index (a number is always an index) or a name; "
                   "default: each network's predicted class")
    p.add_argument("--out", default="cam", metavar="DIR", help="output directory (default: ./cam)")
    p.add_argument("--grid", default=None, metavar="NAME.png",
                   help="write one figure DIR/NAME.png with a row per image instead of one per image")
    p.add_argument("--input-size", type=int, nargs="+", default=None, metavar="N", help=_SIZE_HELP)
    p.add_argument("--cmap", default="jet", help=_CMAP_HELP)
    p.set_defaults(handler="nlsam.analysis.gradcam:main_cam")


def _add_attention(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "attention",
        help="the NL-SAM attention maps of every block, overlaid on the image",
        description="For each image, write DIR/IMAGE.png with the spatial attention map of every "
        "NL-SAM block (or of the blocks of --stage), one row per stage, overlaid on the input. "
        "The maps are read with forward hooks; the colour bar shows the gate values.",
        epilog="example: nlsam attention runs/nlsam img1.png --stage 3 --out attention/",
    )
    p.add_argument("checkpoint", metavar="CHECKPOINT", help=_CHECKPOINT_HELP)
    p.add_argument("images", nargs="+", metavar="IMAGE", help=_IMAGES_HELP)
    p.add_argument("--stage", type=int, default=None,
                   help="only this stage (numbered as in the paper: 1-3 on CIFAR, 2-5 on ImageNet)")
    p.add_argument("--out", default="attention", metavar="DIR", help="output directory (default: ./attention)")
    p.add_argument("--range", type=float, nargs=2, default=None, metavar=("LOW", "HIGH"),
                   help="colour range of the gate values (default: their min and max in the figure)")
    p.add_argument("--input-size", type=int, nargs="+", default=None, metavar="N", help=_SIZE_HELP)
    p.add_argument("--cmap", default="jet", help=_CMAP_HELP)
    p.set_defaults(handler="nlsam.analysis.attention_maps:main_attention")


def _add_predict(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "predict",
        help="top-k classes of images, as text or JSON",
        description="Print the top-k classes and softmax scores of each image.",
        epilog="example: nlsam predict runs/nlsam cat.jpg dog.png --topk 3 --json",
    )
    p.add_argument("checkpoint", metavar="CHECKPOINT", help=_CHECKPOINT_HELP)
    p.add_argument("images", nargs="+", metavar="IMAGE", help=_IMAGES_HELP)
    p.add_argument("--topk", type=int, default=5, help="classes per image (default 5; at most all classes)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--input-size", type=int, nargs="+", default=None, metavar="N", help=_SIZE_HELP)
    p.set_defaults(handler="nlsam.analysis.predict:main_predict")


def _add_export(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "export",
        help="export a network to ONNX, TorchScript or safetensors, checked against PyTorch",
        description="Export the network and check the exported file against PyTorch on random "
        "inputs at batch sizes 1 and 3 (onnxruntime for ONNX); the file is written only if the "
        "largest difference is within --atol. ONNX has a dynamic batch size and the training "
        "input size; TorchScript takes any size.",
        epilog="example: nlsam export runs/nlsam --format onnx --out nlsam.onnx",
    )
    p.add_argument("checkpoint", metavar="CHECKPOINT", help=_CHECKPOINT_HELP)
    p.add_argument("--format", required=True, choices=("onnx", "torchscript", "safetensors"))
    p.add_argument("--out", default=None, metavar="FILE",
                   help="output file, checked before the export starts (default: beside the "
                   "checkpoint, e.g. best.onnx, best.torchscript.pt, best.safetensors)")
    p.add_argument("--atol", type=float, default=1e-4, help="largest accepted difference (default 1e-4)")
    p.add_argument("--no-check", action="store_true", help="write without running the check")
    p.add_argument("--opset", type=int, default=None, help="ONNX opset (default: the exporter's)")
    p.set_defaults(handler="nlsam.analysis.export:main_export")


def add_inspect_commands(sub: argparse._SubParsersAction) -> None:
    """Add ``cam``, ``attention``, ``predict`` and ``export`` to the ``nlsam`` parser."""
    _add_cam(sub)
    _add_attention(sub)
    _add_predict(sub)
    _add_export(sub)
