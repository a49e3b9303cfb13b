"""Spark ALS: learning on planted structure, explicit mode, factor export, numpy-only inference and persistence,
checkpoint resume without Spark, SIGTERM during a fit, and `train` end to end.

One Spark session (one JVM) serves the tests in ``TestInSharedSession``; it is stopped when that class ends. The
tests after the class start their own session, as `train` does, and check that nothing of Spark outlives the fit.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from recsys.data.ids import IdIndex
from recsys.data.interactions import Interactions
from recsys.models.als.factors import _factors_to_numpy, confidence_ratings
from recsys.models.als.model import (
    FACTORS_FILE,
    SPARK_SESSION_KEY,
    ALSRecommender,
)
from recsys.models.base import FitContext
from recsys.platform.checkpoints import Checkpointer
from recsys.platform.errors import TrainingStopped, UserError
from recsys.platform.lifecycle import StopController
from recsys.platform.resources import ResourceConfig
from recsys.training.evaluation import Evaluator
from recsys.training.hyperparameters import parse
from recsys.training.roles import TrainingData, leave_one_out

pytest.importorskip("pyspark")
from helpers.opt_ml import ROOT, train_in  # noqa: E402

FAST = {"algorithm": "als", "rank": 8, "max_iter": 5, "reg_param": 0.1, "alpha": 5.0}


def planted(
    n_users: int = 240, n_items: int = 120, clusters: int = 4, per_user: int = 15, seed: int = 0, explicit=False
) -> TrainingData:
    """Users and items in ``clusters`` taste groups: each user interacts with items of its own group (and, when
    ``explicit``, also rates a few items of other groups low). The held-out item is one of the user's group."""
    rng = np.random.default_rng(seed)
    group_items = [np.arange(g, n_items, clusters) for g in range(clusters)]
    users, items, weights = [], [], []
    for user in range(n_users):
        liked = rng.choice(group_items[user % clusters], per_user, replace=False)
        users += [user] * per_user
        items += list(liked)
        weights += list(rng.integers(4, 6, per_user) if explicit else rng.integers(1, 4, per_user))
        if explicit:
            others = np.setdiff1d(np.arange(n_items), group_items[user % clusters])
            disliked = rng.choice(others, per_user, replace=False)
            users += [user] * per_user
            items += list(disliked)
            weights += list(rng.integers(1, 3, per_user))
    everything = Interactions(np.array(users), np.array(items), np.array(weights), None, n_users, n_items)
    train, test = leave_one_out(everything, seed)
    if explicit:  # hold out liked items only: the ranking task is "find what this user likes"
        keep = test.weights >= 4
        test = test.subset(keep)
    ids = IdIndex(np.array([f"u{i}" for i in range(n_users)]))
    return TrainingData(ids, IdIndex(np.array([f"i{i}" for i in range(n_items)])), everything, train, test)


def context(data: TrainingData, spark=None, checkpoints=None, stop=None, reported=None, refit=False) -> FitContext:
    return FitContext(
        evaluator=Evaluator(data.train, data.validation, 10, 99, 42, known=data.all),
        stop=stop or StopController(),
        resources=ResourceConfig(),
        checkpoints=checkpoints,
        report_metrics=lambda metrics, **prefix: reported.append(metrics) if reported is not None else None,
        refit=refit,
        extra={SPARK_SESSION_KEY: spark} if spark is not None else {},
    )


def checkpointer(directory: Path, hp) -> Checkpointer:
    return Checkpointer(directory, "als", {**hp.for_algorithm(), "data": "synthetic"}, "algo-1")


# ---------------------------------------------------------------- no Spark needed


