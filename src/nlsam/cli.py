"""The ``nlsam`` command line: ``nlsam {train,eval,profile,...}``. Parsing only; each command's
work lives in the library module named beside it."""
from __future__ import annotations

import argparse
import os
import sys
from typing import Any, List, NoReturn, Optional


def _add_profile(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "profile",
        help="parameters, MACs and FLOPs of a network, with the attention overhead",
        description="Print the cost table of a network (params, GFLOPs) and the overhead of its "
        "attention modules over the plain network. FLOPs = 2 x MACs for convolutions and "
        "linear layers; the cheap work of attention modules is counted too.",
    )
    p.add_argument("model", help="network name (`nlsam list models` lists them)")
    p.add_argument("--attention", default="nlsam",
                   help="attention composition (`nlsam list attention`), or 'none'")
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


def _flag_type(hint: Any) -> Any:
    """The argparse ``type`` of a config field's scalar type hint (``Optional[X]`` -> ``X``)."""
    import typing

    args = [a for a in typing.get_args(hint) if a is not type(None)]
    return args[0] if typing.get_origin(hint) is typing.Union and len(args) == 1 else hint


def _add_config_flags(p: argparse.ArgumentParser) -> None:
    """One flag per :class:`~nlsam.engine.config.TrainConfig` field, with the field's help."""
    import dataclasses
    import typing

    from .engine.config import CHOICES, TrainConfig

    hints = typing.get_type_hints(TrainConfig)
    for f in dataclasses.fields(TrainConfig):
        names = [f.metadata.get("flag") or "--" + f.name.replace("_", "-")]
        if names[0] != "--" + f.name.replace("_", "-"):
            names.append("--" + f.name.replace("_", "-"))
        kind = _flag_type(hints[f.name])
        options: dict = dict(dest=f.name, help=f.metadata.get("help"))
        if f.name in CHOICES:
            options.update(choices=CHOICES[f.name])
        if f.name == "model_options":
            options.update(type=_model_option, action="append", metavar="KEY=VALUE")
        elif f.name == "attention":
            options.update(type=_str_or_none)
        elif f.name == "resume":
            options.update(action="store_true")
        elif kind is bool:
            options.update(action=argparse.BooleanOptionalAction)
        elif typing.get_origin(kind) is list:
            options.update(type=typing.get_args(kind)[0], nargs="+")
        else:
            options.update(type=kind)
        p.add_argument(*names, **options)


def _add_train(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "train",
        help="train a network (default: NL-SAM ResNet-20 on the built-in dataset)",
        description="Train an attention network. Options come from the defaults, then the YAML "
        "config (-c), then the flags given here; every YAML key is also a flag. Writes "
        "RUN_DIR/config.yaml, metrics.jsonl, last.pt and best.pt. --resume continues a run with "
        "its saved settings; of these it lets you change only the ones that do not alter what was "
        "trained (epochs, device, amp, compile, workers, logging).",
        argument_default=argparse.SUPPRESS,
    )
    p.add_argument("-c", "--config", dest="config_file", help="YAML config; flags override it")
    _add_config_flags(p)
    p.set_defaults(handler="nlsam.cli:run_train")


def run_train(args: argparse.Namespace) -> int:
    from pathlib import Path

    from .engine.config import TrainConfig, load_yaml, resolve_config
    from .engine.train import NonFiniteLossError, default_run_dir, train

    overrides = {k: v for k, v in vars(args).items() if k not in ("command", "handler", "config_file")}
    if "model_options" in overrides:
        overrides["model_options"] = dict(overrides["model_options"])
    config_file = getattr(args, "config_file", None)
    base = None
    if overrides.get("resume"):
        # a resumed run starts from its own saved config; a file and flags given now may change
        # only what a resumed run can honour (checked against the checkpoint by train)
        given = resolve_config(config_file, overrides)
        run_dir = Path(given.out) if given.out else default_run_dir(given)
        saved = run_dir / "config.yaml"
        if not saved.is_file():
            raise FileNotFoundError(f"cannot resume: no {saved}; start the run without --resume")
        base = {k: v for k, v in load_yaml(saved).items() if k in TrainConfig.__dataclass_fields__}
        overrides["out"] = str(run_dir)
    cfg = resolve_config(config_file, overrides, base=base)
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
    from .engine.checkpoint import load_checkpoint, resolve_checkpoint_path
    from .engine.evaluate import evaluate
    from .engine.loading import model_from_checkpoint
    from .engine.train import resolve_amp, resolve_device

    path = resolve_checkpoint_path(args.checkpoint)
    state = load_checkpoint(path)
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
        cache_dir=cfg.get("cache_dir"),
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
    epoch = state.get("epoch")
    result.update(
        checkpoint=str(path), epoch=None if epoch is None else epoch + 1, data=data.name, model=cfg["model"],
        attention=cfg.get("attention"), tta=args.tta,
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


LISTS = ("models", "attention", "datasets")


def _add_list(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "list",
        help="list the network, attention and dataset names",
        description="Print the names the other commands accept: networks (--model), attention "
        "compositions (--attention) and built-in datasets (--data).",
    )
    p.add_argument("what", nargs="?", choices=LISTS, default=None, help="only this list")
    p.set_defaults(handler="nlsam.cli:run_list")


def run_list(args: argparse.Namespace) -> int:
    from .attention import ATTENTION_NAMES
    from .data import DATASET_NAMES
    from .models import list_models

    lists = dict(
        models=list_models(),
        attention=["none", *ATTENTION_NAMES],
        datasets=[*DATASET_NAMES, "PATH (an ImageFolder directory or .zip)"],
    )
    for what in [args.what] if args.what else LISTS:
        if not args.what:
            print(f"{what}:")
        for name in lists[what]:
            print(f"  {name}" if not args.what else name)
    return 0


class _Parser(argparse.ArgumentParser):
    """Errors in one line (what was wrong, and where the help is), not the usage block first."""

    def error(self, message: str) -> "NoReturn":  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message} (see `{self.prog} --help`)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
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
    _add_list(sub)
    from .analysis.inspect_cli import add_inspect_commands  # cam, attention, predict, export

    add_inspect_commands(sub)
    return parser


def _version() -> str:
    from . import __version__

    return f"nlsam {__version__}"


def main(argv: Optional[List[str]] = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help, --version, or a bad flag (already reported in one line)
        return int(exc.code or 0) if not isinstance(exc.code, str) else 2
    module_name, func_name = args.handler.split(":")
    import importlib

    handler = getattr(importlib.import_module(module_name), func_name)
    from .data import DownloadError

    try:
        code = int(handler(args) or 0)
        sys.stdout.flush()
        return code
    except BrokenPipeError:
        # the reader went away (`nlsam eval RUN | head -2`): stop quietly, like any Unix tool
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 141
    except (ValueError, FileNotFoundError, KeyError, DownloadError) as exc:
        message = exc.args[0] if isinstance(exc, KeyError) and exc.args else exc
        print(f"nlsam {args.command}: error: {message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"nlsam {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
