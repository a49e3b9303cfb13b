"""A worker's model and the server's readiness.

The model is loaded once per worker process, in a background thread started when the worker boots, so ``/ping``
answers at once: 503 while loading, 200 once the model is loaded and has answered a warm-up query — in every worker
(``WorkerReadiness``: nginx hands each request to any worker, so one loaded worker is not a ready server).
"""

from __future__ import annotations

import json
import logging
import os
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

from recsys.serving.predict import Predictor
from recsys.serving.retrieval import RetrievalConfig
from recsys.serving.settings import Settings

log = logging.getLogger(__name__)

MANIFEST = "manifest.json"


class WorkerReadiness:
    """Which gunicorn workers have loaded the model, shared through a directory ``serve`` creates: a worker that has
    loaded it creates an empty file named by its pid; the master deletes that file when the worker exits
    (``gunicorn_conf.child_exit``), so a replacement worker counts only once it has loaded the model in turn.

    Why not load the model in the master before forking (gunicorn ``preload_app``)? A CUDA context does not survive
    ``fork``, and NCF serves on CUDA where present; per-worker loading works the same on both devices."""

    def __init__(self, directory: str | Path, expected: int):
        self.directory = Path(directory)
        self.expected = expected

    @classmethod
    def of(cls, settings: Settings) -> WorkerReadiness | None:
        """From ``RECSYS_READY_DIR`` (set by ``serve``) for ``settings.workers`` workers; None outside gunicorn."""
        return cls(settings.ready_dir, settings.workers) if settings.ready_dir else None

    def mark_ready(self, pid: int | None = None) -> None:
        (self.directory / str(pid or os.getpid())).touch()

    def forget(self, pid: int) -> None:
        (self.directory / str(pid)).unlink(missing_ok=True)

    def count(self) -> int:
        try:
            return sum(1 for name in os.listdir(self.directory) if name.isdigit())
        except OSError:
            return 0

    def all_ready(self) -> bool:
        return self.count() >= self.expected


class ModelState:
    """The worker's model: ``predictor`` once loaded; ``error`` if loading failed. ``readiness`` (under gunicorn):
    the other workers' state, for ``/ping``."""

    def __init__(
        self,
        model_dir: Path,
        device: str | None = None,
        score_cache: str = "auto",
        cache_mb: int = 512,
        readiness: WorkerReadiness | None = None,
        retrieval: RetrievalConfig = RetrievalConfig(),
    ):
        self.retrieval = retrieval
        self.model_dir = Path(model_dir)
        self.readiness = readiness
        self.device = device
        self.score_cache = score_cache
        self.cache_mb = cache_mb
        self.predictor: Predictor | None = None
        self.error: str | None = None
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def preload_modules(self) -> None:
        """Import the model's algorithm module (torch for NCF) without loading weights: run in gunicorn's master
        before forking, workers share the imported code and start faster. Never fails."""
        try:
            manifest = json.loads((self.model_dir / MANIFEST).read_text())
            from recsys.models import recommender_class

            recommender_class(manifest["algorithm"])
        except Exception as exc:  # the worker's load reports real problems
            log.debug("preload skipped: %s", exc)

    def load(self) -> None:
        """Load and warm up (synchronously). Sets ``predictor`` or ``error``; never raises."""
        from recsys.artifact import load_model

        started = time.perf_counter()
        try:
            model = load_model(self.model_dir, device=self.device)
            predictor = Predictor(model, self.score_cache, self.cache_mb, self.retrieval)
            _warm_up(predictor)
        except Exception as exc:
            log.exception("could not load the model from %s", self.model_dir)
            self.error = f"{type(exc).__name__}: {exc}"[:1000]
            return
        self.predictor = predictor
        log.info(
            "model ready: %s, %d users, %d items, score cache %s, top-K %s; ready in %.2f s",
            model.algorithm,
            len(model.users),
            len(model.items),
            predictor.cache_reason,
            predictor.ranker.retrieval_reason,
            time.perf_counter() - started,
        )

    def start(self, on_error: Callable[[str], None] | None = None) -> None:
        """Load in a background thread (idempotent), then record this worker as ready; ``on_error(reason)`` runs if
        loading fails."""
        with self._lock:
            if self._thread is not None:
                return

            def run() -> None:
                self.load()
                if self.predictor is not None and self.readiness is not None:
                    self.readiness.mark_ready()
                if self.error and on_error is not None:
                    on_error(self.error)

            self._thread = threading.Thread(target=run, name="model-loader", daemon=True)
            self._thread.start()

    def wait(self, timeout: float | None = None) -> bool:
        if self._thread is not None:
            self._thread.join(timeout)
        return self.predictor is not None

    def ready(self) -> bool:
        """``/ping``: this worker and every other one can answer ``/invocations``."""
        return self.predictor is not None and (self.readiness is None or self.readiness.all_ready())

    def not_ready_reason(self) -> str:
        if self.error:
            return f"the model could not be loaded: {self.error}"
        if self.readiness is not None:
            return f"the model is loading: {self.readiness.count()} of {self.readiness.expected} workers ready"
        return "the model is loading"


def _warm_up(predictor: Predictor) -> None:
    """One query of each form, so the first real request pays no lazy initialization."""
    from recsys.serving.schema import RankPairs, Similar, TopK

    model = predictor.model
    if len(model.users) and len(model.items):
        user, item = model.users.ids[0], model.items.ids[0]
        k = min(10, len(model.items))
        predictor.predict([TopK([user], k), RankPairs([user], [item]), Similar([item], k)])


def exit_worker_on_error(reason: str) -> None:
    """Gunicorn: a worker whose model cannot load exits with WORKER_BOOT_ERROR (3), which stops the whole server —
    the container exits with the reason in its log instead of failing health checks for minutes."""
    log.critical("stopping: the model could not be loaded: %s", reason)
    sys.stderr.flush()
    os._exit(3)
