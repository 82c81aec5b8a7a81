"""What a training prints while it runs: the progress bar or log lines of :class:`Progress`, and
``_say`` / ``_warn``, which print on the main process of a ``torchrun`` job only."""

from __future__ import annotations

import math
import sys
import time
from typing import Callable, Optional

from .distributed import DistInfo

__all__ = ["Progress"]


class Progress:
    """A one-line progress bar on a terminal, redrawn at most every ``refresh_s`` seconds (and
    at the end of each pass); plain log lines every ``log_every`` steps elsewhere (files, CI)."""

    def __init__(
        self,
        enabled: bool,
        log_every: int,
        refresh_s: float = 0.5,
        tty: Optional[bool] = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.enabled = enabled
        self.tty = enabled and (sys.stderr.isatty() if tty is None else tty)
        self.log_every = log_every
        self.refresh_s = refresh_s
        self.clock = clock
        self._drawn = -math.inf

    def due(self, step: int, steps: int) -> bool:
        """Whether the terminal bar would be redrawn at this step (cheap: no device sync)."""
        return self.tty and (step == steps or self.clock() - self._drawn >= self.refresh_s)

    def _draw(self, step: int, steps: int, text: str) -> None:
        if not self.due(step, steps):
            return
        self._drawn = self.clock()
        filled = int(20 * step / max(steps, 1))
        sys.stderr.write(f"\r[{'#' * filled}{'.' * (20 - filled)}] {text}\033[K")
        sys.stderr.flush()

    def step(self, epoch: int, epochs: int, step: int, steps: int, loss: float, lr: float, ips: float) -> None:
        if not self.enabled:
            return
        text = f"epoch {epoch + 1}/{epochs} [{step}/{steps}] loss {loss:.4f} lr {lr:.4g} {ips:.0f} img/s"
        if self.tty:
            self._draw(step, steps, text)
        elif step % self.log_every == 0 or step == steps:
            print(text, file=sys.stderr, flush=True)

    def eval_step(self, step: int, steps: int) -> None:
        """Progress of the evaluation after an epoch (terminal only)."""
        if self.tty:
            self._draw(step, steps, f"evaluating [{step}/{steps}]")

    def end_epoch(self) -> None:
        if self.tty:
            sys.stderr.write("\r\033[K")
            sys.stderr.flush()
            self._drawn = -math.inf


def _say(dist_info: DistInfo, message: str) -> None:
    """Print ``message`` to standard output on the main process."""
    if dist_info.is_main:
        print(message, flush=True)


def _warn(dist_info: DistInfo, message: str) -> None:
    """Print ``nlsam train: warning: MESSAGE`` to standard error on the main process."""
    if dist_info.is_main:
        print(f"nlsam train: warning: {message}", file=sys.stderr, flush=True)
