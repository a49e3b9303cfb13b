"""Top-K, candidate ranking and similar items over a loaded model — pure numpy, dense indices in and out.

Everything is vectorized over many queries at once: scores for a block of users come from one ``score_all`` (or one
``score`` over the candidate columns), filters are boolean masks over the columns plus one fancy-index assignment for
the users' seen items (built from the CSR without a Python loop), and the top K of every row is an ``argpartition``.
Raw ids never appear here: ``recsys.serving.predict`` maps them to indices and back. Over large catalogs top-K
retrieves candidates first and scores only those (``recsys.serving.retrieval``; same filters, same score scale).
One known user over the whole catalog (the common endpoint request) takes the model's single-call path when it has
one (``Recommender.top_k_one``: NCF's compiled kernel), filtered by its seen items only.

Conventions: a user or item index of ``-1`` means "unknown to the model". Unknown users are answered by popularity
(cold start). Scores of filtered-out cells are ``-inf`` and never returned.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass

import numpy as np

from recsys.artifact import LoadedModel
from recsys.serving.retrieval import RetrievalConfig, choose

# Score-matrix cells per block (rows × columns): small enough that a model's intermediate tensors stay in cache
# (measured: 2^16 cells ≈ 40 users of 1,682 items is 3-10× faster than one big block for an MLP scorer), and it
# bounds memory for huge requests.
BLOCK_CELLS = 1 << 16
_FIRST = np.zeros(1, dtype=np.int64)  # "the first query is known" (read-only)
_FIRST.flags.writeable = False


@dataclass(frozen=True)
class Filters:
    """Which items may be returned, as indices (unknown ids already removed).

    - ``candidates``: only these items (None = every item);
    - ``include``: always considered: added to ``candidates`` and exempt from ``exclude_seen``/``exclude_popular``;
    - ``exclude``: never returned (wins over ``include``);
    - ``exclude_popular``: drop the N most popular items;
    - ``exclude_seen``: drop each user's training items (top-K only).
    """

    candidates: np.ndarray | None = None
    include: np.ndarray | None = None
    exclude: np.ndarray | None = None
    exclude_popular: int = 0
    exclude_seen: bool = True


@dataclass
class Ranked:
    """One query's answer: item indices best first, their scores, and whether it was a popularity fallback."""

    items: np.ndarray
    scores: np.ndarray
    cold_start: bool = False


