"""``nlsam profile``: the cost table of a network and the overhead of its attention modules
(:mod:`nlsam.cost`; the counting rules are stated in :mod:`nlsam.cost.rules`)."""

from __future__ import annotations

import argparse
import json
from typing import Any, Dict

from .._sizes import check_max_side, parse_input_size
from ..cost import COUNTING_RULES, CostReport, overhead, profile, render_table

__all__ = ["add_parser", "run"]


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "profile",
        help="parameters, MACs and FLOPs of a network, with the attention overhead",
        description="Print the cost table of a network (params, GFLOPs) and the overhead of its "
        "attention modules over the plain network. FLOPs = 2 x MACs for convolutions and "
        "linear layers; the cheap work of attention modules is counted too.",
    )
    p.add_argument("model", help="network name (`nlsam list models` lists them)")
    p.add_argument("--attention", default="nlsam", help="attention composition (`nlsam list attention`), or 'none'")
    p.add_argument(
        "--input-size",
        type=int,
        nargs="+",
        default=None,
        metavar="N",
        help="input H [W]; default: the network's native size",
    )
    p.add_argument("--num-classes", type=int, default=None)
    p.add_argument(
        "--import",
        dest="imports",
        action="append",
        default=[],
        metavar="MODULE",
        help="import this module first (your own attention modules; repeat for more)",
    )
    p.add_argument("--breakdown", action="store_true", help="also print the per-module table")
    p.add_argument("--json", action="store_true", help="print one JSON object instead")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    """``nlsam profile MODEL [--attention A] [--input-size H [W]] [--num-classes K]
    [--breakdown] [--json]``: the cost table of ``MODEL`` with attention ``A`` and of the plain
    network, with the overhead. Unknown names raise the ``ValueError`` of ``create_model``."""
    from ..attention import check_attention_name
    from ..models import create_model
    from ..plugins import import_modules

    import_modules(args.imports)
    attention = check_attention_name(getattr(args, "attention", None))
    kwargs: Dict[str, Any] = {}
    size = parse_input_size(getattr(args, "input_size", None))
    if size is not None:
        check_max_side(*size, "--input-size")
        kwargs["input_size"] = size
    if getattr(args, "num_classes", None) is not None:
        kwargs["num_classes"] = args.num_classes

    model = create_model(args.model, attention=attention, **kwargs)
    report = profile(model, size, name=args.model)
    if attention is None:
        baseline = report
    else:
        base_model = create_model(args.model, attention=None, **kwargs)
        baseline = profile(base_model, size, name=args.model)
    extra = overhead(report, baseline)
    attention_label = attention or "none"

    if getattr(args, "json", False):
        result: Dict[str, Any] = {
            "model": args.model,
            "attention": attention_label,
            "input_size": list(report.input_size),
            "batch_size": 1,
            "trainable_params": report.trainable_params,
            **_figures(report),
            "baseline": _figures(baseline),
            "overhead": extra,
            "flops_by_op": report.flops_by_op,
            "uncounted_ops": report.uncounted_ops,
            "convention": dict(COUNTING_RULES),
        }
        if getattr(args, "breakdown", False):
            result["modules"] = [row.to_dict() for row in report.modules]
            result["by_type"] = [row.to_dict() for row in report.by_type]
        print(json.dumps(result, indent=2))
        return 0

    c, h, w = report.input_size
    headers = [
        "model",
        "attention",
        "input",
        "Params (M)",
        "GMACs",
        "GFLOPs",
        "+Params (M)",
        "+GFLOPs",
        "+Params (%)",
        "+GFLOPs (%)",
    ]
    rows = [
        [
            args.model,
            "none",
            f"{c}x{h}x{w}",
            f"{baseline.mparams:.4f}",
            f"{baseline.gmacs:.4f}",
            f"{baseline.gflops:.4f}",
            "-",
            "-",
            "-",
            "-",
        ]
    ]
    if attention is not None:
        rows.append(
            [
                args.model,
                attention_label,
                f"{c}x{h}x{w}",
                f"{report.mparams:.4f}",
                f"{report.gmacs:.4f}",
                f"{report.gflops:.4f}",
                _signed(extra["mparams"], ".4f"),
                _signed(extra["gflops"], ".4f"),
                _signed(extra["params_pct"], ".2f") + "%",
                _signed(extra["flops_pct"], ".2f") + "%",
            ]
        )
    print(render_table(headers, rows))
    print(
        "\nBatch 1. GMACs: multiply-accumulates of convolutions and linear layers. GFLOPs = 2 x "
        "GMACs\n+ 1 per output element of pointwise ops (ReLU, sigmoid, mul, add, ...), 1 per "
        "element read by\nreductions and pooling, 1 per upsampling tap, 2 per batch-norm "
        "element (docs/cost.md)."
    )
    if report.uncounted_ops:
        ops = ", ".join(f"{k} x{v}" for k, v in report.uncounted_ops.items())
        print(f"operators without a counting rule (counted as 0): {ops}")
    if getattr(args, "breakdown", False):
        print(f"\nper-module breakdown of {args.model} + {attention_label}:")
        print(report.breakdown_table())
        print("\nby module type:")
        print(report.type_table())
    return 0


def _figures(report: CostReport) -> Dict[str, Any]:
    return {
        "params": report.params,
        "macs": report.macs,
        "flops": report.flops,
        "mparams": report.mparams,
        "gmacs": report.gmacs,
        "gflops": report.gflops,
    }


def _signed(value: float, fmt: str) -> str:
    return ("+" if value >= 0 else "-") + format(abs(value), fmt)
