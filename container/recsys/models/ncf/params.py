"""NCF's registration: its hyperparameters and what ``train`` needs to know about it. Imports neither torch nor the
model (``recsys.models.ncf.model`` is imported only when a model is built or loaded)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from recsys.models.registry import Algorithm
from recsys.platform.errors import UserError
from recsys.training.params import Param

if TYPE_CHECKING:
    from recsys.training.hyperparameters import Hyperparameters

PARAMS: tuple[Param, ...] = (
    Param("model_type", str, "neumf", "NCF variant.", choices=("neumf", "gmf", "mlp")),
    Param("epochs", int, 20, "Training epochs (the best epoch by validation HR is kept).", low=1, high=10000),
    Param("lr", float, 0.005, "Learning rate.", low=0, low_exclusive=True, high=10),
    Param(
        "batch_size",
        int,
        4096,
        "Samples (positives + negatives) per optimizer step. Left at its default, small data sets get smaller batches "
        "(at least 64 steps per epoch, never below 256) and large ones larger (doubled up to 16,384 while an epoch "
        "keeps at least 512 steps).",
        low=1,
        high=1 << 24,
    ),
    Param("dropout", float, 0.0, "Dropout between MLP layers.", low=0, high=1, high_exclusive=True),
    Param("factor_num", int, 32, "Predictive factors: GMF embedding size and MLP last-layer width.", low=1, high=4096),
    Param("num_layers", int, 1, "MLP layers (tower halves each layer, ending at factor_num).", low=1, high=8),
    Param("num_negatives", int, 8, "Negative items sampled per positive each epoch.", low=1, high=1000),
    Param(
        "recency_weight",
        float,
        10.0,
        "Extra loss weight of a user's recent interactions: 1 + recency_weight * f^recency_power, f = place in the "
        "user's history by time (0 oldest, 1 newest). 0 = plain NCF; ignored without timestamps.",
        low=0,
    ),
    Param(
        "recency_power",
        float,
        8.0,
        "Shape of the recency weight: higher = only the very latest count.",
        low=0,
        low_exclusive=True,
        high=1000,
    ),
    Param("weight_decay", float, 1e-5, "L2 penalty (optimizer weight decay).", low=0),
    Param("optimizer", str, "adam", "Optimizer.", choices=("adam", "adamw", "sgd", "adagrad")),
    Param(
        "sparse_embeddings",
        str,
        "auto",
        "Sparse embedding gradients: each step updates (and weight-decays) only the rows its batch touched (lazy "
        "Adam/AdamW), so a step costs O(batch) instead of O(users + items). `auto` = on when users + items exceed "
        "8 × batch_size (large catalogs), off on small data; needs optimizer adam or adamw.",
        choices=("auto", "true", "false"),
    ),
    Param(
        "early_stopping_patience",
        int,
        5,
        "Stop after this many epochs without a better validation HR; 0 = never.",
        low=0,
    ),
    Param(
        "pretrain",
        bool,
        False,
        "NeuMF only: first train GMF and MLP, then start NeuMF from their weights (He et al. §3.4.1).",
    ),
    Param("device", str, "auto", "`auto` = CUDA when present, else CPU.", choices=("auto", "cpu", "cuda")),
)


def check(hp: Hyperparameters) -> None:
    if hp.pretrain and hp.model_type != "neumf":
        raise UserError("hyperparameter `pretrain` applies only to model_type=neumf; remove it or set model_type=neumf")


ALGORITHM = Algorithm(
    name="ncf",
    recommender="recsys.models.ncf.model:NCFRecommender",
    description="Neural Collaborative Filtering (GMF, MLP, NeuMF) on PyTorch, CPU or CUDA.",
    params=PARAMS,
    # Where it runs and when it stops looking do not change an epoch's weights: a resumed job may differ in them.
    fingerprint_exclude=("device", "early_stopping_patience"),
    memory_params=("batch_size", "factor_num"),
    fast={"epochs": 2},
    check=check,
)
