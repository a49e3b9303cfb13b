"""One evaluator for every algorithm.

- **Sampled (the NCF paper's protocol)**: each held-out (user, item) is ranked among itself plus
  ``num_eval_negatives`` items the user never interacted with (in ``known`` or the held-out set); HR@K = share
  ranked in the top K, NDCG@K = mean of 1/log2(rank + 2) over hits. Negatives are drawn once per user from the seed
  (``sample_negatives``), so epochs, algorithms and jobs with the same data and seed rank the same candidates.
  Ties count against the held-out item, so a model that scores everything equally gets HR 0, not 1.
- **Full ranking**: every item the user did not interact with in training is a candidate; Recall@K and NDCG@K
  against the user's held-out items. It costs users × items, so above ``FULL_RANKING_MAX_USERS`` held-out users a
  seeded sample of that many users is ranked (logged; the sampled protocol still covers every user).

Both log progress lines per block of users on large sets (``recsys.platform.progress``).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import numpy as np

from recsys.data.interactions import Interactions, contains_pairs
from recsys.platform.progress import Progress

if TYPE_CHECKING:
    from recsys.models.base import Recommender

log = logging.getLogger(__name__)

# Bound on the scores matrix held at once during full ranking (floats).
_FULL_RANKING_CHUNK = 4_000_000
# Full ranking ranks every item for at most this many held-out users (a seeded sample above it).
FULL_RANKING_MAX_USERS = 20_000
# Sampled evaluation scores this many held-out rows per block (one block on MovieLens-100K-sized sets).
_SAMPLED_ROWS_PER_BLOCK = 1 << 18


def _mix64(x: np.ndarray) -> np.ndarray:
    """SplitMix64's finalizer over uint64 arrays: a counter → a well-mixed 64-bit value (wrapping arithmetic)."""
    with np.errstate(over="ignore"):
        x = x + np.uint64(0x9E3779B97F4A7C15)
        x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


def _draw(seed: int, users: np.ndarray, slots: np.ndarray, attempt: int, n_items: int) -> np.ndarray:
    """Item for (seed, user, slot, attempt): a pure function of those four numbers, so a user's negatives never
    depend on which other users are evaluated, in what order, or by which algorithm."""
    key = _mix64(np.full(len(users), seed, dtype=np.uint64))
    key = _mix64(key ^ users.astype(np.uint64))
    key = _mix64(key ^ ((np.uint64(attempt) << np.uint64(32)) | slots.astype(np.uint64)))
    return (key % np.uint64(n_items)).astype(np.int64)


def sample_negatives(
    users: np.ndarray,
    n_items: int,
    forbidden_keys: np.ndarray,
    count: int,
    seed: int,
    max_rounds: int = 50,
) -> tuple[np.ndarray, np.ndarray]:
    """``count`` items per user that are not in ``forbidden_keys`` (sorted ``user * n_items + item``).

    Drawn once per user from ``seed`` (as the NCF paper's fixed negative files): the same user gets the same
    negatives in every epoch, for every algorithm, and whichever other users are evaluated alongside; rows of the
    same user share them. Vectorized rejection sampling with a counter-based generator. Returns (items (n, count),
    valid mask): a user who has interacted with nearly every item may have fewer than ``count`` negatives; the
    missing slots are marked invalid.
    """
    users = np.asarray(users, dtype=np.int64)
    rows = np.repeat(np.arange(len(users)), count)
    slots = np.tile(np.arange(count, dtype=np.int64), len(users))
    items = _draw(seed, users[rows], slots, 0, n_items).reshape(len(users), count)
    bad = contains_pairs(forbidden_keys, users[:, None] * n_items + items)
    for attempt in range(1, max_rounds + 1):
        if not bad.any():
            break
        r, c = np.nonzero(bad)
        redraw = _draw(seed, users[r], c, attempt, n_items)
        items[r, c] = redraw
        bad[r, c] = contains_pairs(forbidden_keys, users[r] * n_items + redraw)
    if bad.any():  # very dense users: enumerate their unseen items exactly, still seeded per user
        for row in np.unique(np.nonzero(bad)[0]):
            user = users[row]
            lo, hi = np.searchsorted(forbidden_keys, [user * n_items, (user + 1) * n_items])
            unseen = np.setdiff1d(np.arange(n_items), forbidden_keys[lo:hi] - user * n_items)
            slots_left = np.nonzero(bad[row])[0]
            if len(unseen):
                rng = np.random.default_rng([seed, int(user)])
                items[row, slots_left] = rng.choice(unseen, size=len(slots_left))
                bad[row, slots_left] = False
    return items, ~bad


def rank_of_first(scores: np.ndarray, valid: np.ndarray | None = None) -> np.ndarray:
    """0-based rank of column 0 among each row (ties ranked ahead of it). ``valid`` masks padding columns."""
    beats = scores[:, 1:] >= scores[:, :1]
    if valid is not None:
        beats &= valid[:, 1:]
    return beats.sum(axis=1)


