"""A progress line for long transfers: redrawn in place on a terminal, sparse in logs."""

from __future__ import annotations

import sys
import time
from typing import TextIO


class Progress:
    def __init__(self, total: int, stream: TextIO | None = None, enabled: bool = True):
        self.total, self.stream, self.enabled = total, stream or sys.stderr, enabled
        self.tty = self.stream.isatty()
        self.started = time.monotonic()
        self.last_draw = 0.0
        self.last_decile = -1
        self.done = 0
        self.message = ""

    def update(self, done: int) -> None:
        self.done = min(done, self.total)
        if not self.enabled:
            return
        now = time.monotonic()
        decile = 10 * self.done // max(self.total, 1)
        if self.tty and now - self.last_draw >= 0.2:
            self.last_draw = now
            self.stream.write("\r" + self._line(now) + "\x1b[K")
            self.stream.flush()
        elif not self.tty and decile > self.last_decile:
            self.last_decile = decile
            print(self._line(now), file=self.stream, flush=True)

    def note(self, message: str) -> None:
        self.message = message
        if self.enabled:
            print(("\n" if self.tty else "") + message, file=self.stream, flush=True)

    def _line(self, now: float) -> str:
        mib = 1024 * 1024
        rate = self.done / max(now - self.started, 1e-6) / mib
        percent = 100.0 * self.done / max(self.total, 1)
        done, total = self.done / mib, self.total / mib
        return f"{percent:5.1f}%  {done:8.1f} / {total:.1f} MiB  {rate:6.1f} MiB/s"

    def finish(self) -> None:
        if self.enabled and self.tty:
            self.stream.write("\n")
            self.stream.flush()
