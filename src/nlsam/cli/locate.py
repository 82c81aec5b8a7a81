"""``nlsam locate``: where a network trained on the locate data looks, measured against the masks
of its test images (:mod:`nlsam.analysis.localisation`)."""

from __future__ import annotations

import argparse
import json
from typing import Any, Dict, List, Tuple

from ._args import CHECKPOINT_HELP

__all__ = ["add_parser", "run"]


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "locate",
        help="where a network trained on the locate data looks (Grad-CAM, own attention maps)",
        description="Accuracy and localisation scores on the test split of the locate data the run "
        "was trained on: the share of each map's mass inside the mask of the shape that decides the "
        "class, and the pointing game (the map's maximum inside the mask), for Grad-CAM of the true "
        "class (the main figure) and of the predicted class, and for the network's own spatial "
        "attention maps (per module and their mean), beside the chance levels.",
        epilog="example: nlsam train --data locate --out runs/locate-nlsam && nlsam locate runs/locate-nlsam",
    )
    p.add_argument("checkpoint", metavar="RUN_OR_CHECKPOINT", help=CHECKPOINT_HELP)
    p.add_argument(
        "--n", type=int, default=None, metavar="N", help="score the first N test images (default: the whole test split)"
    )
    p.add_argument("--batch-size", type=int, default=100)
    p.add_argument("--device", default="cpu", help="device to run on (default cpu; auto: CUDA when present)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(handler=run)


def _rows(result: Dict[str, Any]) -> List[Tuple[str, float, float]]:
    chance = result["chance"]
    cam = result["grad_cam"]
    rows = [
        ("chance (the mask's area share)", chance["area_share"], chance["area_share"]),
        ("position prior (mean training mask)", chance["prior_mass_in_mask"], chance["prior_pointing"]),
        (f"Grad-CAM ({cam['layer']}), true class", cam["true"]["mass_in_mask"], cam["true"]["pointing"]),
        ("Grad-CAM, predicted class", cam["predicted"]["mass_in_mask"], cam["predicted"]["pointing"]),
    ]
    own = result.get("own_maps")
    if own:
        rows.append(
            (f"own maps, mean of {len(own['modules'])} modules", own["mean"]["mass_in_mask"], own["mean"]["pointing"])
        )
        for m in own["modules"]:
            where = f"stage {m['stage']} block {m['block'] + 1}" if m["stage"] is not None else m["name"]
            rows.append((f"  {where} ({m['size'][0]}x{m['size'][1]})", m["mass_in_mask"], m["pointing"]))
    return rows


def run(args: argparse.Namespace) -> int:
    from ..analysis.localisation import run_localisation
    from ..engine.device import resolve_device

    result = run_localisation(args.checkpoint, n=args.n, batch_size=args.batch_size, device=resolve_device(args.device))
    if args.json:
        print(json.dumps(result))
        return 0
    epoch = f", after epoch {result['epoch']}" if result["epoch"] is not None else ""
    print(f"checkpoint {result['checkpoint']}{epoch}")
    print(
        f"{result['model']} + {result.get('attention') or 'no attention'} on {result['data']}: "
        f"{result['n']} test images, top-1 {result['top1']:.2f}%"
    )
    rows = _rows(result)
    width = max(len(r[0]) for r in rows)
    print(
        f"{'maps (scored on the ' + str(result['n']) + ' test images)':<{width}s}  {'in mask (%)':>11s}  "
        f"{'pointing (%)':>12s}"
    )
    for name, mass, pointing in rows:
        print(f"{name:<{width}s}  {mass:11.2f}  {pointing:12.2f}")
    zero = result["grad_cam"]["zero_maps"]
    if zero["grad_cam_true"] or zero["grad_cam_predicted"]:
        print(
            f"{zero['grad_cam_true']} true-class and {zero['grad_cam_predicted']} predicted-class Grad-CAM maps "
            "were all zero (scored as the area share)"
        )
    if not result.get("own_maps"):
        print("(no spatial attention modules: no maps of its own)")
    return 0
