"""The WSGI app: ``GET /ping``, ``POST /invocations``, ``GET /execution-parameters``.

``Routes`` holds the answers, independent of any framework; the Flask routes and ``FastPath`` (which skips Flask on
the two hot routes) both call it, so the two request paths cannot answer differently. Request handling is
``recsys.serving.handler.invocations``; statuses and error messages come from ``recsys.serving.errors``; the
model's loading and the workers' readiness from ``recsys.serving.state``. Every error is JSON.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from pathlib import Path

from flask import Flask, request
from flask import Response as FlaskResponse
from werkzeug.exceptions import HTTPException, RequestEntityTooLarge

from recsys.serving import codecs, errors
from recsys.serving.handler import Response, error, invocations
from recsys.serving.settings import READY_DIR_ENV, Settings
from recsys.serving.state import ModelState, WorkerReadiness, exit_worker_on_error

__all__ = ["EXTENSION", "READY_DIR_ENV", "FastPath", "Routes", "WorkerReadiness", "create_app", "exit_worker_on_error"]

log = logging.getLogger(__name__)

EXTENSION = "recsys"
READY = b'{"status":"ready"}'


def content_type(mimetype: str) -> str:
    return "text/csv; charset=utf-8" if mimetype == codecs.CSV else mimetype


class Routes:
    """What each route answers, as ``handler.Response``; the callers only move bytes."""

    def __init__(self, state: ModelState, settings: Settings):
        self.state = state
        self.limits = settings.limits
        self.max_body = settings.max_body_bytes
        self.too_large = errors.too_large(settings.body_limit_mb)
        self._execution_parameters = json.dumps(settings.execution_parameters()).encode()

    def ping(self) -> Response:
        if self.state.ready():
            return Response(200, READY, codecs.JSON)
        return error(errors.not_ready(self.state.not_ready_reason()))

    def invocations(
        self, length: int | None, read: Callable[[], bytes], content_type: str | None, accept: str | None
    ) -> Response:
        """``read()`` returns the body; it is called only once the request may be answered (loaded, not too large)."""
        predictor = self.state.predictor
        if predictor is None:
            return error(errors.NOT_LOADED)
        if length is not None and self.max_body and length > self.max_body:
            return error(self.too_large)
        try:
            return invocations(predictor, read(), content_type, accept, self.limits)
        except RequestEntityTooLarge:  # a chunked body over the limit (Flask's MAX_CONTENT_LENGTH)
            return error(self.too_large)
        except Exception:
            log.exception("unhandled error on POST /invocations")
            return error(errors.INTERNAL)

    def execution_parameters(self) -> Response:
        return Response(200, self._execution_parameters, codecs.JSON)

    def http_error(self, code: int | None, method: str, path: str) -> Response:
        """Errors raised by routing or by werkzeug itself (unknown path, wrong method, body too large)."""
        if code == 413:
            return error(self.too_large)
        if code == 404:
            return error(errors.NOT_FOUND)
        return error(errors.http_error(code or 500, method, path))


def _flask(response: Response) -> FlaskResponse:
    return FlaskResponse(
        response.body, status=errors.status_line(response.status), content_type=content_type(response.mimetype)
    )


def create_app(
    model_dir: str | Path | None = None,
    settings: Settings | None = None,
    load: bool = False,
    readiness: WorkerReadiness | None = None,
) -> Flask:
    """The WSGI app. ``load=True`` loads the model now (tests); otherwise call ``app.extensions["recsys"].start()``
    (the gunicorn config does, in each worker). ``readiness``: default from the settings' ``RECSYS_READY_DIR`` (set
    by ``serve``) for ``settings.workers`` workers; without it ``/ping`` reflects this process alone."""
    settings = settings or Settings.from_env()
    state = ModelState(
        Path(model_dir) if model_dir else settings.model_dir,
        settings.device_or_none,
        settings.score_cache,
        settings.score_cache_mb,
        readiness or WorkerReadiness.of(settings),
        settings.retrieval,
    )
    routes = Routes(state, settings)
    app = Flask("recsys.serving")
    app.config["MAX_CONTENT_LENGTH"] = settings.max_body_bytes
    app.extensions[EXTENSION] = state

    @app.get("/ping")
    def ping() -> FlaskResponse:
        return _flask(routes.ping())

    @app.post("/invocations")
    def predict() -> FlaskResponse:
        answer = routes.invocations(
            request.content_length,
            lambda: request.get_data(cache=False),
            request.headers.get("Content-Type"),
            request.headers.get("Accept"),
        )
        return _flask(answer)

    @app.get("/execution-parameters")
    def execution_params() -> FlaskResponse:
        return _flask(routes.execution_parameters())

    @app.errorhandler(HTTPException)
    def http_error(err: HTTPException) -> FlaskResponse:
        return _flask(routes.http_error(err.code, request.method, request.path))

    @app.errorhandler(Exception)
    def bug(err: Exception) -> FlaskResponse:
        log.error("unhandled error on %s %s", request.method, request.path, exc_info=err)
        return _flask(error(errors.INTERNAL))

    app.wsgi_app = FastPath(app.wsgi_app, routes)  # type: ignore[method-assign]
    if load:
        state.load()
    else:
        state.preload_modules()
    return app


class FastPath:
    """WSGI middleware (Flask's ``app.wsgi_app`` wrapping pattern) dispatching ``GET /ping`` and ``POST /invocations``
    with a Content-Length straight to ``Routes``, without Flask's request/response machinery; everything else
    (other routes and methods, chunked bodies) goes to Flask, whose routes call the same ``Routes``. Measured under
    nginx + gunicorn on 2 cores: ~25-40 % more requests/s for single-user top-10 requests (benchmarks/README.md)."""

    def __init__(self, wsgi_app, routes: Routes):
        self.wsgi_app = wsgi_app
        self.routes = routes

    def __call__(self, environ, start_response):
        path, method = environ.get("PATH_INFO"), environ.get("REQUEST_METHOD")
        if path == "/ping" and method == "GET":
            return self._send(start_response, self.routes.ping())
        if path == "/invocations" and method == "POST":
            length = environ.get("CONTENT_LENGTH")
            if length and length.isdigit():
                n = int(length)
                answer = self.routes.invocations(
                    n, lambda: environ["wsgi.input"].read(n), environ.get("CONTENT_TYPE"), environ.get("HTTP_ACCEPT")
                )
                return self._send(start_response, answer)
        return self.wsgi_app(environ, start_response)

    @staticmethod
    def _send(start_response, response: Response):
        headers = [("Content-Type", content_type(response.mimetype)), ("Content-Length", str(len(response.body)))]
        start_response(errors.status_line(response.status), headers)
        return [response.body]
