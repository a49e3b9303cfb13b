"""Wire formats: request bodies (JSON, JSON Lines, CSV) → request objects, predictions → response bodies.

- ``application/json``: one request object → ``{"predictions": [...]}``.
- ``application/jsonlines`` (also ``application/json-lines``, ``application/x-jsonlines``): one request object per
  line → one response object per line, same order, joined by ``\\n`` with no trailing newline (batch transform's
  ``AssembleWith=Line`` adds one after each response). Blank lines are skipped.
- ``text/csv``: rows ``user,item`` (rank these pairs) or single-column rows ``user`` (top-K with the default K);
  an optional header row ``user[,item]``. Answered as JSON unless ``Accept`` asks for CSV.
- ``Accept: text/csv``: rows ``id,item,score,rank`` (rank 1 = best; ``id`` is the user, or the item for similar-items
  requests; an empty score = unknown item or none), no header, no trailing newline.
"""

from __future__ import annotations

import csv
import functools
import io
import json
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any

from werkzeug.http import parse_list_header, parse_options_header

from recsys.serving.errors import RequestError

JSON = "application/json"
JSONLINES = "application/jsonlines"
CSV = "text/csv"
_JSONLINES_ALIASES = frozenset({JSONLINES, "application/json-lines", "application/x-jsonlines", "application/jsonl"})
_CSV_ALIASES = frozenset({CSV, "application/csv", "text/x-csv"})
# Deepest array/object nesting accepted in a JSON request (every request form needs 2). Deeper bodies answer 400
# saying so, instead of whatever the parser's recursion limit would make of them.
MAX_JSON_DEPTH = 100


@dataclass
class Decoded:
    objects: list[Any]  # decoded request objects (validated later)
    lines: bool  # JSON Lines: one response line per object
    line_numbers: list[int] | None = None  # JSON Lines: where each object came from (for error messages)


# Header values repeat from request to request; caching the parse keeps werkzeug's parsers off the hot path
# (bounded, so arbitrary headers cannot grow it).
@functools.lru_cache(maxsize=64)
def media_type(header: str | None) -> str:
    """``"application/json; charset=utf-8"`` → ``"application/json"``; aliases folded; ``""`` when absent."""
    if not header:
        return ""
    kind = parse_options_header(header)[0].lower()
    if kind in _JSONLINES_ALIASES:
        return JSONLINES
    if kind in _CSV_ALIASES:
        return CSV
    return kind


# ---------------------------------------------------------------------------------------------- decoding
def decode(body: bytes, content_type: str | None) -> Decoded:
    kind = media_type(content_type) or JSON  # a missing Content-Type is read as JSON
    if kind == JSON:
        return Decoded([_json(body, "the body")], lines=False)
    if kind == JSONLINES:
        numbers, objects = _json_lines(body)
        return Decoded(objects, lines=True, line_numbers=numbers)
    if kind == CSV:
        return Decoded([_csv(body)], lines=False)
    raise RequestError(
        f"unsupported Content-Type {kind!r}; send {JSON}, {JSONLINES} or {CSV}", HTTPStatus.UNSUPPORTED_MEDIA_TYPE
    )


def _text(body: bytes) -> str:
    try:
        return body.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise RequestError(f"the body is not UTF-8 text (byte {exc.start})") from None


def _json(body: bytes | str, where: str) -> Any:
    if not body or not body.strip():
        raise RequestError(f'{where} is empty; send a JSON object such as {{"users": ["196"], "k": 10}}')
    try:
        value = json.loads(body)
    except json.JSONDecodeError as exc:
        raise RequestError(f"{where} is not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}") from None
    except UnicodeDecodeError:
        raise RequestError(f"{where} is not valid UTF-8 JSON") from None
    except RecursionError:  # the C parser gives up a few hundred levels deep (Python's recursion limit)
        raise _too_deep(where) from None
    # A body holding at most MAX_JSON_DEPTH brackets cannot nest deeper (nearly every request: counting is C-fast).
    opening = (b"[", b"{") if isinstance(body, bytes) else ("[", "{")
    if body.count(opening[0]) + body.count(opening[1]) > MAX_JSON_DEPTH and _depth(value) > MAX_JSON_DEPTH:
        raise _too_deep(where)
    return value


def _too_deep(where: str) -> RequestError:
    return RequestError(
        f"{where} nests JSON arrays/objects deeper than {MAX_JSON_DEPTH} levels; "
        'a request object needs 2, as in {"users": ["196"], "k": 10}'
    )