def hit_ndcg(ranks: np.ndarray, k: int) -> tuple[float, float]:
    ranks = np.asarray(ranks)
    if len(ranks) == 0:
        return 0.0, 0.0
    hits = ranks < k
    ndcg = np.where(hits, 1.0 / np.log2(ranks + 2.0), 0.0)
    return float(hits.mean()), float(ndcg.mean())


class Evaluator:
    def __init__(
        self,
        train: Interactions,
        test: Interactions,
        top_k: int = 10,
        num_negatives: int = 99,
        seed: int = 42,
        known: Interactions | None = None,
    ):
        """``train``: what the model saw (excluded in full ranking). ``known``: every pair the users interacted
        with (default: train + test), never drawn as a sampled negative."""
        self.top_k, self.seed = top_k, seed
        self.n_items = train.n_items
        self.train = train
        self.test = test
        known_keys = [train.pair_keys(), test.pair_keys()] + ([known.pair_keys()] if known is not None else [])
        self.forbidden = np.unique(np.concatenate(known_keys))
        negatives, valid = sample_negatives(test.users, self.n_items, self.forbidden, num_negatives, seed)
        self.test_users = test.users
        self.candidates = np.concatenate([test.items[:, None], negatives], axis=1)  # column 0 = held-out item
        self.valid = np.concatenate([np.ones((len(test), 1), dtype=bool), valid], axis=1)

    def sampled(self, model: Recommender) -> dict[str, float]:
        n, block = len(self.test_users), _SAMPLED_ROWS_PER_BLOCK
        progress = Progress("evaluation (sampled)", n, "users")
        ranks = []
        for start in range(0, n, block):
            rows = slice(start, start + block)
            scores = np.asarray(model.score(self.test_users[rows], self.candidates[rows]), dtype=np.float64)
            ranks.append(rank_of_first(scores, self.valid[rows]))
            progress.update(min(n, start + block))
        hr, ndcg = hit_ndcg(np.concatenate(ranks) if ranks else np.zeros(0, dtype=np.int64), self.top_k)
        return {"HR": hr, "NDCG": ndcg}

    def full_ranking_users(self) -> np.ndarray:
        """The held-out users full ranking ranks: all of them, or a seeded sample of ``FULL_RANKING_MAX_USERS``."""
        users = np.unique(self.test.users)
        if len(users) <= FULL_RANKING_MAX_USERS:
            return users
        log.info("full ranking: a seeded sample of %d of %d held-out users", FULL_RANKING_MAX_USERS, len(users))
        return np.sort(np.random.default_rng(self.seed).choice(users, FULL_RANKING_MAX_USERS, replace=False))

    def full_ranking(self, model: Recommender) -> dict[str, float]:
        k = self.top_k
        test_users = self.full_ranking_users()
        if len(test_users) == 0:
            return {}
        seen_ptr, seen_idx = self.train.csr()
        order = np.argsort(self.test.users, kind="stable")
        t_users, t_items = self.test.users[order], self.test.items[order]
        lo, hi = np.searchsorted(t_users, test_users, "left"), np.searchsorted(t_users, test_users, "right")
        chunk = max(1, _FULL_RANKING_CHUNK // max(1, self.n_items))
        recalls, ndcgs = [], []
        discounts = 1.0 / np.log2(np.arange(2, k + 2))
        progress = Progress("evaluation (full ranking)", len(test_users), "users")
        for start in range(0, len(test_users), chunk):
            progress.update(start)
            users = test_users[start : start + chunk]
            scores = np.asarray(model.score_all(users), dtype=np.float32).copy()
            for row, user in enumerate(users):
                scores[row, seen_idx[seen_ptr[user] : seen_ptr[user + 1]]] = -np.inf
            kk = min(k, self.n_items)
            top = np.argpartition(-scores, kk - 1, axis=1)[:, :kk]
            top_scores = np.take_along_axis(scores, top, axis=1)
            top = np.take_along_axis(top, np.argsort(-top_scores, axis=1, kind="stable"), axis=1)
            for row in range(len(users)):
                i = start + row
                relevant = t_items[lo[i] : hi[i]]
                hits = np.isin(top[row], relevant)
                n_rel = len(np.unique(relevant))
                recalls.append(hits.sum() / n_rel)
                ideal = discounts[: min(n_rel, k)].sum()
                ndcgs.append(float((hits * discounts[: len(hits)]).sum() / ideal))
        return {f"full_recall@{k}": float(np.mean(recalls)), f"full_ndcg@{k}": float(np.mean(ndcgs))}

    def evaluate(self, model: Recommender, full: bool = False) -> dict[str, float]:
        metrics = self.sampled(model)
        if full:
            metrics.update(self.full_ranking(model))
        return metrics


class PopularityScorer:
    """Ranks every user's candidates by item popularity (distinct users per item): the baseline a model must beat,
    scored by the same evaluator on the same candidates."""

    def __init__(self, popularity: np.ndarray):
        self.popularity = np.asarray(popularity, dtype=np.float32)

    def score(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        return self.popularity[np.asarray(items)]

    def score_all(self, users: np.ndarray) -> np.ndarray:
        return np.broadcast_to(self.popularity, (len(users), len(self.popularity)))
