"""Progress lines during a Spark ALS fit. ``ALS.fit`` is one call that runs many Spark jobs, so a daemon thread
polls the SparkContext's status tracker and logs (rate-limited like ``recsys.platform.progress``) the active
stages' task counts, the jobs finished so far and the elapsed time."""

from __future__ import annotations

import threading
import time
from typing import Any

from recsys.platform.progress import duration, interval_seconds, log


def status_line(phase: str, tracker: Any, jobs_before: set[int], started: float) -> str:
    """One line from a ``StatusTracker``: active stages (name, tasks done / total) and jobs finished."""
    stages = []
    for stage_id in sorted(tracker.getActiveStageIds()):
        info = tracker.getStageInfo(stage_id)
        if info is not None:
            name = str(info.name).split(" at ")[0]
            stages.append(f"stage {stage_id} {name} {info.numCompletedTasks}/{info.numTasks} tasks")
    done = 0
    for job_id in set(tracker.getJobIdsForGroup(None)) - jobs_before:
        info = tracker.getJobInfo(job_id)
        done += info is not None and str(info.status) == "SUCCEEDED"
    running = "; ".join(stages) if stages else "no active stage"
    return f"progress: {phase}: {done} Spark jobs done, {running}, elapsed {duration(time.monotonic() - started)}"


class FitProgress:
    """``with FitProgress(spark_context, "als fit (10 iterations)"):`` logs a status line every interval."""

    def __init__(self, spark_context: Any, phase: str, every: float | None = None) -> None:
        self.tracker = spark_context.statusTracker()
        self.phase = phase
        self.every = interval_seconds() if every is None else every
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="als-progress", daemon=True)

    def __enter__(self) -> FitProgress:
        self.jobs_before = set(self.tracker.getJobIdsForGroup(None))
        self.started = time.monotonic()
        if self.every > 0:
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=5)

    def _run(self) -> None:
        while not self._stop.wait(self.every):
            try:
                log.info(status_line(self.phase, self.tracker, self.jobs_before, self.started).replace("=", ":"))
            except Exception as exc:  # the session may be stopping; progress must never break a fit
                log.debug("ALS progress unavailable: %s", exc)
                return
