"""``ProjectionRecommender``: item vectors are a seeded random projection of the users who interacted with each item
(items bought by the same users point the same way), a user's vector is the sum of their items', and every score gets
a log-popularity bias. No training loop, but a complete Recommender: fit, score, save and load."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from recsys.models.base import FitContext, FitResult, Recommender

FILE = "toy_projection.npz"


class ProjectionRecommender(Recommender):
    algorithm = "toy"

    def __init__(self, hp, n_users: int, n_items: int, arrays: dict[str, np.ndarray] | None = None):
        super().__init__(hp, n_users, n_items)
        self.arrays = arrays

    def _fit_on(self, interactions) -> None:
        rng = np.random.default_rng(self.hp.seed)
        dim = self.hp.projection_dim
        projection = rng.standard_normal((self.n_users, dim)).astype(np.float32) / np.sqrt(dim)
        weights = np.log1p(np.maximum(interactions.weights, 0.0))[:, None].astype(np.float32)
        items = np.zeros((self.n_items, dim), dtype=np.float32)
        np.add.at(items, interactions.items, projection[interactions.users] * weights)
        items /= np.maximum(np.linalg.norm(items, axis=1, keepdims=True), 1e-6)
        users = np.zeros((self.n_users, dim), dtype=np.float32)
        np.add.at(users, interactions.users, items[interactions.items])
        bias = np.log1p(interactions.item_popularity()).astype(np.float32)
        self.arrays = {"users": users, "items": items, "bias": bias / max(float(bias.max()), 1.0)}

    def fit(self, data, ctx: FitContext) -> FitResult:
        self._fit_on(data.train)
        metrics = ctx.evaluator.sampled(self)
        ctx.report_metrics(metrics, stage="projection")
        metrics = self.selected_metrics(ctx, metrics)
        refit = None
        if ctx.refit:
            self._fit_on(data.all)
            refit = {"interactions": len(data.all)}
        history = [{"HR": metrics["HR"], "NDCG": metrics["NDCG"]}]
        return FitResult(metrics, history, {"projection_dim": self.hp.projection_dim}, refit)

    def score(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        a = self.arrays
        u = a["users"][np.asarray(users, dtype=np.int64)]  # (n, d)
        items = np.asarray(items, dtype=np.int64)
        return (np.matmul(a["items"][items], u[:, :, None])[..., 0] + a["bias"][items]).astype(np.float32)

    def score_all(self, users: np.ndarray) -> np.ndarray:
        a = self.arrays
        return (a["users"][np.asarray(users, dtype=np.int64)] @ a["items"].T + a["bias"]).astype(np.float32)

    def item_vectors(self) -> np.ndarray:
        return self.arrays["items"]

    def save(self, directory: Path) -> list[str]:
        with open(Path(directory) / FILE, "wb") as f:  # a file object: np.savez would append ".npz" to a path
            np.savez(f, **self.arrays)
        return [FILE]

    @classmethod
    def load(cls, directory: Path, hp, n_users: int, n_items: int, device: str | None = None) -> ProjectionRecommender:
        with np.load(Path(directory) / FILE, allow_pickle=False) as saved:
            return cls(hp, n_users, n_items, {name: saved[name] for name in saved.files})
