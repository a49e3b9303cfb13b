"""The one interface every recommender implements (NCF and ALS), for training, evaluation and serving.

A fitted ``Recommender`` works on dense indices only; raw-id mapping, seen-item filtering and popularity live in
the artifact (``recsys.artifact``) and the ranking code (``recsys.ranking``), shared by every algorithm.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

if TYPE_CHECKING:
    from recsys.checkpoints import Checkpointer
    from recsys.data.dataset import TrainingData
    from recsys.evaluation import Evaluator
    from recsys.hyperparameters import Hyperparameters
    from recsys.lifecycle import StopController
    from recsys.resources import ResourceConfig


@dataclass
class FitContext:
    """What a ``fit`` gets besides the data: how to evaluate, checkpoint, stop and report."""

    evaluator: Evaluator
    stop: StopController
    resources: ResourceConfig
    checkpoints: Checkpointer | None = None  # None when /opt/ml/checkpoints does not exist
    # report_metrics(metrics, **prefix): prints `epoch=3; HR=..;` lines (train.py); the prefix is optional.
    report_metrics: Callable[..., None] = lambda metrics, **prefix: None
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class FitResult:
    metrics: dict[str, float]  # final (best-epoch) metrics on the held-out data
    history: list[dict[str, float]] = field(default_factory=list)  # one entry per epoch / stage
    info: dict[str, Any] = field(default_factory=dict)  # device, timings, samples/s, ... (goes to the manifest)


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
        """Train on ``data.train``; evaluate with ``ctx.evaluator``; keep the best state. Returns final metrics."""

    # -- inference (numpy in, numpy out; vectorized over all candidates)
    @abstractmethod
    def score(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        """``users`` (n,) int, ``items`` (n, m) int → float32 scores (n, m)."""

    def score_all(self, users: np.ndarray) -> np.ndarray:
        """Scores of every item for each user: (n, n_items). Override when there is a faster path."""
        users = np.asarray(users, dtype=np.int64)
        items = np.broadcast_to(np.arange(self.n_items, dtype=np.int64), (len(users), self.n_items))
        return self.score(users, items)

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
