"""Progress lines for long work (NCF epochs, Spark ALS, data loading, evaluation), at most one per
``RECSYS_PROGRESS_SECONDS`` (30 s by default) per task, so that a job log (CloudWatch) shows what a job is doing
without flooding it.

A line reads ``progress: <phase>: 42.0% (1,234,567/2,939,445 samples), 1,020,000 samples/s, ETA 1m40s``. Lines never
contain ``=``, so no ``metric_definitions`` regex (``HR=(.*?);`` and friends) can match one.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

log = logging.getLogger("recsys.progress")


def interval_seconds() -> float:
    """``RECSYS_PROGRESS_SECONDS`` as it is set now (0 = a line at every update)."""
    from recsys.platform.settings import TRAINING, declared

    return float(declared(TRAINING, "RECSYS_PROGRESS_SECONDS").read())


def duration(seconds: float) -> str:
    """``75`` → ``1m15s``; ``3725`` → ``1h02m``; under a minute: ``42s``."""
    seconds = max(0, int(round(seconds)))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


def format_line(phase: str, done: float, total: float | None, unit: str, elapsed: float, note: str = "") -> str:
    rate = done / elapsed if elapsed > 0 else 0.0
    parts = [f"{done:,.0f} {unit}"]
    if total:
        share = min(1.0, done / total)
        parts = [f"{100 * share:.1f}% ({done:,.0f}/{total:,.0f} {unit})"]
    parts.append(f"{rate:,.0f} {unit}/s")
    if total and rate > 0:
        parts.append(f"ETA {duration(max(0.0, total - done) / rate)}")
    parts.append(f"elapsed {duration(elapsed)}")
    if note:
        parts.append(note)
    return (f"progress: {phase}: " + ", ".join(parts)).replace("=", ":")


class Progress:
    """One task's progress: ``update(done)`` logs a line when ``every`` seconds have passed since the last one
    (the first ``every`` seconds after the start included); ``done`` counts ``unit`` since the start. Checking the
    clock is all an update costs between lines, so it may be called once per batch."""

    def __init__(
        self,
        phase: str,
        total: float | None = None,
        unit: str = "rows",
        every: float | None = None,
        emit: Callable[[str], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.phase, self.total, self.unit = phase, total, unit
        self.every = interval_seconds() if every is None else every
        self.emit = emit or log.info
        self.clock = clock
        self.started = self.last = clock()
        self.lines = 0

    def due(self) -> bool:
        return self.clock() - self.last >= self.every

    def update(self, done: float, note: str = "", force: bool = False) -> bool:
        """Logs a line if one is due (or ``force``); returns whether it did."""
        now = self.clock()
        if not force and now - self.last < self.every:
            return False
        self.last = now
        self.lines += 1
        self.emit(format_line(self.phase, done, self.total, self.unit, now - self.started, note))
        return True
