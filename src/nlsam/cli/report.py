"""``nlsam report``: tables and figures of a study directory (:mod:`nlsam.analysis.report`)."""

from __future__ import annotations

import argparse

__all__ = ["add_parser", "run"]


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "report",
        help="tables and figures of a study directory",
        description="Write report.md, results.csv, runs.csv and PNG figures into a study directory.",
    )
    p.add_argument("study_dir")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from ..analysis.report import write_report

    path = write_report(args.study_dir)
    print(path.read_text())
    print(f"written: {path}")
    return 0
