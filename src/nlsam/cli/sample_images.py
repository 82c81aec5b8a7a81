"""``python -m nlsam.cli.sample_images DATA OUT_DIR``:
the first test image of every class of a dataset, as files to try ``nlsam cam``, ``attention``
and ``predict`` on (:func:`nlsam.analysis.figures.save_test_images`)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import List, Optional

__all__ = ["main"]


def main(argv: Optional[List[str]] = None) -> int:
    """Parse ``argv`` (default: the command line), write the images; return the exit status."""
    from ..analysis.figures import save_test_images

    parser = argparse.ArgumentParser(
        prog="python -m nlsam.cli.sample_images",
        description="Write test images of a dataset as PNG files, to try nlsam cam/attention/predict on.",
    )
    parser.add_argument("data", help="builtin, cifar10, cifar100, or an ImageFolder directory or .zip")
    parser.add_argument("out", help="output directory")
    parser.add_argument("--per-class", type=int, default=1)
    parser.add_argument(
        "--data-dir", default=None, help="where cifar10/cifar100 live (default $NLSAM_DATA_DIR or ./data)"
    )
    args = parser.parse_args(argv)
    try:
        save_test_images(args.data, Path(args.out), args.per_class, args.data_dir)
    except (ValueError, FileNotFoundError) as exc:
        print(f"{parser.prog}: error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
