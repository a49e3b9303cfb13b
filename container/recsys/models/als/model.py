"""Matrix factorization by alternating least squares, trained with Spark ML (``pyspark.ml.recommendation.ALS``).

Training: the (user, item, weight) index arrays become a Spark DataFrame through Arrow (no row-by-row conversion);
Spark fits ALS in implicit-feedback mode (Hu, Koren & Volinsky 2008: preference 1 for every observed pair,
confidence ``1 + alpha * r``) or explicit mode (``r`` is a rating to reconstruct); the user and item factors are then
exported to numpy float32 arrays ordered by index, and the Spark session and its JVM are stopped.

The fit itself (ratings DataFrame, the estimator, factors back to numpy): ``recsys.models.als.factors``.

Everything after the fit — scoring, item vectors, save, load — is numpy: serving never starts a JVM, and importing
this module does not import pyspark (pyspark is imported inside the functions ``fit`` uses).
"""

from __future__ import annotations

import contextlib
import logging
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from recsys.models.als.factors import CONFIDENCE, train_factors
from recsys.models.base import FitContext, FitResult, Recommender, RetrievalSpace
from recsys.platform.errors import TrainingStopped
from recsys.platform.lifecycle import STOPPED

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

    from recsys.data.interactions import Interactions
    from recsys.platform.cluster import HostServices
    from recsys.platform.lifecycle import StopController
    from recsys.platform.resources import ResourceConfig
    from recsys.training.hyperparameters import Hyperparameters
    from recsys.training.roles import TrainingData

log = logging.getLogger(__name__)

FACTORS_FILE = "als_factors.npz"
# FitContext.extra key: an already running SparkSession to train in (benchmarks, tests). A session already active
# in the process (a notebook's) is used the same way. Such a session is left running; otherwise fit starts its own
# session and stops it (and its JVM) before returning.
SPARK_SESSION_KEY = "spark_session"
CLUSTER_KEY = "spark_cluster"  # FitContext.extra key: the standalone cluster of a multi-host job (standalone.py)


def _executor_report(spark: SparkSession, hosts: dict[str, str], info: dict[str, Any]) -> None:
    """``info["executors"]``: which host each executor ran on and how many tasks it finished (logged too)."""
    from recsys.models.als import spark as sessions

    report = info["executors"] = []
    with contextlib.suppress(Exception):  # a broken session (failed fit) has nothing worth reporting
        for executor in sessions.executors(spark):
            host = hosts.get(executor["address"], executor["address"])
            report.append({**executor, "host": host})
            log.info(
                "Spark executor %s on host %s (%s): %d tasks",
                executor["id"],
                host,
                executor["address"],
                executor["tasks"],
            )


