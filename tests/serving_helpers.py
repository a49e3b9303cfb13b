"""A small, real ``Recommender`` for serving tests: dot products over given factors (numpy), and helpers to build a
``LoadedModel`` or a model directory from it (through the real ``recsys.artifact.write_model``)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from recsys.artifact import LoadedModel
from recsys.data.ids import IdIndex
from recsys.models.base import Recommender
from recsys.training.hyperparameters import parse

ALGORITHM = "dot"


class DotRecommender(Recommender):
    """score(u, i) = user_factors[u] · item_factors[i]."""

    algorithm = ALGORITHM

    def __init__(self, hp, n_users: int, n_items: int, user_factors=None, item_factors=None):
        super().__init__(hp, n_users, n_items)
        self.user_factors = np.asarray(user_factors, dtype=np.float32)
        self.item_factors = np.asarray(item_factors, dtype=np.float32)

    def fit(self, data, ctx):  # pragma: no cover - serving tests never train it
        raise NotImplementedError

    def score(self, users, items):
        users = np.asarray(users, dtype=np.int64)
        items = np.asarray(items, dtype=np.int64)
        return np.einsum("nd,nmd->nm", self.user_factors[users], self.item_factors[items]).astype(np.float32)

    def score_all(self, users):
        return self.user_factors[np.asarray(users, dtype=np.int64)] @ self.item_factors.T

    def item_vectors(self):
        return self.item_factors

    def save(self, directory: Path) -> list[str]:
        np.savez(directory / "dot.npz", users=self.user_factors, items=self.item_factors)
        return ["dot.npz"]

    @classmethod
    def load(cls, directory, hp, n_users, n_items, device=None):
        with np.load(Path(directory) / "dot.npz") as f:
            return cls(hp, n_users, n_items, f["users"], f["items"])


def csr(rows: list[list[int]]) -> tuple[np.ndarray, np.ndarray]:
    indptr = np.cumsum([0] + [len(r) for r in rows]).astype(np.int64)
    indices = np.asarray([i for r in rows for i in r], dtype=np.int64)
    return indptr, indices


def small_model(
    user_factors, item_factors, seen: list[list[int]], user_ids=None, item_ids=None, popularity=None
) -> LoadedModel:
    uf, itf = np.asarray(user_factors, np.float32), np.asarray(item_factors, np.float32)
    n_users, n_items = len(uf), len(itf)
    users = IdIndex(user_ids or [f"u{i}" for i in range(n_users)])
    items = IdIndex(item_ids or [f"i{i}" for i in range(n_items)])
    indptr, indices = csr(seen)
    if popularity is None:
        popularity = np.bincount(indices, minlength=n_items)
    rec = DotRecommender(parse({"algorithm": "ncf"}), n_users, n_items, uf, itf)
    manifest = {"algorithm": ALGORITHM, "n_users": n_users, "n_items": n_items, "schema_version": 1}
    return LoadedModel(manifest, rec, users, items, indptr, indices, np.asarray(popularity))


def random_model(n_users: int = 50, n_items: int = 200, dim: int = 8, seed: int = 0) -> LoadedModel:
    rng = np.random.default_rng(seed)
    seen = [sorted(rng.choice(n_items, size=rng.integers(0, 15), replace=False).tolist()) for _ in range(n_users)]
    return small_model(
        rng.normal(size=(n_users, dim)),
        rng.normal(size=(n_items, dim)),
        seen,
        user_ids=[str(100 + i) for i in range(n_users)],
        item_ids=[str(1000 + i) for i in range(n_items)],
    )
