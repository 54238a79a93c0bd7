"""Progress of a long embedding run: a tqdm bar on a terminal, a plain line every half minute
otherwise (a log file or a notebook cell gets a few readable lines, not thousands of bar redraws)."""

from __future__ import annotations

import sys
import time
from typing import Any, Callable

PLAIN_EVERY_SECONDS = 30.0


class Progress:
    def __init__(self, total: int, what: str, show: bool = True, log: Callable[[str], Any] = print,
                 every: float = PLAIN_EVERY_SECONDS):
        self.total, self.what, self.log, self.every = total, what, log, every
        self.done = 0
        self.started = self.last = time.perf_counter()
        self.bar = None
        self.plain = show and total > 0
        if show and total > 0 and sys.stderr.isatty():
            from tqdm import tqdm

            self.bar = tqdm(total=total, desc=what, unit="img", dynamic_ncols=True)
            self.plain = False

    @property
    def rate(self) -> float:
        seconds = time.perf_counter() - self.started
        return self.done / seconds if seconds > 0 else 0.0

    def update(self, n: int) -> None:
        self.done += n
        if self.bar is not None:
            self.bar.update(n)
        elif self.plain and time.perf_counter() - self.last >= self.every:
            self.last = time.perf_counter()
            self.log(f"  {self.what}: {self.done:,} of {self.total:,} ({self.rate:.1f} images/s)")

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
