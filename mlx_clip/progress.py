"""Progress that suits where the output goes: a tqdm bar on a terminal; in a log file or CI, one
plain line every `LOG_EVERY_S` seconds instead of a bar's carriage returns. One owner, used by
the fetch and by training."""

from __future__ import annotations

import sys
import time
from typing import Callable

LOG_EVERY_S = 60.0


class Progress:
    """`update(n, note)` after each piece of work; `close()` (or `with`) at the end.

    `enabled=False` (--no-progress) says nothing at all."""

    def __init__(self, total: int, desc: str, unit: str = "images", enabled: bool = True,
                 say: Callable[[str], None] | None = None):
        from tqdm import tqdm

        self.total, self.desc, self.unit, self.done, self.note = total, desc, unit, 0, ""
        self.on_terminal = enabled and sys.stderr.isatty()
        self.logging = enabled and not self.on_terminal
        self.say = say or (lambda line: print(line, flush=True))
        self.last_line = time.perf_counter()
        self.bar = tqdm(total=total, desc=desc, unit="img", disable=not self.on_terminal, dynamic_ncols=True,
                        leave=False)

    def update(self, n: int, note: str = "") -> None:
        self.done += n
        self.note = note or self.note
        self.bar.update(n)
        if note:
            self.bar.set_postfix_str(note)
        now = time.perf_counter()
        if self.logging and now - self.last_line >= LOG_EVERY_S:
            self.last_line = now
            self.say(f"{self.desc}: {self.done:,} of {self.total:,} {self.unit}" + (f", {self.note}" if self.note else ""))

    def close(self) -> None:
        self.bar.close()

    def __enter__(self) -> "Progress":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
