"""The ``nlsam`` command line: ``nlsam {train,eval,profile,...}``. Parsing only; each command's
work lives in the library module named beside it."""
from __future__ import annotations

import argparse
import sys
from typing import List, Optional


def _add_profile(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "profile",
        help="parameters, MACs and FLOPs of a network, with the attention overhead",
        description="Print the cost table of a network (params, GFLOPs) and the overhead of its "
        "attention modules over the plain network. FLOPs = 2 x MACs for convolutions and "
        "linear layers; the cheap work of attention modules is counted too.",
    )
    p.add_argument("model", help="network name (see `nlsam profile --list`)")
    p.add_argument("--attention", default="nlsam", help="attention composition, or 'none'")
    p.add_argument("--input-size", type=int, nargs="+", default=None, metavar="N",
                   help="input H [W]; default: the network's native size")
    p.add_argument("--num-classes", type=int, default=None)
    p.add_argument("--breakdown", action="store_true", help="also print the per-module table")
    p.add_argument("--json", action="store_true", help="print one JSON object instead")
    p.set_defaults(handler="nlsam.analysis.cost:main_profile")


def _str_or_none(value: str) -> Optional[str]:
    return None if value.lower() in ("none", "null", "") else value


def _model_option(text: str) -> tuple:
    """``KEY=VALUE`` with VALUE parsed as YAML (numbers, lists, mappings)."""
    import yaml

    if "=" not in text:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    key, value = text.split("=", 1)
    return key.strip(), yaml.safe_load(value)


def _add_train(sub: argparse._SubParsersAction) -> None:
    from .engine.config import SCHEDULERS

    p = sub.add_parser(
        "train",
        help="train a network (default: NL-SAM ResNet-20 on the built-in dataset)",
        description="Train an attention network. Options come from the defaults, then the YAML "
        "config (-c), then the flags given here. Writes RUN_DIR/config.yaml, metrics.jsonl, "
        "last.pt and best.pt.",
        argument_default=argparse.SUPPRESS,
    )
    p.add_argument("-c", "--config", dest="config_file", help="YAML config; flags override it")
    p.add_argument("--data", help="builtin, cifar10, cifar100, or PATH to an ImageFolder directory or .zip")
    p.add_argument("--data-dir", help="where cifar10/cifar100 live (or are downloaded to)")
    p.add_argument("--download", action="store_true", help="download CIFAR if it is missing")
    p.add_argument("--image-size", type=int, help="resize folder images to this size")
    p.add_argument("--workers", dest="num_workers", type=int, help="data loader processes (large images)")
    p.add_argument("--model", help="network name, e.g. resnet20, resnet110, resnet50")
    p.add_argument("--attention", type=_str_or_none, help="nlsam, se, ge, cbam, bam, se+nlsam, ge+nlsam, cbam+nlsam or none")
    p.add_argument("--model-option", dest="model_options", type=_model_option, action="append",
                   metavar="KEY=VALUE", help="network option, e.g. nlsam_pool=4 or nlsam_stages=[3]")
    p.add_argument("--epochs", type=int)
    p.add_argument("--batch-size", type=int)
    p.add_argument("--lr", type=float)
    p.add_argument("--weight-decay", type=float)
    p.add_argument("--optimizer", help="sgd or adamw")
    p.add_argument("--scheduler", help=", ".join(SCHEDULERS))
    p.add_argument("--milestones", type=int, nargs="+", help="epochs where 'step' divides the lr")
    p.add_argument("--warmup-epochs", type=float)
    p.add_argument("--label-smoothing", type=float)
    p.add_argument("--seed", type=int)
    p.add_argument("--deterministic", action="store_true", help="deterministic algorithms (slower)")
    p.add_argument("--device", help="auto, cpu or cuda")
    p.add_argument("--amp", help="auto (bf16/fp16 on CUDA, off on CPU), off, bf16 or fp16")
    p.add_argument("--channels-last", dest="channels_last", action="store_true")
    p.add_argument("--no-channels-last", dest="channels_last", action="store_false")
    p.add_argument("--compile", action="store_true", help="torch.compile the model")
    p.add_argument("--tensorboard", action="store_true", help="also log to RUN_DIR/tensorboard")
    p.add_argument("--out", help="run directory (default runs/DATA-MODEL-ATTENTION-seedN)")
    p.add_argument("--resume", action="store_true", help="continue the run in --out from last.pt")
    p.set_defaults(handler="nlsam.cli:run_train")


def run_train(args: argparse.Namespace) -> int:
    from pathlib import Path

    from .engine.config import resolve_config
    from .engine.train import NonFiniteLossError, default_run_dir, train

    overrides = {k: v for k, v in vars(args).items() if k not in ("command", "handler", "config_file")}
    if "model_options" in overrides:
        overrides["model_options"] = dict(overrides["model_options"])
    config_file = getattr(args, "config_file", None)
    if overrides.get("resume"):
        # a resumed run starts from its own saved config; flags given now still override it
        given = resolve_config(config_file, {k: v for k, v in overrides.items() if k != "resume"})
        run_dir = Path(given.out) if given.out else default_run_dir(given)
        saved = run_dir / "config.yaml"
        if not saved.is_file():
            raise FileNotFoundError(f"cannot resume: no {saved}; start the run without --resume")
        config_file, overrides["out"] = saved, str(run_dir)
    cfg = resolve_config(config_file, overrides)
    try:
        train(cfg)
    except NonFiniteLossError as exc:
        print(f"nlsam train: error: {exc}", file=sys.stderr)
        return 3
    return 0


