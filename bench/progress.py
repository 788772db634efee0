"""Progress lines for the benchmark's long steps, on stderr: at most one every few seconds.

    progress = Progress("phase 3: filling", total=1_000_000, unit="secrets")
    progress.update(done)   # prints when `every` seconds passed since the last line
    progress.finish(done)   # the last line, if the step took `every` seconds or more

A line: `phase 3: filling: 400,000/1,000,000 secrets (40%), 81,234 secrets/s, 4.9 s, about 7 s left`.
"""

from __future__ import annotations

import sys
import time


class Progress:
    def __init__(self, label: str, total: int, unit: str, every: float = 5.0) -> None:
        self.label = label
        self.total = total
        self.unit = unit
        self.every = every
        self.started = time.monotonic()
        self._last = self.started
        self._printed: int | None = None

    def line(self, done: int) -> str:
        elapsed = time.monotonic() - self.started
        rate = done / elapsed if elapsed > 0 else 0.0
        text = f"{self.label}: {done:,}/{self.total:,} {self.unit}"
        if self.total:
            text += f" ({100 * done / self.total:.0f}%)"
        if rate >= 1:
            text += f", {rate:,.0f} {self.unit}/s"
        text += f", {elapsed:.1f} s"
        if rate > 0 and done < self.total:
            text += f", about {(self.total - done) / rate:.0f} s left"
        return text

    def update(self, done: int) -> None:
        now = time.monotonic()
        if now - self._last >= self.every:
            self._last = now
            self._print(done)

    def finish(self, done: int) -> None:
        """The last line, for a step that took long enough to be a long one."""
        if time.monotonic() - self.started >= self.every and self._printed != done:
            self._print(done)

    def _print(self, done: int) -> None:
        self._printed = done
        print(self.line(done), file=sys.stderr, flush=True)
