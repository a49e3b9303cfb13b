"""The Flask app: ``GET /ping``, ``POST /invocations``, ``GET /execution-parameters``.

The model is loaded once per worker process, in a background thread started when the worker boots, so ``/ping``
answers at once: 503 while loading, 200 once the model is loaded and has answered a warm-up query — in every worker
(``WorkerReadiness``: nginx hands each request to any worker, so one loaded worker is not a ready server). Request
handling is ``recsys.serving.handler.invocations``; this module only adapts it to HTTP. Every error is JSON.
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

from flask import Flask, Response, request
from werkzeug.exceptions import HTTPException

from recsys.serving import codecs
from recsys.serving.handler import INTERNAL_ERROR, invocations
from recsys.serving.predict import Predictor
from recsys.serving.settings import Settings

log = logging.getLogger(__name__)

EXTENSION = "recsys"
MANIFEST = "manifest.json"
READY_DIR_ENV = "RECSYS_READY_DIR"  # set by ``serve``: where workers record that they have loaded the model


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
    def from_env(cls, expected: int) -> WorkerReadiness | None:
        directory = os.environ.get(READY_DIR_ENV)
        return cls(directory, expected) if directory else None

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
    ):
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
            predictor = Predictor(model, self.score_cache, self.cache_mb)
            _warm_up(predictor)
        except Exception as exc:
            log.exception("could not load the model from %s", self.model_dir)
            self.error = f"{type(exc).__name__}: {exc}"[:1000]
            return
        self.predictor = predictor
        log.info(
            "model ready: %s, %d users, %d items, score cache %s; ready in %.2f s",
            model.algorithm,
            len(model.users),
            len(model.items),
            predictor.cache_reason,
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


def _json(status: int, payload: dict) -> Response:
    return Response(json.dumps(payload), status=status, mimetype=codecs.JSON)


def create_app(
    model_dir: str | Path | None = None,
    settings: Settings | None = None,
    load: bool = False,
    readiness: WorkerReadiness | None = None,
) -> Flask:
    """The WSGI app. ``load=True`` loads the model now (tests); otherwise call ``app.extensions["recsys"].start()``
    (the gunicorn config does, in each worker). ``readiness``: default from ``RECSYS_READY_DIR`` (set by ``serve``)
    for ``settings.workers`` workers; without it ``/ping`` reflects this process alone."""
    settings = settings or Settings.from_env()
    state = ModelState(
        Path(model_dir) if model_dir else settings.model_dir,
        settings_device(),
        settings.score_cache,
        settings.score_cache_mb,
        readiness or WorkerReadiness.from_env(settings.workers),
    )
    app = Flask("recsys.serving")
    app.config["MAX_CONTENT_LENGTH"] = settings.max_body_bytes
    app.extensions[EXTENSION] = state
    execution_parameters = json.dumps(settings.execution_parameters())
    too_large = codecs.encode_error(
        f"the request body is larger than {settings.body_limit_mb} MB (SAGEMAKER_MAX_PAYLOAD_IN_MB); "
        "send fewer users per request"
    )

    @app.get("/ping")
    def ping() -> Response:
        if state.ready():
            return Response(b'{"status":"ready"}', status=200, mimetype=codecs.JSON)
        return _json(503, {"error": state.not_ready_reason()})

    @app.post("/invocations")
    def predict() -> Response:
        predictor = state.predictor
        if predictor is None:
            return _json(503, {"error": "the model is not loaded yet; retry when GET /ping answers 200"})
        length = request.content_length
        if length is not None and settings.max_body_bytes and length > settings.max_body_bytes:
            return Response(too_large, status=413, mimetype=codecs.JSON)
        result = invocations(
            predictor,
            request.get_data(cache=False),
            request.headers.get("Content-Type"),
            request.headers.get("Accept"),
        )
        return Response(result.body, status=result.status, mimetype=result.mimetype)

    @app.get("/execution-parameters")
    def execution_params() -> Response:
        return Response(execution_parameters, status=200, mimetype=codecs.JSON)

    @app.errorhandler(HTTPException)
    def http_error(err: HTTPException) -> Response:
        if err.code == 413:
            return Response(too_large, status=413, mimetype=codecs.JSON)
        if err.code == 404:
            message = "no such path; use GET /ping, POST /invocations or GET /execution-parameters"
        else:
            message = f"{err.name} ({request.method} {request.path})"
        return _json(err.code or 500, {"error": message})

    @app.errorhandler(Exception)
    def bug(err: Exception) -> Response:
        log.error("unhandled error on %s %s", request.method, request.path, exc_info=err)
        return _json(500, {"error": INTERNAL_ERROR})

    app.wsgi_app = FastPath(app.wsgi_app, state, settings.max_body_bytes)  # type: ignore[method-assign]
    if load:
        state.load()
    else:
        state.preload_modules()
    return app


class FastPath:
    """WSGI middleware (Flask's ``app.wsgi_app`` wrapping pattern) answering the two hot routes — ``POST
    /invocations`` with a Content-Length and ``GET /ping`` once every worker is ready — straight from the pure handler,
    without Flask's request/response machinery; everything else (errors, 503 while loading, other routes, chunked
    bodies) falls through to the Flask routes above, which answer the same way. Measured under nginx + gunicorn on
    2 cores: ~25-40 % more requests/s for single-user top-10 requests (see benchmarks/README.md)."""

    _READY = b'{"status":"ready"}'

    def __init__(self, wsgi_app, state: ModelState, max_body: int | None):
        self.wsgi_app = wsgi_app
        self.state = state
        self.max_body = max_body

    def __call__(self, environ, start_response):
        predictor = self.state.predictor
        if predictor is not None:
            path, method = environ.get("PATH_INFO"), environ.get("REQUEST_METHOD")
            if path == "/invocations" and method == "POST":
                length = environ.get("CONTENT_LENGTH")
                if length and length.isdigit() and (self.max_body is None or int(length) <= self.max_body):
                    try:
                        payload = environ["wsgi.input"].read(int(length))
                        result = invocations(
                            predictor, payload, environ.get("CONTENT_TYPE"), environ.get("HTTP_ACCEPT")
                        )
                    except Exception:
                        log.exception("unhandled error on POST /invocations")
                        return self._send(start_response, 500, codecs.encode_error(INTERNAL_ERROR), codecs.JSON)
                    return self._send(start_response, result.status, result.body, result.mimetype)
            elif path == "/ping" and method == "GET" and self.state.ready():
                return self._send(start_response, 200, self._READY, codecs.JSON)
        return self.wsgi_app(environ, start_response)

    @staticmethod
    def _send(start_response, status: int, body: bytes, mimetype: str):
        content_type = mimetype if mimetype != codecs.CSV else "text/csv; charset=utf-8"
        start_response(
            _STATUS.get(status) or f"{status} Error",
            [("Content-Type", content_type), ("Content-Length", str(len(body)))],
        )
        return [body]


_STATUS = {
    200: "200 OK",
    400: "400 Bad Request",
    406: "406 Not Acceptable",
    413: "413 Request Entity Too Large",
    415: "415 Unsupported Media Type",
    500: "500 Internal Server Error",
    503: "503 Service Unavailable",
}


def settings_device() -> str | None:
    device = os.environ.get("RECSYS_DEVICE", "").strip().lower()
    return None if device in ("", "auto") else device


def exit_worker_on_error(reason: str) -> None:
    """Gunicorn: a worker whose model cannot load exits with WORKER_BOOT_ERROR (3), which stops the whole server —
    the container exits with the reason in its log instead of failing health checks for minutes."""
    import os

    log.critical("stopping: the model could not be loaded: %s", reason)
    sys.stderr.flush()
    os._exit(3)
