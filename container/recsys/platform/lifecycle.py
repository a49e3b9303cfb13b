"""SIGTERM handling. SageMaker stops a job with SIGTERM and SIGKILLs it 120 s later; as PID 1 in a container a
process without a handler ignores SIGTERM entirely, so ``train`` installs one.

Training loops call ``stop.check()`` between steps (a consistent point to checkpoint). Code that blocks for long
inside a library (a Spark fit) runs under ``stop.interruptible()``, where the signal raises at once.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import sys
import threading

from recsys.platform.errors import TrainingStopped

log = logging.getLogger(__name__)

STOPPED = "stopped: the job received SIGTERM (StopTrainingJob or MaxRuntimeInSeconds)"


class StopController:
    def __init__(self) -> None:
        self._event = threading.Event()
        self._raise_now = False

    @property
    def requested(self) -> bool:
        return self._event.is_set()

    def install(self) -> StopController:
        if threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGTERM, self._handle)
        return self

    def _handle(self, signum, frame) -> None:
        log.warning("received SIGTERM: stopping")
        self._event.set()
        if self._raise_now:
            raise TrainingStopped(STOPPED)

    def request(self) -> None:
        """Ask to stop as if SIGTERM arrived (tests, and a leader telling workers to quit)."""
        self._event.set()

    def check(self) -> None:
        if self._event.is_set():
            raise TrainingStopped(STOPPED)

    @contextlib.contextmanager
    def interruptible(self):
        self.check()
        self._raise_now = True
        try:
            yield
        finally:
            self._raise_now = False


def exit_now(code: int) -> None:
    """Ends this process at once with ``code``, logs and standard streams flushed, without interpreter finalization:
    tearing down an interpreter that imported torch takes seconds, and with gloo's worker threads still holding work
    objects it can abort the process (SIGABRT) after its work is done."""
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    os._exit(code)
