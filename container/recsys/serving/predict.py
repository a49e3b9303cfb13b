"""Queries with raw ids → predictions with raw ids: id lookup, ``ranking`` for the numbers, and the response
objects ``{"user": ..., "items": [...], "scores": [...], "cold_start": true?, "unknown_items": [...]?}``.

- Every prediction echoes the requested id as the client spelled it (``"user"``; ``"item"`` for similar items);
  returned item ids are the training data's raw ids as strings.
- ``cold_start`` (only present when true): the user (or similar-to item) is unknown; the list is the most popular
  allowed items and ``scores`` are their popularity (distinct users in training).
- ``unknown_items`` (only present when non-empty): candidate / include / rank ids the model does not know. They are
  ranked after every known item with a ``null`` score.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import numpy as np

from recsys.artifact import LoadedModel
from recsys.data.ids import normalize_id
from recsys.serving.ranking import Filters, Ranked, Ranker
from recsys.serving.retrieval import RetrievalConfig
from recsys.serving.schema import Options, Query, RankPairs, Similar, TopK

# A score cache pays when scoring one user against every item costs more than this (an MLP does; a dot product not).
CACHE_MIN_SECONDS_PER_USER = 20e-6
CACHE_MAX_BUILD_SECONDS = 60.0  # keep start-up inside SageMaker's 4-minute health window


class Predictor:
    """Answers parsed queries against one loaded model. Thread-safe.

    ``score_cache``: ``auto`` precomputes the full user × item score matrix at start-up when it fits in
    ``cache_mb`` and the model's scoring is expensive (measured), ``on`` whenever it fits, ``off`` never.
    ``retrieval``: when top-K runs in two stages (``recsys.serving.retrieval``).
    """

    def __init__(
        self,
        model: LoadedModel,
        score_cache: str = "off",
        cache_mb: int = 512,
        retrieval: RetrievalConfig = RetrievalConfig(),
    ):
        self.model = model
        self.ranker = Ranker(model, retrieval=retrieval)
        self.n_items = len(model.items)
        self._item_ids = model.items.ids
        self.cache_reason = self._maybe_cache(score_cache, cache_mb)

    def _maybe_cache(self, policy: str, cache_mb: int) -> str:
        n_users = self.ranker.recommender.n_users
        size_mb = n_users * self.n_items * 4 / 2**20
        if policy == "off" or n_users == 0:
            return "off"
        if size_mb > cache_mb:
            return f"off: {size_mb:.0f} MB > RECSYS_SCORE_CACHE_MB={cache_mb}"
        if policy == "auto":
            cost = self.ranker.scoring_cost()
            if cost < CACHE_MIN_SECONDS_PER_USER:
                return f"off: scoring is cheap ({cost * 1e6:.1f} µs per user)"
            if cost * n_users > CACHE_MAX_BUILD_SECONDS:
                return f"off: building it would take ~{cost * n_users:.0f} s"
        started = time.perf_counter()
        self.ranker.build_score_cache()
        return f"on: {size_mb:.1f} MB, built in {time.perf_counter() - started:.2f} s"

    # ------------------------------------------------------------------ entry point
    def predict(self, queries: Sequence[Query]) -> list[list[dict[str, Any]]]:
        """One list of predictions per query, in order. Top-K queries with the same options run as one batch."""
        results: list[list[dict[str, Any]] | None] = [None] * len(queries)
        groups: dict[tuple, list[int]] = {}
        for i, query in enumerate(queries):
            if isinstance(query, TopK):
                groups.setdefault((query.k, query.exclude_seen, query.options), []).append(i)
            elif isinstance(query, RankPairs):
                results[i] = self.rank_pairs(query)
            else:
                results[i] = self.similar(query)
        for indices in groups.values():
            users = [u for i in indices for u in queries[i].users]  # type: ignore[union-attr]
            merged = TopK(
                users,
                queries[indices[0]].k,
                queries[indices[0]].exclude_seen,  # type: ignore[union-attr]
                queries[indices[0]].options,
            )  # type: ignore[union-attr]
            predictions = self.top_k(merged)
            start = 0
            for i in indices:
                n = len(queries[i].users)  # type: ignore[union-attr]
                results[i] = predictions[start : start + n]
                start += n
        return results  # type: ignore[return-value]

    # ------------------------------------------------------------------ forms
    def top_k(self, query: TopK) -> list[dict[str, Any]]:
        users = self.model.users.lookup(query.users)
        filters, unknown = self._filters(query.options, exclude_seen=query.exclude_seen)
        ranked = self.ranker.top_k(users, query.k, filters)
        return self._predictions("user", query.users, ranked, unknown, query.k)

    def similar(self, query: Similar) -> list[dict[str, Any]]:
        items = self.model.items.lookup(query.items)
        filters, unknown = self._filters(query.options, exclude_seen=False)
        ranked = self.ranker.similar(items, query.k, filters)
        return self._predictions("item", query.items, ranked, unknown, query.k)

    def rank_pairs(self, query: RankPairs) -> list[dict[str, Any]]:
        """One prediction per distinct user (first-appearance order), its candidates best first."""
        order: dict[str, tuple[Any, list[Any]]] = {}
        for user, item in zip(query.users, query.items):
            key = normalize_id(user)
            entry = order.get(key)
            if entry is None:
                entry = order[key] = (user, [])
            entry[1].append(item)
        keys = list(order)
        user_idx = self.model.users.lookup(keys)
        flat_users, flat_items, owners, raw_items = [], [], [], []
        for row, key in enumerate(keys):
            seen: set[str] = set()
            for item in order[key][1]:
                norm = normalize_id(item)
                if norm in seen:
                    continue
                seen.add(norm)
                raw_items.append(item)
                owners.append(row)
                flat_users.append(user_idx[row])
        owners_arr = np.asarray(owners, dtype=np.int64)
        flat_items = self.model.items.lookup(raw_items)
        scores = self.ranker.rank_pairs(np.asarray(flat_users, dtype=np.int64), flat_items)
        # group by owner (stable), best first inside each group; unknown items (-inf) keep their given order
        order_idx = np.lexsort((-scores, owners_arr))
        bounds = np.searchsorted(owners_arr[order_idx], np.arange(len(keys) + 1))
        predictions = []
        for row, key in enumerate(keys):
            sel = order_idx[bounds[row] : bounds[row + 1]]
            if query.k is not None:
                sel = sel[: query.k]
            items, vals = flat_items[sel], scores[sel]
            known = items >= 0
            pred: dict[str, Any] = {
                "user": order[key][0],
                "items": self._item_ids[items[known]].tolist() + [normalize_id(raw_items[i]) for i in sel[~known]],
                "scores": _round(vals[known]) + [None] * int((~known).sum()),
            }
            if user_idx[row] < 0:
                pred["cold_start"] = True
            unknown = [raw_items[i] for i in order_idx[bounds[row] : bounds[row + 1]] if flat_items[i] < 0]
            if unknown:
                pred["unknown_items"] = unknown
            predictions.append(pred)
        return predictions

    # ------------------------------------------------------------------ helpers
    def _filters(self, options: Options, exclude_seen: bool) -> tuple[Filters, list[Any]]:
        """Options with raw ids → index filters, plus the unknown candidate/include ids (ranked last)."""
        unknown: list[Any] = []
        lookup = self.model.items.lookup

        def known(ids: tuple | None, report: bool) -> np.ndarray | None:
            if ids is None:
                return None
            idx = lookup(ids)
            if report:
                unknown.extend(raw for raw, i in zip(ids, idx) if i < 0)
            return idx[idx >= 0]

        candidates = known(options.candidates, report=True)
        include = known(options.include, report=True)
        exclude = known(options.exclude, report=False)
        if unknown and options.exclude:
            banned = {normalize_id(x) for x in options.exclude}
            unknown = [x for x in unknown if normalize_id(x) not in banned]
        if unknown:  # de-duplicate, first spelling wins
            unique: dict[str, Any] = {}
            for raw in unknown:
                unique.setdefault(normalize_id(raw), raw)
            unknown = list(unique.values())
        filters = Filters(candidates, include, exclude, options.exclude_popular, exclude_seen)
        return filters, unknown

    def _predictions(
        self, key: str, raws: list[Any], ranked: list[Ranked], unknown: list[Any], k: int
    ) -> list[dict[str, Any]]:
        """Response objects; ids and rounded scores converted for all rows at once (1,000-user requests)."""
        if not ranked:
            return []
        bounds = np.cumsum([0] + [len(r.items) for r in ranked]).tolist()
        all_items = self._item_ids[np.concatenate([r.items for r in ranked])].tolist()
        all_scores = _round(np.concatenate([r.scores for r in ranked]))
        extra = [normalize_id(u) for u in unknown[:k]]
        predictions = []
        for i, (raw, r) in enumerate(zip(raws, ranked)):
            items = all_items[bounds[i] : bounds[i + 1]]
            scores: list[float | None] = all_scores[bounds[i] : bounds[i + 1]]  # type: ignore[assignment]
            if extra and len(items) < k:  # unknown candidates rank after every known one
                items += extra[: k - len(items)]
                scores += [None] * (len(items) - len(scores))
            pred: dict[str, Any] = {key: raw, "items": items, "scores": scores}
            if r.cold_start:
                pred["cold_start"] = True
            if unknown:
                pred["unknown_items"] = list(unknown)
            predictions.append(pred)
        return predictions


def _round(values: np.ndarray) -> list[float]:
    """Scores for JSON: 6 decimals (float32 carries ~7 significant digits; shorter JSON)."""
    if len(values) < 64:  # python's round beats numpy's call overhead on a single user's list
        return [round(v, 6) for v in values.tolist()]
    return np.round(values.astype(np.float64), 6).tolist()
