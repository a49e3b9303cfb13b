"""The one interface every registered algorithm's recommender implements, for training, evaluation and serving.

A fitted ``Recommender`` works on dense indices only; raw-id mapping, seen-item filtering and popularity live in
the artifact (``recsys.artifact``) and the ranking code (``recsys.serving.ranking``), shared by every algorithm.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

if TYPE_CHECKING:
    from recsys.platform.checkpoints import Checkpointer
    from recsys.platform.lifecycle import StopController
    from recsys.platform.resources import ResourceConfig
    from recsys.training.evaluation import Evaluator
    from recsys.training.hyperparameters import Hyperparameters
    from recsys.training.roles import TrainingData


@dataclass
class FitContext:
    """What a ``fit`` gets besides the data: how to select, checkpoint, stop and report."""

    evaluator: Evaluator  # over the validation interactions: the only thing that selects
    stop: StopController
    resources: ResourceConfig
    checkpoints: Checkpointer | None = None  # None when /opt/ml/checkpoints does not exist
    # report_metrics(metrics, **prefix): prints `epoch=3; HR=..;` validation lines (training/main.py); prefix optional.
    report_metrics: Callable[..., None] = lambda metrics, **prefix: None
    refit: bool = False  # after selecting, retrain on ``data.all`` with the selected settings
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class RetrievalSpace:
    """Maximum-inner-product vectors for a first retrieval stage over a large catalog: ``queries(users) @ items.T``
    ranks items like the model does (``exact``: equal to the scores up to a per-user constant, so its top K is the
    model's) or approximately (then the serving code rescores the retrieved candidates with ``score``)."""

    items: np.ndarray  # (n_items, d) float32
    queries: Callable[[np.ndarray], np.ndarray]  # (n,) user indices → (n, d) float32
    exact: bool


@dataclass
class FitResult:
    # The selected model's validation metrics (sampled HR/NDCG, full ranking; NCF: best epoch, its loss), measured
    # before any refit: a refit model has seen the validation interactions.
    metrics: dict[str, float]
    history: list[dict[str, float]] = field(default_factory=list)  # one entry per epoch / stage
    info: dict[str, Any] = field(default_factory=dict)  # device, timings, samples/s, ... (goes to the manifest)
    refit: dict[str, Any] | None = None  # what the refit did (settings, seconds); None when there was none


class Recommender(ABC):
    """Scores (user, item) pairs over dense indices. Higher score = better recommendation."""

    algorithm: ClassVar[str]

    def __init__(self, hp: Hyperparameters, n_users: int, n_items: int):
        self.hp = hp
        self.n_users = n_users
        self.n_items = n_items

    # -- training
    @abstractmethod
    def fit(self, data: TrainingData, ctx: FitContext) -> FitResult:
        """Train on ``data.train`` and select on ``ctx.evaluator`` (validation); then, when ``ctx.refit``, retrain
        on ``data.all`` with the selected settings. Afterwards this object is the model to ship."""

    def selected_metrics(self, ctx: FitContext, metrics: dict[str, float]) -> dict[str, float]:
        """``metrics`` of the selected model plus its full-ranking validation metrics: call before any refit."""
        return {**metrics, **ctx.evaluator.full_ranking(self)}

    # -- inference (numpy in, numpy out; vectorized over all candidates)
    @abstractmethod
    def score(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        """``users`` (n,) int, ``items`` (n, m) int → float32 scores (n, m)."""

    def score_all(self, users: np.ndarray) -> np.ndarray:
        """Scores of every item for each user: (n, n_items). Override when there is a faster path."""
        users = np.asarray(users, dtype=np.int64)
        items = np.broadcast_to(np.arange(self.n_items, dtype=np.int64), (len(users), self.n_items))
        return self.score(users, items)

    def top_k_one(self, user: int, k: int, banned: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
        """One user's ``k`` best items over the whole catalog, best first, as (item indices, float32 scores), none of
        the ``banned`` int64 item indices — when this model has a single-call path for it (the common endpoint
        request); None = no such path, the caller ranks ``score_all``'s row. Must agree with ``score_all`` up to
        float32 rounding."""
        return None

    def retrieval_space(self) -> RetrievalSpace | None:
        """Vectors for a first retrieval stage (see ``RetrievalSpace``); None = this model has none (serving then
        scores every item)."""
        return None

    @abstractmethod
    def item_vectors(self) -> np.ndarray:
        """(n_items, d) float32 item embeddings for similar-item search (cosine)."""

    # -- persistence (weights only; ids, seen items and the manifest are written by recsys.artifact)
    @abstractmethod
    def save(self, directory: Path) -> list[str]:
        """Write the weights into ``directory``; return the file names written."""

    @classmethod
    @abstractmethod
    def load(
        cls, directory: Path, hp: Hyperparameters, n_users: int, n_items: int, device: str | None = None
    ) -> Recommender:
        """Rebuild a fitted recommender from ``save``'s files, without a JVM."""
