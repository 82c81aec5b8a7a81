"""Run small CPU tensor work with one intra-op thread."""

from __future__ import annotations

import contextlib
from typing import Iterator, Optional

import torch

__all__ = ["one_thread"]


@contextlib.contextmanager
def one_thread(device: Optional[torch.device] = None) -> Iterator[None]:
    """Use one intra-op thread inside the block when working on the CPU.

    The data pipeline's CPU ops are small (a batch is about 0.4M elements): splitting them over
    OpenMP threads gains little and, on a busy machine with few cores, makes them orders of
    magnitude slower because the threads wait for each other. One thread does well over 100k
    32x32 images/s. The caller's setting is restored on exit, so model code is unaffected.
    """
    n = torch.get_num_threads()
    if (device is not None and device.type != "cpu") or n == 1:
        yield
        return
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(n)