def _add_eval(sub: argparse._SubParsersAction) -> None:
    from .engine.evaluate import TTA_MODES

    p = sub.add_parser(
        "eval",
        help="evaluate a checkpoint or run directory",
        description="Top-1/top-5 accuracy, loss and per-class accuracy of a trained network on "
        "its test set (or the one given with --data).",
    )
    p.add_argument("checkpoint", help="a .pt checkpoint or a run directory (best.pt is used)")
    p.add_argument("--data", default=None, help="dataset to evaluate on (default: the training one)")
    p.add_argument("--data-dir", default=None)
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--device", default="auto")
    p.add_argument(
        "--tta", choices=TTA_MODES, default="none",
        help="test-time augmentation: 'flip' averages the probabilities of each image and its "
        "mirror (default: none, the standard protocol)",
    )
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(handler="nlsam.cli:run_eval")


def run_eval(args: argparse.Namespace) -> int:
    import json

    from .data import build_data
    from .engine.checkpoint import load_checkpoint
    from .engine.evaluate import evaluate
    from .engine.loading import model_from_checkpoint
    from .engine.train import resolve_amp, resolve_device

    state = load_checkpoint(args.checkpoint)
    cfg, meta = state["config"], state.get("meta", {})
    device = resolve_device(args.device)
    model = model_from_checkpoint(state).to(device)
    data = build_data(
        args.data or cfg["data"],
        data_dir=args.data_dir if args.data_dir is not None else cfg.get("data_dir"),
        batch_size=args.batch_size,
        eval_batch_size=args.batch_size,
        device=device,
        seed=cfg.get("seed", 0),
        image_size=cfg.get("image_size"),
        num_workers=cfg.get("num_workers", 2),
    )
    if list(data.classes) != list(meta.get("classes", [])):
        raise ValueError(
            f"the dataset's {len(data.classes)} classes do not match the checkpoint's "
            f"{len(meta.get('classes', []))} classes ({', '.join(map(str, meta.get('classes', [])[:5]))}, ...)"
        )
    result = evaluate(
        model, data.test_loader, num_classes=len(data.classes), amp_dtype=resolve_amp("auto", device), tta=args.tta
    )
    result["per_class_top1"] = dict(zip(map(str, data.classes), result["per_class_top1"]))
    result.update(
        checkpoint=str(args.checkpoint), data=data.name, model=cfg["model"], attention=cfg.get("attention"), tta=args.tta
    )
    if args.json:
        print(json.dumps(result))
        return 0
    tta = " with flip test-time augmentation" if args.tta == "flip" else ""
    print(f"{cfg['model']} + {cfg.get('attention') or 'no attention'} on {data.name} ({result['n']} images){tta}")
    print(f"top-1 {result['top1']:.2f}%  top-5 {result['top5']:.2f}%  loss {result['loss']:.4f}  "
          f"{result['images_per_s']:.0f} img/s")
    print("per-class top-1:")
    for name, acc in result["per_class_top1"].items():
        print(f"  {name:>20s}  {acc:6.2f}%")
    return 0


def _add_study(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "study",
        help="run a grid of trainings described by a study file",
        description="Run every run of a study (models x attention x options x seeds). Finished "
        "runs are skipped and killed ones resumed, so the same command continues a study.",
    )
    p.add_argument("study_file", help="study YAML (base, grid, seeds, ...)")
    p.add_argument("--out", default=None, help="study directory (default studies/NAME)")
    p.add_argument("--workers", type=int, default=1, help="runs at a time (local executor)")
    p.add_argument("--executor", default="local", help="local, submitit (its local executor) or slurm")
    p.add_argument("--set", dest="overrides", type=_model_option, action="append", default=[],
                   metavar="KEY=VALUE", help="override a base option, e.g. data=PATH or epochs=5")
    p.add_argument("--dry-run", action="store_true", help="list the runs and their state only")
    p.set_defaults(handler="nlsam.cli:run_study")


def run_study(args: argparse.Namespace) -> int:
    from .engine.study import execute_study, load_study

    study = load_study(args.study_file, out=args.out, overrides=dict(args.overrides))
    counts = execute_study(study, workers=args.workers, executor=args.executor, dry_run=args.dry_run)
    if counts["failed"]:
        print(f"nlsam study: {counts['failed']} run(s) failed; run the same command again to retry them",
              file=sys.stderr)
        return 1
    if not args.dry_run:
        print(f"study done: {counts['done']} runs in {study.out}; `nlsam report {study.out}` writes the tables")
    return 0


def _add_report(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "report",
        help="tables and figures of a study directory",
        description="Write report.md, results.csv, runs.csv and PNG figures into a study directory.",
    )
    p.add_argument("study_dir")
    p.set_defaults(handler="nlsam.cli:run_report")


def run_report(args: argparse.Namespace) -> int:
    from .analysis.report import write_report

    path = write_report(args.study_dir)
    print(path.read_text())
    print(f"written: {path}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="nlsam",
        description="Nonlocal spatial attention (NL-SAM) for CNNs: build, train, evaluate, profile.",
    )
    parser.add_argument("--version", action="version", version=_version())
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    _add_train(sub)
    _add_eval(sub)
    _add_profile(sub)
    _add_study(sub)
    _add_report(sub)
    from .analysis.inspect_cli import add_inspect_commands  # cam, attention, predict, export

    add_inspect_commands(sub)
    return parser


def _version() -> str:
    from . import __version__

    return f"nlsam {__version__}"


def main(argv: Optional[List[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    module_name, func_name = args.handler.split(":")
    import importlib

    handler = getattr(importlib.import_module(module_name), func_name)
    try:
        return int(handler(args) or 0)
    except (ValueError, FileNotFoundError, KeyError) as exc:
        message = exc.args[0] if isinstance(exc, KeyError) and exc.args else exc
        print(f"nlsam {args.command}: error: {message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"nlsam {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
