"""ALS's registration: its hyperparameters and what ``train`` needs to know about it. Imports neither pyspark nor
the model (``recsys.models.als.model`` is imported only when a model is built or loaded)."""

from __future__ import annotations

from recsys.models.registry import Algorithm
from recsys.training.params import Param

PARAMS: tuple[Param, ...] = (
    Param("rank", int, 24, "ALS latent factors.", low=1, high=4096),
    Param("max_iter", int, 10, "ALS iterations.", low=1, high=1000),
    Param("reg_param", float, 0.05, "ALS regularization.", low=0),
    Param("alpha", float, 1.0, "Implicit-feedback confidence scale: c = 1 + alpha * log1p(weight).", low=0),
    Param("implicit_prefs", bool, True, "Treat weights as implicit confidence (true) or explicit ratings (false)."),
    Param("nonnegative", bool, False, "Constrain ALS factors to be non-negative."),
    Param(
        "checkpoint_interval", int, 10, "Spark lineage checkpoint every N iterations (needs a checkpoint dir).", low=1
    ),
)

ALGORITHM = Algorithm(
    name="als",
    recommender="recsys.models.als.model:ALSRecommender",
    description="Alternating Least Squares matrix factorization on Apache Spark; serves with numpy alone.",
    params=PARAMS,
    memory_params=("rank",),
    fast={"max_iter": 3},
)
