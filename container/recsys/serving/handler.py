"""``invocations``: the whole of ``POST /invocations`` as a pure function, testable without Flask or a server.

(payload bytes, Content-Type, Accept, request limits) → ``Response(status, body, mimetype)``. Errors the caller can
fix answer with their status (400 / 406 / 413 / 415) and ``{"error": "<what to change>"}``; anything else is a bug:
it is logged with its traceback and answered 500 with a generic message. Nothing raised here reaches the client.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from recsys.serving import codecs, errors
from recsys.serving.errors import INTERNAL_ERROR, ErrorReply, RequestError
from recsys.serving.predict import Predictor
from recsys.serving.schema import parse_query
from recsys.serving.settings import DEFAULT_LIMITS, RequestLimits

__all__ = ["INTERNAL_ERROR", "Response", "error", "invocations"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Response:
    status: int
    body: bytes
    mimetype: str


def error(reply: ErrorReply) -> Response:
    return Response(reply.status, reply.body, codecs.JSON)


def invocations(
    predictor: Predictor,
    payload: bytes,
    content_type: str | None,
    accept: str | None,
    limits: RequestLimits = DEFAULT_LIMITS,
) -> Response:
    try:
        request_kind = codecs.media_type(content_type) or codecs.JSON
        decoded = codecs.decode(payload, content_type)  # 415 first: an unknown body type is the bigger mistake
        answer_kind = codecs.negotiate(accept, request_kind)
        n_items = predictor.n_items
        if decoded.lines:
            queries = [
                parse_query(obj, n_items, f"line {i}", limits) for i, obj in zip(decoded.line_numbers, decoded.objects)
            ]
        else:
            queries = [parse_query(obj, n_items, limits=limits) for obj in decoded.objects]
        responses = predictor.predict(queries)
        return Response(200, codecs.encode(responses, answer_kind), answer_kind)
    except RequestError as err:
        return error(ErrorReply(err.status, str(err)))
    except MemoryError:
        log.exception("out of memory answering a request of %d bytes", len(payload))
        return error(errors.OUT_OF_MEMORY)
    except Exception:
        log.exception("bug while answering a request (%d bytes, Content-Type %r)", len(payload), content_type)
        return error(errors.INTERNAL)