def _depth(value: Any) -> int:
    """Nesting depth of decoded JSON (a scalar 0, ``[]`` 1, ``[[1]]`` 2), without recursion."""
    deepest, todo = 0, [(value, 1)]
    while todo:
        node, level = todo.pop()
        if isinstance(node, dict):
            node = node.values()
        elif not isinstance(node, list):
            continue
        deepest = max(deepest, level)
        todo.extend((child, level + 1) for child in node if isinstance(child, (list, dict)))
    return deepest


def _json_lines(body: bytes) -> tuple[list[int], list[Any]]:
    numbers, objects = [], []
    for number, line in enumerate(_text(body).split("\n"), start=1):
        if line.strip():
            numbers.append(number)
            objects.append(_json(line, f"line {number}"))
    if not objects:
        raise RequestError("the JSON Lines body holds no lines; send one request object per line")
    return numbers, objects


def _csv(body: bytes) -> dict[str, list[str]]:
    rows = [row for row in csv.reader(io.StringIO(_text(body))) if row and any(cell.strip() for cell in row)]
    if rows and [c.strip().lower() for c in rows[0]] in (["user", "item"], ["user"]):
        rows = rows[1:]
    if not rows:
        raise RequestError("the CSV body holds no rows; send `user,item` rows (rank) or `user` rows (top-K)")
    width = len(rows[0])
    if width not in (1, 2):
        raise RequestError(f"CSV rows must be `user,item` or `user`, got {width} columns in row 1")
    users, items = [], []
    for number, row in enumerate(rows, start=1):
        if len(row) != width:
            raise RequestError(f"CSV row {number} has {len(row)} columns; every row must have {width}")
        cells = [c.strip() for c in row]
        if not all(cells):
            raise RequestError(f"CSV row {number} has an empty cell")
        users.append(cells[0])
        if width == 2:
            items.append(cells[1])
    if width == 1:
        return {"users": users}
    return {"user": users, "item": items}


# ---------------------------------------------------------------------------------------------- Accept
@functools.lru_cache(maxsize=64)
def negotiate(accept: str | None, request_kind: str) -> str:
    """The response media type for an ``Accept`` header; 406 when nothing acceptable is offered.

    Missing / ``*/*`` → JSON, or JSON Lines for a JSON Lines request (N lines in, N lines out). Among the acceptable
    types the highest ``q`` wins, then the one listed first. (werkzeug's ``MIMEAccept`` would rank a more specific type
    above an earlier wildcard of the same ``q``, changing answers such as ``*/*, text/csv``: only its parsers are
    used.)"""
    default = JSONLINES if request_kind == JSONLINES else JSON
    if not accept or not accept.strip():
        return default
    offers = []
    for position, part in enumerate(parse_list_header(accept)):
        value, params = parse_options_header(part)
        try:
            q = float(params.get("q", 1.0))
        except ValueError:
            q = 0.0
        kind = media_type(value)
        if kind and q > 0:
            offers.append((-q, position, kind))
    for _, _, kind in sorted(offers):
        if kind in ("*/*", "application/*"):
            return default
        if kind == JSON:
            return JSONLINES if request_kind == JSONLINES else JSON  # each line of a JSON Lines answer is JSON
        if kind in (JSONLINES, CSV):
            return kind
        if kind == "text/*":
            return CSV
    raise RequestError(
        f"cannot answer with Accept {accept[:100]!r}; accept {JSON}, {JSONLINES} or {CSV}", HTTPStatus.NOT_ACCEPTABLE
    )


# ---------------------------------------------------------------------------------------------- encoding
def _dumps(obj: Any) -> str:
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False)


def encode(responses: list[list[dict[str, Any]]], kind: str) -> bytes:
    """One prediction list per request object → the body in ``kind``."""
    if kind == CSV:
        return encode_csv([p for predictions in responses for p in predictions])
    if kind == JSONLINES:
        return "\n".join(_dumps({"predictions": p}) for p in responses).encode()
    if len(responses) == 1:
        return _dumps({"predictions": responses[0]}).encode()
    return _dumps({"predictions": [p for predictions in responses for p in predictions]}).encode()


def encode_csv(predictions: list[dict[str, Any]]) -> bytes:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    for pred in predictions:
        who = pred.get("user", pred.get("item"))
        for rank, (item, score) in enumerate(zip(pred["items"], pred["scores"]), start=1):
            writer.writerow((who, item, "" if score is None else score, rank))
    return buffer.getvalue().rstrip("\n").encode()