class Ranker:
    """Ranking over one ``LoadedModel``. Thread-safe (read-only after construction, lazy parts built under a lock)."""

    def __init__(
        self, model: LoadedModel, block_cells: int = BLOCK_CELLS, retrieval: RetrievalConfig = RetrievalConfig()
    ):
        self.model = model
        self.recommender = model.recommender
        self.n_items = len(model.items)
        self.block_cells = block_cells
        self.popularity = np.asarray(model.popularity, dtype=np.float64)
        self.by_popularity = np.argsort(-self.popularity, kind="stable")  # most popular first
        self.seen_indptr = np.asarray(model.seen_indptr, dtype=np.int64)
        self.seen_indices = np.asarray(model.seen_indices, dtype=np.int64)
        self._unit_vectors: np.ndarray | None = None
        self._lock = threading.Lock()
        self.score_cache: np.ndarray | None = None  # (n_users, n_items) float32 once ``build_score_cache`` ran
        # Large catalogs: top-K through candidate retrieval + exact rescoring (``recsys.serving.retrieval``).
        self.two_stage, self.retrieval_reason = choose(self.recommender, self.n_items, retrieval)

    # ------------------------------------------------------------------ optional precomputed scores
    def scoring_cost(self, sample_users: int = 32) -> float:
        """Seconds per user of ``score_all`` (median of 3 timed blocks), to decide whether a score cache pays."""
        n_users = self.recommender.n_users
        if n_users == 0 or self.n_items == 0:
            return 0.0
        users = np.arange(min(sample_users, n_users), dtype=np.int64)
        self.recommender.score_all(users)  # warm-up
        times = []
        for _ in range(3):
            started = time.perf_counter()
            self.recommender.score_all(users)
            times.append((time.perf_counter() - started) / len(users))
        return sorted(times)[1]

    def build_score_cache(self) -> None:
        """Score every (user, item) once, in blocks: afterwards top-K and pair ranking read rows of this matrix
        instead of running the model (exact same scores; for models whose scoring is expensive, e.g. an MLP)."""
        n_users = self.recommender.n_users
        cache = np.empty((n_users, self.n_items), dtype=np.float32)
        block = max(1, self.block_cells // max(self.n_items, 1))
        for start in range(0, n_users, block):
            users = np.arange(start, min(start + block, n_users), dtype=np.int64)
            cache[start : start + len(users)] = self.recommender.score_all(users)
        self.score_cache = cache

    def _score_block(self, users: np.ndarray, cols: np.ndarray | None) -> np.ndarray:
        """A writable float32 (len(users), n_cols) block of scores."""
        cache = self.score_cache
        if cache is not None:
            return cache[users] if cols is None else cache[np.ix_(users, cols)]  # fancy indexing copies
        if cols is None:
            scores = self.recommender.score_all(users)
        else:
            scores = self.recommender.score(users, np.broadcast_to(cols, (len(users), len(cols))))
        return np.array(scores, dtype=np.float32, copy=True)  # we write -inf into it

    # ------------------------------------------------------------------ columns and masks
    def _columns(self, f: Filters) -> tuple[np.ndarray | None, np.ndarray | None]:
        """(columns, allowed): the item index of each score column (None = all items), and which columns may be
        returned (None = all)."""
        cols = None
        if f.candidates is not None:
            parts = [f.candidates] if f.include is None else [f.candidates, f.include]
            cols = np.unique(np.concatenate(parts))
        if f.exclude_popular <= 0 and (f.exclude is None or len(f.exclude) == 0):
            return cols, None
        banned = np.zeros(self.n_items, dtype=bool)
        if f.exclude_popular > 0:
            banned[self.by_popularity[: f.exclude_popular]] = True
            if f.include is not None:
                banned[f.include] = False
        if f.exclude is not None:
            banned[f.exclude] = True
        return cols, ~(banned if cols is None else banned[cols])

    def _seen_cells(
        self, users: np.ndarray, cols: np.ndarray | None, include: np.ndarray | None
    ) -> tuple[np.ndarray, np.ndarray]:
        """(row, column) of every (user, seen item) cell, vectorized over the CSR."""
        if len(users) == 1:  # the common single-user request: a slice, no index arithmetic
            items = self.seen_indices[self.seen_indptr[users[0]] : self.seen_indptr[users[0] + 1]]
            rows = np.zeros(len(items), dtype=np.int64)
        else:
            starts, ends = self.seen_indptr[users], self.seen_indptr[users + 1]
            counts = ends - starts
            total = int(counts.sum())
            rows = np.repeat(np.arange(len(users)), counts)
            offsets = np.arange(total) - np.repeat(np.cumsum(counts) - counts, counts)
            items = self.seen_indices[np.repeat(starts, counts) + offsets]
        if len(items) == 0:
            return rows, items
        keep = None
        if include is not None and len(include):
            exempt = np.zeros(self.n_items, dtype=bool)
            exempt[include] = True
            keep = ~exempt[items]
        if cols is not None:
            position = np.full(self.n_items, -1, dtype=np.int64)
            position[cols] = np.arange(len(cols))
            items = position[items]
            keep = items >= 0 if keep is None else keep & (items >= 0)
        if keep is not None:
            rows, items = rows[keep], items[keep]
        return rows, items

    # ------------------------------------------------------------------ top-K for users
    def top_k(self, users: np.ndarray, k: int, filters: Filters = Filters()) -> list[Ranked]:
        """Top ``k`` items for each user index (``-1`` = unknown user → most popular allowed items)."""
        users = np.asarray(users, dtype=np.int64)
        cols, allowed = self._columns(filters)
        out, known = self._with_cold_start(users, cols, allowed, k)
        n_cols = self.n_items if cols is None else len(cols)
        if n_cols == 0:
            empty = Ranked(np.empty(0, np.int64), np.empty(0, np.float32))
            return [r if r is not None else empty for r in out]
        # An explicit candidate list is scored exactly; a score cache already holds the exact scores.
        two_stage = self.two_stage if cols is None and self.score_cache is None else None
        if len(users) == 1 and users[0] >= 0 and cols is None and allowed is None and two_stage is None:
            one = self._top_k_one(int(users[0]), k, filters)
            if one is not None:
                return [one]
        block = max(1, self.block_cells // n_cols)
        for start in range(0, len(known), block):
            rows = known[start : start + block]
            block_users = users[rows]
            if two_stage is not None:
                for row, (idx, vals) in zip(rows, two_stage.top_k(self, block_users, k, allowed, filters)):
                    out[row] = Ranked(idx, vals)
                continue
            scores = self._score_block(block_users, cols)
            if allowed is not None:
                scores[:, ~allowed] = -np.inf
            if filters.exclude_seen:
                r, c = self._seen_cells(block_users, cols, filters.include)
                scores[r, c] = -np.inf
            for row, ranked in zip(rows, _top_rows(scores, k)):
                idx, vals = ranked
                out[row] = Ranked(idx if cols is None else cols[idx], vals)
        return out  # type: ignore[return-value]

    def _top_k_one(self, user: int, k: int, filters: Filters) -> Ranked | None:
        """A known user over the whole catalog, filtered by its seen items at most: the model's single-call path
        (``Recommender.top_k_one``) when it has one and no score cache is loaded; None otherwise."""
        if self.score_cache is not None or (filters.include is not None and len(filters.include)):
            return None
        if filters.exclude_seen:
            banned = self.seen_indices[self.seen_indptr[user] : self.seen_indptr[user + 1]]
        else:
            banned = self.seen_indices[:0]
        found = self.recommender.top_k_one(user, k, banned)
        return None if found is None else Ranked(*found)

    def _with_cold_start(
        self, indices: np.ndarray, cols: np.ndarray | None, allowed: np.ndarray | None, k: int
    ) -> tuple[list[Ranked | None], np.ndarray]:
        """One answer slot per index: unknown ones (``-1``) already hold the popular items; also the known positions."""
        out: list[Ranked | None] = [None] * len(indices)
        if len(indices) == 1 and indices[0] >= 0:  # the common single known query
            return out, _FIRST
        known = np.flatnonzero(indices >= 0)
        if len(known) < len(indices):
            cold = self._popular(cols, allowed, k)
            for i in np.flatnonzero(indices < 0):
                out[i] = cold
        return out, known

    def _popular(self, cols: np.ndarray | None, allowed: np.ndarray | None, k: int) -> Ranked:
        """Cold start: the ``k`` most popular allowed items; the score is the item's popularity."""
        if cols is None:
            order = self.by_popularity if allowed is None else self.by_popularity[allowed[self.by_popularity]]
        else:
            ok = cols if allowed is None else cols[allowed]
            order = ok[np.argsort(-self.popularity[ok], kind="stable")]
        top = order[:k]
        return Ranked(top, self.popularity[top].astype(np.float32), cold_start=True)

    # ------------------------------------------------------------------ rank given (user, item) pairs
    def rank_pairs(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        """Scores of (user, item) index pairs, flat: (P,) float32. Pairs with an unknown user score by the item's
        popularity; pairs with an unknown item score ``-inf`` (the caller ranks those last)."""
        users = np.asarray(users, dtype=np.int64)
        items = np.asarray(items, dtype=np.int64)
        scores = np.full(len(users), -np.inf, dtype=np.float32)
        known = np.flatnonzero((users >= 0) & (items >= 0))
        block = max(1, self.block_cells // 8)
        if self.score_cache is not None:
            scores[known] = self.score_cache[users[known], items[known]]
            known = known[:0]
        for start in range(0, len(known), block):
            sel = known[start : start + block]
            scores[sel] = self.recommender.score(users[sel], items[sel, None])[:, 0]
        cold = np.flatnonzero((users < 0) & (items >= 0))
        scores[cold] = self.popularity[items[cold]]
        return scores

    # ------------------------------------------------------------------ similar items
    def unit_vectors(self) -> np.ndarray:
        """Item vectors scaled to unit length (zero vectors stay zero), computed once."""
        if self._unit_vectors is None:
            with self._lock:
                if self._unit_vectors is None:
                    v = np.asarray(self.recommender.item_vectors(), dtype=np.float32)
                    norms = np.linalg.norm(v, axis=1, keepdims=True)
                    self._unit_vectors = np.divide(v, norms, out=np.zeros_like(v), where=norms > 0)
        return self._unit_vectors

    def similar(self, items: np.ndarray, k: int, filters: Filters = Filters()) -> list[Ranked]:
        """The ``k`` items nearest to each item (cosine over ``item_vectors``), never the item itself. Unknown items
        (``-1``) get the most popular allowed items (cold start)."""
        items = np.asarray(items, dtype=np.int64)
        cols, allowed = self._columns(filters)
        out, known = self._with_cold_start(items, cols, allowed, k)
        if len(known) == 0:
            return out  # type: ignore[return-value]
        vectors = self.unit_vectors()
        targets = vectors if cols is None else vectors[cols]
        n_cols = len(targets)
        if cols is None:
            self_col = items
        else:
            position = np.full(self.n_items, -1, dtype=np.int64)
            position[cols] = np.arange(n_cols)
            self_col = position[items]
        block = max(1, self.block_cells // max(n_cols, 1))
        for start in range(0, len(known), block):
            rows = known[start : start + block]
            sims = vectors[items[rows]] @ targets.T
            if allowed is not None:
                sims[:, ~allowed] = -np.inf
            own = self_col[rows]
            hit = own >= 0
            sims[np.flatnonzero(hit), own[hit]] = -np.inf
            for row, (idx, vals) in zip(rows, _top_rows(sims, k)):
                out[row] = Ranked(idx if cols is None else cols[idx], vals)
        return out  # type: ignore[return-value]


def _top_rows(scores: np.ndarray, k: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """Per row: (column indices, scores) of the ``k`` best cells, best first; ``-inf`` (filtered) cells dropped."""
    n, m = scores.shape
    kk = min(k, m)
    if kk == 0 or n == 0:
        return [(np.empty(0, np.int64), np.empty(0, np.float32))] * n
    if n == 1:  # single-user fast path: 1-D operations, no index broadcasting
        row = scores[0]
        idx = np.argpartition(row, m - kk)[m - kk :] if kk < m else np.arange(m)
        vals = row[idx]
        order = np.argsort(-vals, kind="stable")
        idx, vals = idx[order], vals[order]
        # -inf sorts last; NaN (a broken model) counts as filtered
        c = kk if vals[-1] > -np.inf else int(np.count_nonzero(vals > -np.inf))
        return [(idx[:c], vals[:c])]
    if kk < m:
        part = np.argpartition(scores, m - kk, axis=1)[:, m - kk :]
    else:
        part = np.broadcast_to(np.arange(m), (n, m))
    rows = np.arange(n)[:, None]
    vals = scores[rows, part]
    order = np.argsort(-vals, axis=1, kind="stable")
    idx = part[rows, order]
    vals = vals[rows, order]
    valid = np.count_nonzero(vals > -np.inf, axis=1).tolist()
    return [(idx[i, :c], vals[i, :c]) for i, c in enumerate(valid)]