class ALSRecommender(Recommender):
    algorithm = "als"

    @classmethod
    def host_services(cls, resources: ResourceConfig, stop: StopController) -> HostServices:
        """How a job on several hosts trains ALS (``recsys.training.main``): a Spark standalone cluster, a worker on
        every host and the master and driver on the leader."""
        from recsys.models.als.standalone import SparkStandalone

        return SparkStandalone(resources, stop)

    def __init__(
        self,
        hp: Hyperparameters,
        n_users: int,
        n_items: int,
        user_factors: np.ndarray | None = None,
        item_factors: np.ndarray | None = None,
    ):
        super().__init__(hp, n_users, n_items)
        self.user_factors = user_factors
        self.item_factors = item_factors
        if user_factors is not None and item_factors is not None:
            self._set_factors(user_factors, item_factors)

    def _set_factors(self, user_factors: np.ndarray, item_factors: np.ndarray) -> None:
        user_factors = np.ascontiguousarray(user_factors, dtype=np.float32)
        item_factors = np.ascontiguousarray(item_factors, dtype=np.float32)
        if user_factors.ndim != 2 or item_factors.ndim != 2 or user_factors.shape[1] != item_factors.shape[1]:
            raise ValueError(f"ALS factors of shapes {user_factors.shape} and {item_factors.shape} do not fit together")
        if len(user_factors) != self.n_users or len(item_factors) != self.n_items:
            raise ValueError(
                f"ALS factors for {len(user_factors)} users × {len(item_factors)} items, expected "
                f"{self.n_users} × {self.n_items}"
            )
        self.user_factors, self.item_factors = user_factors, item_factors

    # -- training
    def fit(self, data: TrainingData, ctx: FitContext) -> FitResult:
        """Fit on ``data.train``, measure on validation, then (``ctx.refit``) fit again on ``data.all`` with the same
        settings, in the same Spark session. Each finished fit is a checkpoint (step 1: selection, step 2: refit);
        a resumed job skips the fits its checkpoints hold. Spark gives no state inside a fit: a fit cut short by
        SIGTERM starts over when the job resumes."""
        info: dict[str, Any] = {
            "confidence": CONFIDENCE if self.hp.implicit_prefs else "explicit ratings",
            "implicit_prefs": self.hp.implicit_prefs,
            "resumed_from_checkpoint": None,
        }
        resumed = ctx.checkpoints.latest() if ctx.checkpoints is not None else None
        resumed_phase = None
        phases: dict[str, float] = {}
        refit = None
        started = time.perf_counter()
        with self._spark_fits(ctx, info) as fit_factors:
            if resumed is not None:
                path, meta = resumed
                with np.load(path, allow_pickle=False) as saved:
                    self._set_factors(saved["user_factors"], saved["item_factors"])
                resumed_phase = info["resumed_from_checkpoint"] = meta.get("phase", "select")
                log.info("ALS factors restored from checkpoint %s (%s fit): not fitted again", path.name, resumed_phase)
            else:
                self._set_factors(*fit_factors(data.train))
                self._checkpoint(ctx, "select")
            if resumed_phase == "refit":  # both fits were done before the job stopped
                selection = resumed[1]["selection"]
                refit = {**selection["refit"], "resumed_from_checkpoint": True}
            else:
                ctx.stop.check()
                metrics = ctx.evaluator.sampled(self)
                ctx.report_metrics(metrics, iteration=self.hp.max_iter)
                selection = {"metrics": self.selected_metrics(ctx, metrics)}
                phases["select_seconds"] = round(time.perf_counter() - started, 3)
                if ctx.refit:
                    refit_started = time.perf_counter()
                    self._set_factors(*fit_factors(data.all))
                    refit = {"interactions": len(data.all), "seconds": round(time.perf_counter() - refit_started, 3)}
                    selection["refit"] = refit
                    self._checkpoint(ctx, "refit", selection)
                    phases["refit_seconds"] = refit["seconds"]
        info["phases"] = phases
        metrics = selection["metrics"]
        history = [{"iteration": self.hp.max_iter, "HR": metrics["HR"], "NDCG": metrics["NDCG"]}]
        return FitResult(metrics=dict(metrics), history=history, info=info, refit=refit)

    def _checkpoint(self, ctx: FitContext, phase: str, selection: dict | None = None) -> None:
        if ctx.checkpoints is not None:
            extra = {"selection": selection} if selection is not None else {}
            step = 1 if phase == "select" else 2
            ctx.checkpoints.save(step, self._write_npz, info={"kind": "als-factors", "phase": phase, **extra})

    @contextlib.contextmanager
    def _spark_fits(self, ctx: FitContext, info: dict[str, Any]):
        """Yields ``fit_factors(interactions) -> (user factors, item factors)``. The Spark session starts at the
        first call (a job resumed past every fit never starts a JVM) and serves every later one."""
        from recsys.models.als import spark as sessions

        timings: dict[str, Any] = {}
        shared = ctx.extra.get(SPARK_SESSION_KEY) or sessions.active_session()
        with contextlib.ExitStack() as stack:
            state: dict[str, Any] = {}

            def session() -> SparkSession:
                if "spark" not in state:
                    if shared is not None:
                        info.update(master=shared.sparkContext.master, spark_session="shared (left running)")
                        state["spark"] = shared
                    else:
                        settings = sessions.settings_for(ctx.resources, ctx.extra.get(CLUSTER_KEY))
                        info.update(
                            master=settings.master, driver_memory=settings.driver_memory, partitions=settings.partitions
                        )
                        # Started outside `interruptible`: a SIGTERM while Spark starts is acted on once it is
                        # up, and the teardown itself is never cut short by a second signal.
                        state["spark"] = stack.enter_context(sessions.spark_session(settings, timings, ctx.stop))
                        if settings.executor_hosts:  # the stack unwinds last-in first: reported before the stop
                            stack.callback(_executor_report, state["spark"], settings.executor_hosts, info)
                        info["spark_version"] = state["spark"].version
                return state["spark"]

            def fit_factors(train: Interactions) -> tuple[np.ndarray, np.ndarray]:
                return self._fit_in(session(), shared is not None, ctx, train, timings)

            started = time.perf_counter()
            try:
                yield fit_factors
            finally:
                if state:
                    stack.close()  # stops a session of our own (and its JVM) now, so the timings include it
                    info.update(timings)
                    info["spark_total_seconds"] = round(time.perf_counter() - started, 3)

    def _fit_in(
        self, spark: SparkSession, shared: bool, ctx: FitContext, train: Interactions, timings: dict[str, Any]
    ) -> tuple[np.ndarray, np.ndarray]:
        """One ALS fit in ``spark``, interruptible by SIGTERM; its timings are added to ``timings``."""
        fit_timings: dict[str, Any] = {}
        try:
            with ctx.stop.interruptible():
                factors = train_factors(spark, train, self.hp, timings=fit_timings)
        except TrainingStopped:
            raise
        except BaseException as exc:
            if shared:
                with contextlib.suppress(Exception):  # the session lives on: leave no job of ours running
                    spark.sparkContext.cancelAllJobs()
            # A SIGTERM inside a py4j call surfaces wrapped in py4j's own error.
            if ctx.stop.requested and isinstance(exc, Exception):
                raise TrainingStopped(STOPPED) from exc
            raise
        for key, value in fit_timings.items():
            timings[key] = round(timings.get(key, 0.0) + value, 3)
        hp = self.hp
        log.info(
            "ALS rank=%d max_iter=%d implicit=%s on %d interactions: fit %.1f s",
            *(hp.rank, hp.max_iter, hp.implicit_prefs, len(train), fit_timings.get("fit_seconds", 0.0)),
        )
        return factors

    # -- inference (numpy only)
    def _require_fitted(self) -> None:
        if self.user_factors is None or self.item_factors is None:
            raise RuntimeError("ALSRecommender is not fitted: call fit() or load()")

    def score(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        self._require_fitted()
        users = np.asarray(users, dtype=np.int64)
        items = np.asarray(items, dtype=np.int64)
        u = self.user_factors[users]  # (n, d)
        v = self.item_factors[items]  # (n, m, d)
        return np.matmul(v, u[:, :, None])[..., 0].astype(np.float32, copy=False)

    def score_all(self, users: np.ndarray) -> np.ndarray:
        self._require_fitted()
        users = np.asarray(users, dtype=np.int64)
        return self.user_factors[users] @ self.item_factors.T

    def top_k_one(self, user: int, k: int, banned: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Inner products with every item, the banned ones dropped, the ``k`` best kept: one compiled call
        (``recsys.models.kernels``)."""
        from recsys.models.kernels import dot_top_k_one

        self._require_fitted()
        return dot_top_k_one(self.user_factors[user], self.item_factors, banned, k)

    def item_vectors(self) -> np.ndarray:
        self._require_fitted()
        return self.item_factors

    def retrieval_space(self) -> RetrievalSpace:
        """The score is the inner product itself: exact."""
        self._require_fitted()
        factors = self.user_factors
        return RetrievalSpace(self.item_factors, lambda users: factors[np.asarray(users, dtype=np.int64)], exact=True)

    # -- persistence
    def _write_npz(self, target: Path) -> None:
        with open(target, "wb") as f:  # a file object: np.savez would append ".npz" to a path
            np.savez(f, user_factors=self.user_factors, item_factors=self.item_factors)

    def save(self, directory: Path) -> list[str]:
        self._require_fitted()
        self._write_npz(Path(directory) / FACTORS_FILE)
        return [FACTORS_FILE]

    @classmethod
    def load(
        cls, directory: Path, hp: Hyperparameters, n_users: int, n_items: int, device: str | None = None
    ) -> ALSRecommender:
        with np.load(Path(directory) / FACTORS_FILE, allow_pickle=False) as saved:
            return cls(hp, n_users, n_items, saved["user_factors"], saved["item_factors"])
