"""``nlsam export``: a network as ONNX, TorchScript or safetensors, checked against PyTorch
(:mod:`nlsam.analysis.export`), or as a Hugging Face Hub folder that timm loads
(:mod:`nlsam.analysis.hub`)."""

from __future__ import annotations

import argparse

from ._args import CHECKPOINT_HELP

__all__ = ["add_parser", "run"]


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "export",
        help="export a network to ONNX, TorchScript, safetensors or a Hub folder, checked against PyTorch",
        description="Export the network and check the exported file against PyTorch on random "
        "inputs at batch sizes 1 and 3 (onnxruntime for ONNX); the file is written only if the "
        "largest difference, relative to the logits' scale, is within --tolerance. ONNX has a dynamic batch size and the training "
        "input size; TorchScript takes any size. --format hub writes a folder (config.json in timm's "
        "layout, model.safetensors, a README.md model card) that timm.create_model('local-dir:DIR', "
        "pretrained=True) loads, and that uploads to the Hugging Face Hub as it is.",
        epilog="examples: nlsam export runs/nlsam --format onnx --out nlsam.onnx; "
        "nlsam export runs/nlsam --format hub --out nlsam_resnet20.mydata",
    )
    p.add_argument("checkpoint", metavar="CHECKPOINT", help=CHECKPOINT_HELP)
    p.add_argument("--format", required=True, choices=("onnx", "torchscript", "safetensors", "hub"))
    p.add_argument(
        "--out",
        default=None,
        metavar="PATH",
        help="output file (a new or empty folder for --format hub), checked before the export "
        "starts (default: beside the checkpoint, e.g. best.onnx, best.torchscript.pt, "
        "best.safetensors, hub/)",
    )
    p.add_argument(
        "--tolerance",
        type=float,
        default=1e-4,
        help="largest accepted difference, as a share of the logits' scale max(1, max |logit|) (default 1e-4)",
    )
    p.add_argument("--no-check", action="store_true", help="write without running the check")
    p.add_argument("--opset", type=int, default=None, help="ONNX opset (default: the exporter's)")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    if args.format == "hub":
        return _run_hub(args)
    from ..analysis.export import export_model

    result = export_model(
        args.checkpoint, args.format, args.out, tolerance=args.tolerance, check=not args.no_check, opset=args.opset
    )
    c, h, w = result["input_size"]
    shape = {
        "onnx": f"input B x {c} x {h} x {w}, dynamic batch B",
        "torchscript": f"any batch and input size, trained at {c} x {h} x {w}",
        "safetensors": "state dict + config, load with nlsam.analysis.export.load_safetensors",
    }[args.format]
    print(f"wrote {result['path']} ({result['format']}, {result['bytes'] / 1e6:.2f} MB; {result['label']}; {shape})")
    if result["max_diff"]:
        batches = " and ".join(str(b) for b in result["max_diff"])
        checker = "onnxruntime" if args.format == "onnx" else f"reloaded {args.format}"
        print(
            f"checked: max |{checker} - PyTorch| / max(1, max |logit|) = {max(result['max_diff'].values()):.2e} "
            f"at batch {batches} (tolerance {args.tolerance:g})"
        )
    return 0


def _run_hub(args: argparse.Namespace) -> int:
    from ..analysis.hub import export_hub
    from ..engine.checkpoint import resolve_checkpoint_path

    out = args.out if args.out is not None else resolve_checkpoint_path(args.checkpoint).parent / "hub"
    result = export_hub(args.checkpoint, out, check=not args.no_check, tolerance=args.tolerance)
    print(f"wrote {result['path']}/ ({', '.join(f.rsplit('/', 1)[-1] for f in result['files'])})")
    if result["max_diff"] is not None:
        print(
            f"checked: max |{result['loader']} - PyTorch| / max(1, max |logit|) = {result['max_diff']:.2e} "
            f"(tolerance {args.tolerance:g})"
        )
    print(
        f"load it: timm.create_model('local-dir:{result['path']}', pretrained=True) after import nlsam; "
        f"publish it: huggingface-cli upload USER/NAME {result['path']}"
    )
    return 0
