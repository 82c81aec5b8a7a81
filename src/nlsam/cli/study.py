"""``nlsam study``: run the grid of trainings a study file describes (:mod:`nlsam.engine.study`)."""

from __future__ import annotations

import argparse
import sys

from ._args import model_option

__all__ = ["add_parser", "run"]


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "study",
        help="run a grid of trainings described by a study file",
        description="Run every run of a study (models x attention x options x seeds). Finished "
        "runs are skipped and killed ones resumed, so the same command continues a study.",
    )
    p.add_argument(
        "study_file",
        metavar="STUDY",
        help="study YAML file (base, grid, seeds, ...), or the name of a shipped study "
        "(`nlsam list configs`: table5_depth, ...)",
    )
    p.add_argument("--out", default=None, help="study directory (default studies/NAME)")
    p.add_argument("--workers", type=int, default=1, help="runs at a time (local executor)")
    p.add_argument("--executor", default="local", help="local, submitit (its local executor) or slurm")
    p.add_argument(
        "--set",
        dest="overrides",
        type=model_option,
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a base option, e.g. data=PATH or epochs=5",
    )
    p.add_argument("--dry-run", action="store_true", help="list the runs and their state only")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from ..configs import study_path
    from ..engine.study import load_study
    from ..engine.study_runner import execute_study

    study = load_study(study_path(args.study_file), out=args.out, overrides=dict(args.overrides))
    counts = execute_study(study, workers=args.workers, executor=args.executor, dry_run=args.dry_run)
    if counts["failed"]:
        print(
            f"nlsam study: {counts['failed']} run(s) failed; run the same command again to retry them", file=sys.stderr
        )
        return 1
    if not args.dry_run and counts.get("waiting"):
        print(
            f"study part-done: {counts['done']} runs in {study.out}, {counts['waiting']} waiting for a machine "
            f"of their seed block's precision (see the note above); `nlsam report {study.out}` writes the tables"
        )
    elif not args.dry_run:
        print(f"study done: {counts['done']} runs in {study.out}; `nlsam report {study.out}` writes the tables")
    return 0
