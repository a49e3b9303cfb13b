"""The request forms of ``POST /invocations``, validated into typed queries against ``RequestLimits`` (from the
settings). Every problem is a ``RequestError`` (400) whose message says what to change.

Forms (one JSON object each; the keys decide the form):

- top-K:          ``{"users": [...], "k": 10, "exclude_seen": true, "exclude": [...], "include": [...],
                  "exclude_popular": 0, "candidates": [...]}``  (``"user"`` is accepted for ``"users"``)
- rank pairs:     ``{"user": [...], "item": [...]}``  parallel arrays, or one side a single id; optional ``"k"``
- similar items:  ``{"similar_to": [...], "k": 10, "exclude": [...], "include": [...], "exclude_popular": 0,
                  "candidates": [...]}``
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from recsys.serving.errors import RequestError
from recsys.serving.settings import DEFAULT_LIMITS, RequestLimits

MAX_ID_CHARS = 256

Id = str | int | float


@dataclass(frozen=True)
class Options:
    """Filters shared by top-K and similar items (raw ids)."""

    exclude: tuple[Id, ...] | None = None
    include: tuple[Id, ...] | None = None
    candidates: tuple[Id, ...] | None = None
    exclude_popular: int = 0


@dataclass(frozen=True)
class TopK:
    users: list[Id]
    k: int
    exclude_seen: bool = True
    options: Options = Options()


@dataclass(frozen=True)
class RankPairs:
    users: list[Id]
    items: list[Id]
    k: int | None = None


@dataclass(frozen=True)
class Similar:
    items: list[Id]
    k: int
    options: Options = Options()


Query = TopK | RankPairs | Similar

_FILTER_KEYS = ("exclude", "include", "candidates", "exclude_popular")
_TOPK_KEYS = frozenset({"users", "user", "k", "exclude_seen", *_FILTER_KEYS})
_RANK_KEYS = frozenset({"user", "item", "k"})
_SIMILAR_KEYS = frozenset({"similar_to", "k", *_FILTER_KEYS})


def parse_query(obj: Any, n_items: int, where: str = "request", limits: RequestLimits = DEFAULT_LIMITS) -> Query:
    """A decoded JSON object → a query. ``where`` prefixes messages (e.g. "line 3")."""
    try:
        return _parse(obj, n_items, limits)
    except RequestError as err:
        if where == "request":
            raise
        raise RequestError(f"{where}: {err}", err.status) from None


def _parse(obj: Any, n_items: int, limits: RequestLimits) -> Query:
    if not isinstance(obj, dict):
        raise RequestError(f'the request must be a JSON object such as {{"users": ["196"], "k": 10}}, got {_kind(obj)}')
    if "similar_to" in obj:
        _check_keys(obj, _SIMILAR_KEYS, "a similar-items request")
        items = _ids(obj["similar_to"], "similar_to", limits.max_users)
        return Similar(items, _k(obj, n_items, limits), _options(obj, limits))
    if "item" in obj:
        _check_keys(obj, _RANK_KEYS, "a rank request (user + item)")
        if "user" not in obj:
            raise RequestError('a rank request needs `user` next to `item`: {"user": [1, 1], "item": [10, 20]}')
        users, items = _pairs(obj["user"], obj["item"], limits)
        return RankPairs(users, items, _k(obj, n_items, limits) if "k" in obj else None)
    if "users" in obj or "user" in obj:
        _check_keys(obj, _TOPK_KEYS, "a top-K request")
        if "users" in obj and "user" in obj:
            raise RequestError("give either `users` or `user`, not both")
        key = "users" if "users" in obj else "user"
        users = _ids(obj[key], key, limits.max_users)
        exclude_seen = obj.get("exclude_seen", True)
        if not isinstance(exclude_seen, bool):
            raise RequestError(f"`exclude_seen` must be true or false, got {_kind(exclude_seen)}")
        return TopK(users, _k(obj, n_items, limits), exclude_seen, _options(obj, limits))
    raise RequestError(
        'the request needs `users` (top-K: {"users": ["196"], "k": 10}), `user` + `item` (rank candidates: '
        '{"user": ["196", "196"], "item": ["242", "302"]}) or `similar_to` (similar items: '
        f'{{"similar_to": ["242"]}}); got keys {sorted(map(str, obj))}'
    )


def _check_keys(obj: dict, allowed: frozenset[str], form: str) -> None:
    unknown = sorted(str(key) for key in obj if key not in allowed)
    if unknown:
        raise RequestError(f"unknown field(s) {', '.join(unknown)} in {form}; allowed: {', '.join(sorted(allowed))}")


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__


def _check_id(value: Any, field: str) -> Id:
    if isinstance(value, str):
        if not value.strip() or len(value) > MAX_ID_CHARS:
            raise RequestError(f"`{field}` holds an empty or over-long id ({MAX_ID_CHARS} characters max)")
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, float) and math.isfinite(value):
        return value
    raise RequestError(f"ids must be strings or numbers; `{field}` holds {_kind(value)}")


def _ids(value: Any, field: str, limit: int, allow_scalar: bool = True) -> list[Id]:
    if isinstance(value, list):
        if len(value) > limit:
            raise RequestError(f"`{field}` holds {len(value)} ids; at most {limit} per request (split the request)")
        return [_check_id(v, field) for v in value]
    if allow_scalar:
        return [_check_id(value, field)]
    raise RequestError(f"`{field}` must be an array of ids, got {_kind(value)}")


def _pairs(user: Any, item: Any, limits: RequestLimits) -> tuple[list[Id], list[Id]]:
    """Parallel arrays; a single id (or a one-element array) on either side pairs with every id on the other."""
    users = _ids(user, "user", limits.max_pairs)
    items = _ids(item, "item", limits.max_pairs)
    if len(users) != len(items):
        if len(users) == 1:
            users = users * len(items)
        elif len(items) == 1:
            items = items * len(users)
        else:
            raise RequestError(
                f"`user` and `item` are parallel arrays and must have the same length ({len(users)} ≠ {len(items)})"
            )
    if len(set(map(str, users))) > limits.max_users:
        raise RequestError(f"a rank request may name at most {limits.max_users} distinct users (split the request)")
    return users, items


def _k(obj: dict, n_items: int, limits: RequestLimits) -> int:
    k = obj.get("k", limits.default_k)
    if isinstance(k, float) and k.is_integer():
        k = int(k)
    if not isinstance(k, int) or isinstance(k, bool):
        raise RequestError(f"`k` must be an integer, got {_kind(k)}")
    high = min(limits.max_k, max(n_items, 1))
    if not 1 <= k <= high:
        raise RequestError(f"`k` must be between 1 and {high} (the model has {n_items} items), got {k}")
    return k


def _options(obj: dict, limits: RequestLimits) -> Options:
    lists = {}
    for key in ("exclude", "include", "candidates"):
        if key in obj and obj[key] is not None:
            lists[key] = tuple(_ids(obj[key], key, limits.max_filter_items, allow_scalar=False))
    n = obj.get("exclude_popular", 0)
    if isinstance(n, float) and n.is_integer():
        n = int(n)
    if not isinstance(n, int) or isinstance(n, bool) or n < 0:
        got = n if isinstance(n, int) and not isinstance(n, bool) else _kind(n)
        raise RequestError(f"`exclude_popular` must be an integer ≥ 0 (how many top items to drop), got {got}")
    return Options(exclude_popular=n, **lists)