def test_importing_als_does_not_import_pyspark():
    code = (
        "import sys, recsys.models.als.model, recsys.models.als.spark, recsys.artifact; "
        "bad = [m for m in sys.modules if m.split('.')[0] in ('pyspark', 'py4j')]; "
        "assert not bad, bad; print('ok')"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 0 and "ok" in out.stdout, out.stderr


def test_confidence_mapping():
    weights = np.array([1, 4, 999], dtype=np.float32)
    np.testing.assert_allclose(confidence_ratings(weights, implicit=True), np.log1p(weights), rtol=1e-6)
    np.testing.assert_array_equal(confidence_ratings(weights, implicit=True, mapping="binary"), [1, 1, 1])
    np.testing.assert_array_equal(confidence_ratings(weights, implicit=False), weights)  # explicit: the ratings


def test_scoring_is_numpy_dot_products():
    rng = np.random.default_rng(1)
    u, v = rng.normal(size=(5, 3)).astype(np.float32), rng.normal(size=(7, 3)).astype(np.float32)
    model = ALSRecommender(parse({"algorithm": "als", "rank": 3}), 5, 7, u, v)
    users, items = np.array([4, 0, 4]), np.array([[6, 1], [0, 0], [2, 3]])
    scores = model.score(users, items)
    assert scores.dtype == np.float32 and scores.shape == (3, 2)
    np.testing.assert_allclose(scores, np.einsum("nd,nmd->nm", u[users], v[items]), rtol=1e-5)
    np.testing.assert_allclose(model.score_all(users), u[users] @ v.T, rtol=1e-5)
    assert model.score(np.array([], dtype=np.int64), np.zeros((0, 4), dtype=np.int64)).shape == (0, 4)
    assert model.item_vectors() is model.item_factors
    with pytest.raises(ValueError, match="expected 6"):
        ALSRecommender(model.hp, 6, 7, u, v)


# ---------------------------------------------------------------- one shared Spark session


@pytest.fixture(scope="class")
def spark():
    from recsys.models.als import spark as sessions

    with sessions.spark_session(sessions.settings_for()) as session:
        yield session
    assert not sessions.jvm_running()


@pytest.fixture(scope="class")
def implicit_fit(spark):
    data = planted()
    hp = parse(FAST)
    model = ALSRecommender(hp, len(data.users), len(data.items))
    reported: list = []
    result = model.fit(data, context(data, spark, reported=reported))
    return data, model, result, reported


class TestInSharedSession:
    def test_implicit_learns_planted_structure(self, implicit_fit):
        data, model, result, reported = implicit_fit
        # Random scoring ranks the held-out item in the top 10 of 100 about 10% of the time.
        assert result.metrics["HR"] > 0.6, result.metrics
        assert result.metrics["NDCG"] > 0.3, result.metrics
        assert reported == [{k: result.metrics[k] for k in ("HR", "NDCG")}]  # printed as `HR=...; NDCG=...;`
        assert {"full_recall@10", "full_ndcg@10"} <= set(result.metrics)  # the selected model's, on validation
        assert result.info["fit_seconds"] > 0 and result.info["confidence"] == "log1p"

    def test_factors_are_numpy_in_index_order(self, implicit_fit):
        data, model, _, _ = implicit_fit
        assert model.user_factors.shape == (len(data.users), 8) and model.user_factors.dtype == np.float32
        assert model.item_factors.shape == (len(data.items), 8) and model.item_factors.dtype == np.float32
        # Row i is index i: user i belongs to taste group i % 4, item j to group j % 4; each user's own group
        # must score highest on average.
        scores = model.score_all(np.arange(len(data.users)))
        group_mean = np.stack([scores[:, g::4].mean(axis=1) for g in range(4)], axis=1)
        assert (group_mean.argmax(axis=1) == np.arange(len(data.users)) % 4).mean() > 0.95

    def test_export_orders_rows_by_id_and_zero_fills_absent(self, spark):
        frame = spark.createDataFrame(
            [(3, [3.0, 30.0]), (0, [0.5, 5.0]), (1, [1.0, 10.0])], "id int, features array<float>"
        )
        out = _factors_to_numpy(frame, 5, 2)
        np.testing.assert_array_equal(out, [[0.5, 5], [1, 10], [0, 0], [3, 30], [0, 0]])
        assert out.dtype == np.float32

    def test_users_and_items_absent_from_training_get_zero_vectors(self, spark):
        data = planted(n_users=80, n_items=80)
        # One more user and item than training mentions (as when a test channel alone names them).
        grow = {"n_users": 81, "n_items": 81}
        train = Interactions(data.train.users, data.train.items, data.train.weights, None, **grow)
        test = Interactions(data.validation.users, data.validation.items, data.validation.weights, None, **grow)
        data = TrainingData(data.users, data.items, data.all, train, test)
        model = ALSRecommender(parse(FAST), 81, 81)
        model.fit(data, context(data, spark))
        assert not model.user_factors[80].any() and not model.item_factors[80].any()
        assert model.user_factors[:80].any(axis=1).all()

    def test_explicit_mode(self, spark):
        data = planted(explicit=True)
        model = ALSRecommender(parse({**FAST, "implicit_prefs": False, "reg_param": 0.05}), 240, 120)
        result = model.fit(data, context(data, spark))
        assert result.info["confidence"] == "explicit ratings"
        # Explicit ALS reconstructs ratings: liked pairs (4-5) score well above disliked ones (1-2).
        train = data.train
        pred = model.score(train.users, train.items[:, None])[:, 0]
        assert pred[train.weights >= 4].mean() > pred[train.weights <= 2].mean() + 2
        assert result.metrics["HR"] > 0.3, result.metrics

    def test_save_load_round_trip_and_score_consistency(self, implicit_fit, tmp_path):
        data, model, _, _ = implicit_fit
        assert model.save(tmp_path) == [FACTORS_FILE]
        again = ALSRecommender.load(tmp_path, model.hp, model.n_users, model.n_items)
        users = np.arange(model.n_users)
        np.testing.assert_array_equal(again.score_all(users), model.score_all(users))
        everything = np.broadcast_to(np.arange(model.n_items), (len(users), model.n_items))
        np.testing.assert_allclose(model.score(users, everything), model.score_all(users), rtol=1e-5, atol=1e-6)
        np.testing.assert_array_equal(again.item_vectors(), model.item_vectors())

    def test_checkpoint_resume_skips_spark(self, spark, tmp_path, monkeypatch):
        data = planted(n_users=120, n_items=60)
        hp = parse(FAST)
        first = ALSRecommender(hp, 120, 60)
        r1 = first.fit(data, context(data, spark, checkpoints=checkpointer(tmp_path, hp)))
        assert not r1.info["resumed_from_checkpoint"]
        assert len(list(tmp_path.glob("als-*.ckpt"))) == 1

        import recsys.models.als.model as als_module

        def no_spark(*args, **kwargs):
            raise AssertionError("a resumed fit must not touch Spark")

        monkeypatch.setattr(als_module, "train_factors", no_spark)
        second = ALSRecommender(hp, 120, 60)
        r2 = second.fit(data, context(data, checkpoints=checkpointer(tmp_path, hp)))  # no_spark: never fits
        assert r2.info["resumed_from_checkpoint"] == "select"
        np.testing.assert_array_equal(second.user_factors, first.user_factors)
        np.testing.assert_array_equal(second.item_factors, first.item_factors)
        assert r2.metrics == r1.metrics

        other = hp.replace(rank=4)
        with pytest.raises(UserError, match="rank"):
            ALSRecommender(other, 120, 60).fit(data, context(data, checkpoints=checkpointer(tmp_path, other)))

    def test_refit_fits_all_of_train_after_selecting_and_checkpoints_each_fit(self, spark, tmp_path, monkeypatch):
        import recsys.models.als.model as als_module

        data = planted(n_users=120, n_items=60)
        hp = parse(FAST)
        fitted_on: list[int] = []
        real = als_module.train_factors

        def counting(spark_, train, *args, **kwargs):
            fitted_on.append(len(train))
            return real(spark_, train, *args, **kwargs)

        monkeypatch.setattr(als_module, "train_factors", counting)
        model = ALSRecommender(hp, 120, 60)
        result = model.fit(data, context(data, spark, checkpoints=checkpointer(tmp_path, hp), refit=True))
        assert fitted_on == [len(data.train), len(data.all)]  # selection on train, then the refit on everything
        assert result.refit["interactions"] == len(data.all) and set(result.info["phases"]) == {
            "select_seconds",
            "refit_seconds",
        }
        phases = sorted(json.loads(p.read_text())["phase"] for p in tmp_path.glob("als-*.json"))
        assert phases == ["refit", "select"]
        # The validation metrics are the selected (pre-refit) model's: a refit model has seen validation.
        selected = ALSRecommender(hp, 120, 60)
        selected.fit(data, context(data, spark))
        assert result.metrics["HR"] == context(data).evaluator.sampled(selected)["HR"]

        # Resumed after both fits: nothing is fitted again, the shipped factors and the metrics come back.
        fitted_on.clear()
        again = ALSRecommender(hp, 120, 60)
        resumed = again.fit(data, context(data, checkpoints=checkpointer(tmp_path, hp), refit=True))
        assert fitted_on == [] and resumed.metrics == result.metrics and resumed.refit["resumed_from_checkpoint"]
        np.testing.assert_array_equal(again.user_factors, model.user_factors)

        # Resumed after the selection fit only (the job stopped during the refit): only the refit runs.
        for path in tmp_path.glob("als-*step000002.*"):
            path.unlink()
        third = ALSRecommender(hp, 120, 60)
        resumed = third.fit(data, context(data, spark, checkpoints=checkpointer(tmp_path, hp), refit=True))
        assert fitted_on == [len(data.all)] and resumed.info["resumed_from_checkpoint"] == "select"
        assert resumed.metrics == result.metrics

    def test_train_end_to_end_on_the_fixture(self, spark, opt_ml, capsys):
        # `train` trains in the session already running in the process (as in a notebook) and leaves it running.
        code = train_in(opt_ml, {"algorithm": "als", "preset": "online_retail", "max_iter": 5})
        assert code == 0, (opt_ml / "output/failure").read_text()
        manifest = json.loads((opt_ml / "model/manifest.json").read_text())
        assert manifest["algorithm"] == "als" and FACTORS_FILE in manifest["files"]
        assert (opt_ml / "model" / FACTORS_FILE).is_file()
        out = capsys.readouterr().out
        assert "HR=" in out and "NDCG=" in out
        # Quality is checked on planted data above and on ml-100k by benchmarks/als_movielens.py: the 300-user
        # fixture is too sparse for a stable bar (random ≈ 0.10, item popularity 0.18, ALS 0.12-0.16).
        assert 0.0 <= manifest["metrics"]["validation"]["HR"] <= 1.0
        assert spark.sparkContext._jsc is not None  # not stopped by train


# ---------------------------------------------------------------- own session, as `train` runs it


def _java_children() -> list[int]:
    me, found = str(os.getpid()), []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
            if fields[1] == me and "java" in (stat.parent / "cmdline").read_bytes().decode(errors="replace"):
                found.append(int(stat.parent.name))
        except OSError:
            continue
    return found


def test_sigterm_during_fit_stops_promptly_and_leaves_no_spark(monkeypatch):
    from pyspark.ml.recommendation import ALS

    from recsys.models.als import spark as sessions

    data = planted(n_users=600, n_items=300, per_user=40)
    hp = parse({**FAST, "rank": 32, "max_iter": 300})  # a fit far longer than the test waits
    sent: dict[str, float] = {}
    real_fit = ALS._fit

    def signal_during_fit(self, dataset):  # SIGTERM 1 s into Spark's ALS fit (the JVM is busy by then)
        def fire():
            sent["at"] = time.perf_counter()
            os.kill(os.getpid(), signal.SIGTERM)

        threading.Timer(1.0, fire).start()
        return real_fit(self, dataset)

    monkeypatch.setattr(ALS, "_fit", signal_during_fit)
    previous = signal.getsignal(signal.SIGTERM)
    stop = StopController().install()
    try:
        with pytest.raises(TrainingStopped, match="SIGTERM"):
            ALSRecommender(hp, 600, 300).fit(data, context(data, stop=stop))
        stopped_after = time.perf_counter() - sent["at"]  # includes stopping Spark and ending the JVM
    finally:
        signal.signal(signal.SIGTERM, previous)
    print(f"TrainingStopped {stopped_after:.2f} s after SIGTERM, Spark and its JVM gone")
    assert stopped_after < 10, f"took {stopped_after:.1f} s to stop"
    assert not sessions.jvm_running() and sessions.active_session() is None
    assert _java_children() == []
