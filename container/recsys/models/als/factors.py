"""One Spark ALS fit: the (user, item, weight) index arrays become a Spark DataFrame through Arrow (no row-by-row
conversion), Spark's ``ALS`` estimator fits it, and the factors come back as numpy float32 arrays ordered by index.

Confidence mapping (implicit mode): ``r = log1p(weight)``. Summed retail quantities are heavy-tailed (1 … thousands);
``log1p`` keeps a bulk buyer's line from drowning everything else, and on MovieLens ratings (1 … 5) it gives
``r`` in 0.69 … 1.79, a mild preference for liked films. ``benchmarks/als_movielens.py --sweep`` compares it with
binary (``r = 1``) and raw weights; see benchmarks/README.md. Explicit mode uses the weights as given.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

import numpy as np

from recsys.models.als.progress import FitProgress

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

    from recsys.data.interactions import Interactions
    from recsys.training.hyperparameters import Hyperparameters

CONFIDENCE = "log1p"  # how implicit weights become Spark's rating r (confidence 1 + alpha * r); see module doc
CONFIDENCE_MAPPINGS = ("log1p", "binary", "raw")


def confidence_ratings(weights: np.ndarray, implicit: bool, mapping: str = CONFIDENCE) -> np.ndarray:
    """The ``rating`` column Spark gets: implicit weights mapped per ``mapping``; explicit ratings unchanged."""
    weights = np.asarray(weights, dtype=np.float32)
    if not implicit or mapping == "raw":
        return weights
    if mapping == "log1p":
        return np.log1p(np.maximum(weights, 0.0)).astype(np.float32)
    if mapping == "binary":
        return np.ones_like(weights)
    raise ValueError(f"unknown confidence mapping {mapping!r}; choose one of {', '.join(CONFIDENCE_MAPPINGS)}")


def _factors_to_numpy(frame: Any, count: int, rank: int) -> np.ndarray:
    """Spark's (id, features) factor DataFrame → (count, rank) float32, row i = index i; absent ids stay zero."""
    table = frame.select("id", "features").toArrow()
    out = np.zeros((count, rank), dtype=np.float32)
    if table.num_rows:
        ids = table.column("id").to_numpy().astype(np.int64)
        features = table.column("features").combine_chunks().flatten().to_numpy(zero_copy_only=False)
        out[ids] = features.reshape(len(ids), rank)
    return out


def _estimator(hp: Hyperparameters, blocks: int):
    """Spark's ALS estimator with the job's hyperparameters, over the columns ``train_factors`` builds."""
    from pyspark.ml.recommendation import ALS

    return ALS(
        rank=hp.rank,
        maxIter=hp.max_iter,
        regParam=hp.reg_param,
        alpha=hp.alpha,
        implicitPrefs=hp.implicit_prefs,
        nonnegative=hp.nonnegative,
        checkpointInterval=hp.checkpoint_interval,
        seed=hp.seed,
        userCol="user",
        itemCol="item",
        ratingCol="rating",
        numUserBlocks=blocks,
        numItemBlocks=blocks,
    )


def train_factors(
    spark: SparkSession,
    train: Interactions,
    hp: Hyperparameters,
    mapping: str = CONFIDENCE,
    timings: dict[str, Any] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Fit Spark ALS on ``train`` (dense indices) → (user factors (n_users, rank), item factors (n_items, rank))."""
    import pandas as pd

    timings = {} if timings is None else timings
    started = time.perf_counter()
    if train.n_users >= 2**31 or train.n_items >= 2**31:
        raise ValueError("Spark ALS needs user and item indices below 2^31")
    frame = pd.DataFrame(
        {
            "user": train.users.astype(np.int32),
            "item": train.items.astype(np.int32),
            "rating": confidence_ratings(train.weights, hp.implicit_prefs, mapping),
        }
    )
    ratings = spark.createDataFrame(frame)  # Arrow: columnar batches, not rows
    del frame
    # ALS blocks = the session's parallelism (cores in local mode): more blocks only add shuffle overhead here.
    blocks = max(2, spark.sparkContext.defaultParallelism)
    timings["dataframe_seconds"] = round(time.perf_counter() - started, 3)

    jsc = spark.sparkContext._jsc
    cached_before = set(jsc.getPersistentRDDs().keys())
    try:
        started = time.perf_counter()
        als = _estimator(hp, blocks)
        with FitProgress(spark.sparkContext, f"als fit ({hp.max_iter} iterations)"):
            model = als.fit(ratings)
        timings["fit_seconds"] = round(time.perf_counter() - started, 3)

        started = time.perf_counter()
        users = _factors_to_numpy(model.userFactors, train.n_users, hp.rank)
        items = _factors_to_numpy(model.itemFactors, train.n_items, hp.rank)
        timings["export_seconds"] = round(time.perf_counter() - started, 3)
    finally:
        # ALS leaves its factor RDDs cached; a session that outlives the fit (notebook, benchmark) gets them back.
        # Skipped after an interrupted fit: the session is being torn down then anyway.
        if "fit_seconds" in timings:
            for rdd_id, rdd in jsc.getPersistentRDDs().items():
                if rdd_id not in cached_before:
                    rdd.unpersist(False)
    return users, items


__all__ = ["CONFIDENCE", "CONFIDENCE_MAPPINGS", "confidence_ratings", "train_factors"]
