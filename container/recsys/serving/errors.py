"""Every HTTP error the server answers, decided here: its status and its message, as one JSON body
``{"error": "<what to change>"}``. The Flask app, the WSGI fast path and the nginx configuration (its own 404, 413,
502 and 504 pages, rendered by ``serve``) all answer from these constants. Status lines take their phrase from
``http.HTTPStatus``.
"""

from __future__ import annotations

import json
from http import HTTPStatus
from typing import NamedTuple


class RequestError(Exception):
    """A bad inference request; ``status`` is what to answer (400 unless said otherwise)."""

    def __init__(self, message: str, status: HTTPStatus = HTTPStatus.BAD_REQUEST):
        super().__init__(message)
        self.status = HTTPStatus(status)


class ErrorReply(NamedTuple):
    status: HTTPStatus
    message: str

    @property
    def body(self) -> bytes:
        return error_body(self.message)


def error_body(message: str) -> bytes:
    return json.dumps({"error": message}, separators=(",", ":"), ensure_ascii=False).encode()


def status_line(status: int) -> str:
    """``"413 Request Entity Too Large"`` (WSGI's status string; both request paths send the same)."""
    status = HTTPStatus(status)
    return f"{status.value} {status.phrase}"


INTERNAL_ERROR = "internal error while answering the request; the server logs have the details"
INTERNAL = ErrorReply(HTTPStatus.INTERNAL_SERVER_ERROR, INTERNAL_ERROR)
NOT_FOUND = ErrorReply(
    HTTPStatus.NOT_FOUND, "no such path; use GET /ping, POST /invocations or GET /execution-parameters"
)
NOT_LOADED = ErrorReply(HTTPStatus.SERVICE_UNAVAILABLE, "the model is not loaded yet; retry when GET /ping answers 200")
OUT_OF_MEMORY = ErrorReply(
    HTTPStatus.SERVICE_UNAVAILABLE, "the server ran out of memory for this request; send fewer users per request"
)
# nginx's own: gunicorn is not listening (502, answered as 503: retry) or did not answer within proxy_read_timeout.
UPSTREAM_DOWN = ErrorReply(
    HTTPStatus.SERVICE_UNAVAILABLE, "the model server is starting or restarting; retry when GET /ping answers 200"
)
UPSTREAM_TIMEOUT = ErrorReply(
    HTTPStatus.GATEWAY_TIMEOUT, "the model server did not answer in time; send fewer users per request"
)


def too_large(limit_mb: int) -> ErrorReply:
    return ErrorReply(
        HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
        f"the request body is larger than {limit_mb} MB (SAGEMAKER_MAX_PAYLOAD_IN_MB); send fewer users per request",
    )


def not_ready(reason: str) -> ErrorReply:
    return ErrorReply(HTTPStatus.SERVICE_UNAVAILABLE, reason)


def http_error(code: int, method: str, path: str) -> ErrorReply:
    """Any other HTTP-level error (405 wrong method, a malformed request werkzeug rejects, ...)."""
    try:
        status = HTTPStatus(code)
    except ValueError:  # not a registered status: werkzeug's own codes are, so this is a bug
        status = HTTPStatus.INTERNAL_SERVER_ERROR
    return ErrorReply(status, f"{status.phrase} ({method} {path})")


def nginx_return(reply: ErrorReply) -> str:
    """``<status> '<body>'`` for an nginx ``return`` directive. nginx expands ``$`` in the text and ends it at an
    unescaped quote; no message here holds either, so a message that does is a mistake caught at render time."""
    text = reply.body.decode()
    if "$" in text or "'" in text or "\\" in text:
        raise ValueError(f"cannot put this message in nginx.conf verbatim: {text}")
    return f"{reply.status.value} '{text}'"
