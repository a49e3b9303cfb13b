"""NCF (GMF / MLP / NeuMF): learning, sampling, determinism, persistence, the fast scoring path, checkpoints and
SIGTERM, distributed training on CPU, and the `train` entry point end to end. Tiny synthetic data keeps it fast."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from helpers.opt_ml import train_in
from recsys.data.ids import IdIndex
from recsys.data.interactions import Interactions
from recsys.models import recommender_class
from recsys.models.base import FitContext
from recsys.models.ncf.config import TrainConfig
from recsys.models.ncf.model import THREADS_KEY, WORLD_SIZE_KEY, NCFRecommender
from recsys.models.ncf.net import FastScorer, NCFNet
from recsys.models.ncf.sampler import NegativeSampler, recency_fractions, recency_weights
from recsys.platform.checkpoints import Checkpointer
from recsys.platform.errors import TrainingStopped, UserError
from recsys.platform.lifecycle import StopController
from recsys.platform.resources import ResourceConfig
from recsys.training.evaluation import Evaluator
from recsys.training.hyperparameters import parse
from recsys.training.roles import TrainingData, leave_one_out

N_USERS, N_ITEMS, GROUPS, PER_USER = 120, 80, 4, 12
EVAL_NEGATIVES = 49  # random HR@10 = 10 / 50 = 0.2
FAST = {"epochs": 4, "lr": 0.03, "batch_size": 256, "factor_num": 8, "num_layers": 2, "num_negatives": 4, "seed": 7}


def planted(seed: int = 0) -> TrainingData:
    """Users fall into GROUPS taste groups; each interacts only with items of its group (items i % GROUPS)."""
    rng = np.random.default_rng(seed)
    group = rng.integers(0, GROUPS, N_USERS)
    users, items = [], []
    for user in range(N_USERS):
        pool = np.arange(group[user], N_ITEMS, GROUPS)
        chosen = rng.choice(pool, PER_USER, replace=False)
        users += [user] * PER_USER
        items += list(chosen)
    everything = Interactions(
        np.array(users), np.array(items), np.ones(len(users)), rng.random(len(users)), N_USERS, N_ITEMS
    )
    train, test = leave_one_out(everything, seed)
    ids = lambda n: IdIndex(np.arange(n).astype(str))  # noqa: E731
    return TrainingData(ids(N_USERS), ids(N_ITEMS), everything, train, test)


@pytest.fixture(scope="module")
def data() -> TrainingData:
    return planted()


def hp_for(**overrides):
    return parse({"algorithm": "ncf", **FAST, **overrides})


def context(data, stop=None, checkpoints=None, reports=None, **extra) -> FitContext:
    evaluator = Evaluator(data.train, data.validation, 10, EVAL_NEGATIVES, 42, known=data.all)

    def report(metrics, **prefix):
        if reports is not None:
            reports.append({**prefix, **metrics})

    return FitContext(
        evaluator=evaluator,
        stop=stop or StopController(),
        resources=ResourceConfig(),
        checkpoints=checkpoints,
        report_metrics=report,
        extra={THREADS_KEY: 1, **extra},
    )


def fit(data, ctx=None, **overrides):
    hp = hp_for(**overrides)
    model = NCFRecommender(hp, N_USERS, N_ITEMS, device="cpu")
    result = model.fit(data, ctx or context(data))
    return model, result


def comparable(history):
    """History rows without the timings."""
    return [{k: v for k, v in row.items() if "second" not in k} for row in history]


def checkpointer(directory: Path, hp) -> Checkpointer:
    fingerprint = {k: v for k, v in hp.for_algorithm().items() if k not in ("device", "early_stopping_patience")}
    return Checkpointer(directory, "ncf", fingerprint)


# -- learning


@pytest.mark.parametrize("model_type", ["gmf", "mlp", "neumf"])
def test_each_model_type_learns_the_planted_structure(data, model_type):
    reports: list[dict] = []
    model, result = fit(data, context(data, reports=reports), model_type=model_type, epochs=6)
    assert result.metrics["HR"] > 0.6, result.history  # random: 0.2
    assert [r["epoch"] for r in reports] == list(range(1, len(reports) + 1))
    assert {"Loss", "HR", "NDCG"} <= set(reports[0])
    assert result.history[-1]["Loss"] < result.history[0]["Loss"]
    assert result.info["device"] == "cpu" and result.info["samples_per_second"] > 0
    assert result.info["epochs_run"] == len(result.history)
    best = max(result.history, key=lambda row: (row["HR"], row["NDCG"]))
    assert result.metrics["best_epoch"] == best["epoch"]
    assert result.metrics["HR"] == best["HR"]
    # the restored weights are the best epoch's: evaluating again gives its metrics
    assert context(data).evaluator.sampled(model) == {"HR": best["HR"], "NDCG": best["NDCG"]}


def test_pretrained_neumf_trains_gmf_then_mlp_then_neumf(data):
    model, result = fit(data, model_type="neumf", pretrain=True, epochs=3)
    stages = [row["stage"] for row in result.history]
    assert stages == ["gmf"] * 3 + ["mlp"] * 3 + ["neumf"] * 3
    assert set(result.info["stages"]) == {"gmf", "mlp", "neumf"}
    assert result.metrics["HR"] > 0.6
    assert model.net.model_type == "neumf"


def test_pretrained_initialization_reproduces_the_average_of_gmf_and_mlp():
    torch.manual_seed(0)
    gmf, mlp = NCFNet(10, 12, 4, 2, 0.0, "gmf"), NCFNet(10, 12, 4, 2, 0.0, "mlp")
    neumf = NCFNet(10, 12, 4, 2, 0.0, "neumf")
    neumf.load_pretrained(gmf, mlp)
    users, items = torch.arange(10).repeat(12), torch.arange(12).repeat_interleave(10)
    with torch.no_grad():
        expected = 0.5 * gmf(users, items) + 0.5 * mlp(users, items)
        torch.testing.assert_close(neumf(users, items), expected)


def test_early_stopping_stops_after_patience_epochs_without_improvement(data):
    # lr so small nothing improves after the first epoch's (random) ranking.
    _, result = fit(data, epochs=30, lr=1e-7, early_stopping_patience=2)
    assert result.info["epochs_run"] < 30
    best = result.metrics["best_epoch"]
    assert result.info["epochs_run"] == best + 2


def test_default_batch_size_shrinks_for_small_epochs_and_grows_for_large_ones_but_an_explicit_one_holds():
    def batch(samples_per_epoch: int, auto: bool = True, batch_size: int = 4096) -> int:
        cfg = TrainConfig("neumf", 8, 1, 0.0, 1, 0.01, batch_size, 4, 0.0, "adam", 0, 0, auto_batch=auto)
        return cfg.effective_batch_size(samples_per_epoch)

    assert batch(3_000) == 256  # never below 256
    assert batch(64 * 1000) == 1000  # at least 64 steps
    assert batch(890_000) == 4096  # MovieLens-100K: the default as it is
    assert batch(6_000_000) == 8192  # 732 steps of 8192; 16384 would leave 366 < 512
    assert batch(16_400_000) == 16384 and batch(500_000_000) == 16384  # capped
    assert batch(3_000, auto=False) == 4096 and batch(500_000_000, auto=False, batch_size=1024) == 1024


# -- negative sampling


def test_sampler_never_returns_a_positive_even_for_users_who_saw_almost_everything():
    n_users, n_items = 6, 40
    rng = np.random.default_rng(0)
    seen = {
        0: np.arange(39),
        1: np.arange(1, 40),
        2: rng.choice(40, 35, replace=False),
        3: np.array([5]),
        4: np.arange(40),
        5: np.array([0, 39]),
    }  # user 4 saw everything: no negatives possible
    users = np.concatenate([[u] * len(s) for u, s in seen.items()])
    items = np.concatenate(list(seen.values()))
    sampler = NegativeSampler(users, items, n_users, n_items, torch.device("cpu"))
    neg_users = sampler.negative_users(5)
    assert 4 not in set(neg_users.tolist())
    generator = torch.Generator().manual_seed(0)
    draw_users = torch.tensor([0, 1, 2, 3, 5]).repeat(20_000)
    drawn = sampler.sample(draw_users, generator)
    assert not sampler.is_positive(draw_users, drawn).any()
    assert int(drawn.min()) >= 0 and int(drawn.max()) < n_items
    assert set(drawn[draw_users == 0].tolist()) == {39}
    assert set(drawn[draw_users == 1].tolist()) == {0}
    # uniform over each user's unseen items
    counts = np.bincount(drawn[draw_users == 3].numpy(), minlength=n_items)
    assert counts[5] == 0
    unseen = np.delete(counts, 5)
    assert unseen.min() > 0.6 * unseen.mean() and unseen.max() < 1.4 * unseen.mean()
    # an epoch: all positives (label 1) plus the negatives (label 0), shuffled
    u, i, y, w = sampler.epoch(neg_users, generator)
    assert w is None  # no recency weights given
    assert len(u) == sampler.n_positives + len(neg_users) and int(y.sum()) == sampler.n_positives
    assert bool((sampler.is_positive(u, i) == (y == 1)).all())


def test_negatives_are_drawn_afresh_every_epoch(data, monkeypatch):
    drawn: list[torch.Tensor] = []
    original = NegativeSampler.epoch

    def recording(self, neg_users, generator):
        users, items, labels, weights = original(self, neg_users, generator)
        drawn.append(torch.stack([users, items, labels.long()]))
        return users, items, labels, weights

    monkeypatch.setattr(NegativeSampler, "epoch", recording)
    fit(data, epochs=3)
    assert len(drawn) == 3
    keys = [set((t[0] * N_ITEMS + t[1])[t[2] == 0].tolist()) for t in drawn]
    assert keys[0] != keys[1] and keys[1] != keys[2]
    positives = [set((t[0] * N_ITEMS + t[1])[t[2] == 1].tolist()) for t in drawn]
    assert positives[0] == positives[1] == positives[2]


def test_recency_fractions_order_each_users_history_by_time_with_ties_sharing_the_later_place():
    users = np.array([0, 0, 0, 0, 1, 2, 2])
    times = np.array([30.0, 10.0, 20.0, 20.0, 5.0, 7.0, 7.0])
    # user 0: 10 → 0, the two 20s → place 2 of 0..3 (2/3), 30 → 1; user 1's only row → 1; user 2: a tie → both 1
    np.testing.assert_allclose(recency_fractions(users, times), [1.0, 0.0, 2 / 3, 2 / 3, 1.0, 1.0, 1.0])
    np.testing.assert_allclose(recency_weights(users, times, 10.0, 1.0), 1 + 10 * recency_fractions(users, times))
    assert recency_weights(users, None, 10.0, 8.0) is None and recency_weights(users, times, 0.0, 8.0) is None


def test_recency_weights_reach_the_positives_and_only_them():
    users, items = np.array([0, 0, 1, 1, 1]), np.array([0, 1, 0, 2, 2])
    # (1, 2) appears twice: it keeps its larger weight
    sampler = NegativeSampler(users, items, 2, 6, torch.device("cpu"), np.array([1.0, 3.0, 2.0, 4.0, 5.0]))
    generator = torch.Generator().manual_seed(0)
    u, i, y, w = sampler.epoch(sampler.negative_users(2), generator)
    expected = {0 * 6 + 0: 1.0, 0 * 6 + 1: 3.0, 1 * 6 + 0: 2.0, 1 * 6 + 2: 5.0}
    for user, item, label, weight in zip(u.tolist(), i.tolist(), y.tolist(), w.tolist()):
        assert weight == (expected[user * 6 + item] if label == 1 else 1.0)


def test_recency_weight_changes_training_and_zero_means_plain_ncf(data):
    plain, _ = fit(data, epochs=2, recency_weight=0)
    weighted, _ = fit(data, epochs=2, recency_weight=10)
    users = np.arange(N_USERS)
    assert not np.allclose(plain.score_all(users), weighted.score_all(users))


def test_sampler_is_vectorized_the_same_few_tensor_ops_for_any_number_of_draws():
    from torch.utils._python_dispatch import TorchDispatchMode

    class CountOps(TorchDispatchMode):
        def __init__(self):
            super().__init__()
            self.count = 0

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            self.count += 1
            return func(*args, **(kwargs or {}))

    users = np.repeat(np.arange(50), 30)
    items = np.random.default_rng(0).integers(0, 40, len(users))
    sampler = NegativeSampler(users, items, 50, 40, torch.device("cpu"))
    counts = []
    for n in (10, 200_000):
        draw_users = torch.randint(0, 50, (n,))
        generator = torch.Generator().manual_seed(1)
        with CountOps() as counter:
            sampler.sample(draw_users, generator)
        counts.append(counter.count)
    assert counts[0] == counts[1] <= 16, counts


# -- determinism, persistence, scoring


def test_same_seed_gives_identical_metrics_and_weights(data):
    a, result_a = fit(data, model_type="neumf", dropout=0.1)
    b, result_b = fit(data, model_type="neumf", dropout=0.1)
    assert comparable(result_a.history) == comparable(result_b.history)
    for (name, x), (_, y) in zip(a.net.state_dict().items(), b.net.state_dict().items(), strict=True):
        assert torch.equal(x, y), name
    _, result_c = fit(data, model_type="neumf", dropout=0.1, seed=8)
    assert comparable(result_c.history) != comparable(result_a.history)


@pytest.fixture(scope="module")
def trained(data):
    return {mt: fit(data, model_type=mt, dropout=0.2, epochs=2)[0] for mt in ("gmf", "mlp", "neumf")}


@pytest.mark.parametrize("model_type", ["gmf", "mlp", "neumf"])
def test_fast_path_equals_the_plain_forward(trained, model_type):
    model = trained[model_type]
    users = np.arange(N_USERS)
    everything = np.broadcast_to(np.arange(N_ITEMS), (N_USERS, N_ITEMS))
    reference = model.forward_scores(users, everything)
    np.testing.assert_allclose(model.score_all(users), reference, rtol=1e-5, atol=1e-5)
    one_at_a_time = np.concatenate([model.score_all(users[i : i + 1]) for i in range(N_USERS)])  # score_user
    assert one_at_a_time.dtype == np.float32 and one_at_a_time.shape == (N_USERS, N_ITEMS)
    np.testing.assert_allclose(one_at_a_time, reference, rtol=1e-5, atol=1e-5)
    picked = np.random.default_rng(1).integers(0, N_ITEMS, (N_USERS, 7))
    np.testing.assert_allclose(model.score(users, picked), model.forward_scores(users, picked), rtol=1e-5, atol=1e-5)
    assert model.score(users, picked).dtype == np.float32


def _best_first_scores(scores: np.ndarray, banned: np.ndarray, k: int) -> np.ndarray:
    """The ``k`` best scores once banned items and NaNs are dropped, best first (the reference for top_k_one)."""
    kept = np.delete(scores, np.unique(banned))
    kept = kept[~np.isnan(kept)]
    return np.sort(kept)[::-1][:k]


@pytest.mark.parametrize("model_type", ["gmf", "mlp", "neumf"])
@pytest.mark.parametrize("num_layers", [1, 3])
def test_compiled_single_user_top_k_ranks_score_user(model_type, num_layers):
    """FastScorer.top_k_one (recsys.models.kernels) = score_user's row ranked: banned items (repeats allowed) and
    NaN scores dropped, best first, k larger than the catalog; every tower depth and model type."""
    torch.manual_seed(num_layers)
    net = NCFNet(N_USERS, N_ITEMS, factor_num=8, num_layers=num_layers, dropout=0.0, model_type=model_type)
    with torch.no_grad():
        for parameter in net.parameters():
            parameter.normal_(0.0, 0.5)  # spread scores (N(0, 0.01) tables score every item alike)
        if model_type != "mlp":
            net.embed_item_gmf.weight[5] = float("nan")
        else:
            net.embed_item_mlp.weight[5] = float("nan")
    scorer = FastScorer(net.eval())
    rng = np.random.default_rng(num_layers)
    for user in range(0, N_USERS, 9):
        scores = scorer.score_user(user)
        assert np.isnan(scores[5])
        banned = rng.integers(0, N_ITEMS, rng.integers(0, 30)).astype(np.int64)
        for k in (1, 10, N_ITEMS + 3):
            items, values = scorer.top_k_one(user, k, banned)
            expected = _best_first_scores(scores, banned, k)
            assert items.dtype == np.int64 and values.dtype == np.float32 and len(items) == len(expected)
            assert not set(items.tolist()) & (set(banned.tolist()) | {5})
            np.testing.assert_allclose(values, expected, rtol=1e-5, atol=1e-5)
            np.testing.assert_allclose(values, scores[items], rtol=1e-5, atol=1e-5)
    everything = np.arange(N_ITEMS, dtype=np.int64)
    items, values = scorer.top_k_one(0, 10, everything)
    assert len(items) == len(values) == 0


def test_fast_path_chunks_agree(monkeypatch, trained):
    import recsys.models.ncf.net as ncf_net

    model = trained["neumf"]
    users = np.arange(N_USERS)
    whole = model.score_all(users)
    monkeypatch.setattr(ncf_net, "_PAIRS_PER_CHUNK", N_ITEMS * 3)  # 3 users per chunk
    model._scorer = None
    np.testing.assert_allclose(model.score_all(users), whole, rtol=1e-6, atol=1e-6)
    monkeypatch.setattr(ncf_net, "_PAIRS_PER_CHUNK", 24)  # single users: items in column chunks of 24 (4 chunks)
    model._scorer = None
    alone = np.concatenate([model.score_all(users[i : i + 1]) for i in range(N_USERS)])
    np.testing.assert_allclose(alone, whole, rtol=1e-5, atol=1e-5)


def test_score_and_score_all_agree_and_handle_empty_input(trained):
    model = trained["neumf"]
    users = np.array([5, 0, 5, 119])
    everything = np.broadcast_to(np.arange(N_ITEMS), (len(users), N_ITEMS))
    np.testing.assert_allclose(model.score(users, everything), model.score_all(users), rtol=1e-5, atol=1e-6)
    assert model.score(np.array([], dtype=np.int64), np.zeros((0, 3), dtype=np.int64)).shape == (0, 3)
    assert model.score_all(np.array([], dtype=np.int64)).shape == (0, N_ITEMS)


def test_fast_path_follows_weight_changes(trained):
    model = trained["gmf"]
    before = model.score_all(np.array([1]))
    with torch.no_grad():
        model.net.predict.bias += 1.0
    np.testing.assert_allclose(model.score_all(np.array([1])), before + 1.0, rtol=1e-5, atol=1e-5)
    with torch.no_grad():
        model.net.predict.bias -= 1.0


def test_save_load_round_trip_gives_identical_scores(trained, tmp_path):
    for model_type, model in trained.items():
        directory = tmp_path / model_type
        directory.mkdir()
        assert model.save(directory) == ["ncf.pt"]
        again = recommender_class("ncf").load(directory, model.hp, N_USERS, N_ITEMS)
        assert again.device.type == ("cuda" if torch.cuda.is_available() else "cpu")
        again = NCFRecommender.load(directory, model.hp, N_USERS, N_ITEMS, device="cpu")
        users = np.arange(N_USERS)
        assert np.array_equal(again.score_all(users), model.score_all(users))
        assert np.array_equal(again.item_vectors(), model.item_vectors())
        with pytest.raises(ValueError, match="trained for"):
            NCFRecommender.load(directory, model.hp, N_USERS + 1, N_ITEMS, device="cpu")


def test_item_vectors(trained):
    vectors = trained["neumf"].item_vectors()
    assert vectors.dtype == np.float32 and vectors.shape == (N_ITEMS, 8 + 8 * 2)
    assert trained["gmf"].item_vectors().shape == (N_ITEMS, 8)


def test_fast_scorer_is_independent_of_batch_composition(trained):
    scorer = FastScorer(trained["mlp"].net)
    alone = scorer.score(torch.tensor([3]), torch.tensor([[1, 2, 3]]))
    together = scorer.score(torch.tensor([0, 3]), torch.tensor([[9, 8, 7], [1, 2, 3]]))[1:]
    torch.testing.assert_close(alone, together)


# -- checkpoints and SIGTERM


class StopAfter(StopController):
    """Behaves as if SIGTERM arrived after ``checks`` calls of ``requested`` (one per training batch)."""

    def __init__(self, checks: int):
        super().__init__()
        self.left = checks

    @property
    def requested(self) -> bool:
        self.left -= 1
        if self.left < 0:
            self.request()
        return super().requested


@pytest.mark.parametrize("pretrain", [False, True])
def test_sigterm_mid_epoch_saves_a_checkpoint_and_resume_matches_an_uninterrupted_run(data, tmp_path, pretrain):
    overrides = {"model_type": "neumf", "dropout": 0.1, "epochs": 3, "pretrain": pretrain}
    hp = hp_for(**overrides)
    full_model, full = fit(data, context(data, checkpoints=checkpointer(tmp_path / "a", hp)), **overrides)
    steps_per_epoch = -(-(len(data.train) * 5) // FAST["batch_size"])
    stop_at = steps_per_epoch * (4 if pretrain else 1) + steps_per_epoch // 2  # in the middle of an epoch
    ckpt = checkpointer(tmp_path / "b", hp)
    with pytest.raises(TrainingStopped):
        fit(data, context(data, stop=StopAfter(stop_at), checkpoints=ckpt), **overrides)
    path, meta = ckpt.latest()
    assert meta["batch"] not in (None, 0) and meta["stage"] == ("mlp" if pretrain else "neumf")
    reports: list[dict] = []
    resumed_model, resumed = fit(data, context(data, checkpoints=ckpt, reports=reports), **overrides)
    assert resumed.info["resumed_from"] == path.name
    assert reports[0]["epoch"] == meta["epoch"]  # continues in the interrupted epoch, not from scratch
    assert comparable(resumed.history) == comparable(full.history)
    assert resumed.metrics == full.metrics
    users = np.arange(N_USERS)
    assert np.array_equal(resumed_model.score_all(users), full_model.score_all(users))


def test_resume_after_a_completed_epoch_continues_with_the_next_epoch(data, tmp_path):
    hp = hp_for(epochs=3)
    ckpt = checkpointer(tmp_path, hp)
    stop = StopController()
    reports: list[dict] = []

    def report_then_stop(metrics, **prefix):
        reports.append(prefix)
        if prefix["epoch"] == 1:
            stop.request()  # SIGTERM right after epoch 1's evaluation

    ctx = context(data, stop=stop, checkpoints=ckpt)
    ctx.report_metrics = report_then_stop
    with pytest.raises(TrainingStopped):
        fit(data, ctx, epochs=3)
    assert [r["epoch"] for r in reports] == [1]
    again: list[dict] = []
    _, result = fit(data, context(data, checkpoints=ckpt, reports=again), epochs=3)
    assert [r["epoch"] for r in again] == [2, 3]
    assert [row["epoch"] for row in result.history] == [1, 2, 3]


def test_checkpoint_from_another_configuration_is_refused(data, tmp_path):
    hp = hp_for(epochs=1)
    fit(data, context(data, checkpoints=checkpointer(tmp_path, hp)), epochs=1)
    other = checkpointer(tmp_path, hp_for(epochs=1, factor_num=16))
    with pytest.raises(UserError, match="factor_num"):
        fit(data, context(data, checkpoints=other), epochs=1, factor_num=16)


def test_stop_before_training_raises_and_leaves_a_checkpoint(data, tmp_path):
    hp = hp_for()
    ckpt = checkpointer(tmp_path, hp)
    stop = StopController()
    stop.request()
    with pytest.raises(TrainingStopped):
        fit(data, context(data, stop=stop, checkpoints=ckpt))
    _, meta = ckpt.latest()
    assert meta["epoch"] == 1 and meta["batch"] == 0


# -- distributed (two CPU processes over gloo)


def test_distributed_data_parallel_on_cpu_with_gloo(data):
    _, single = fit(data, model_type="neumf", epochs=3)
    started = time.perf_counter()
    model, result = fit(data, context(data, **{WORLD_SIZE_KEY: 2}), model_type="neumf", epochs=3)
    assert result.info["world_size"] == 2
    assert time.perf_counter() - started < 60
    # Two half-batches averaged by DDP = the same optimizer steps as one process, up to float rounding.
    for a, b in zip(result.history, single.history, strict=True):
        assert a["Loss"] == pytest.approx(b["Loss"], rel=1e-3)
    assert result.metrics["HR"] == pytest.approx(single.metrics["HR"], abs=0.05)


def test_sigterm_under_ddp_checkpoints_on_rank_0_and_resume_matches(data, tmp_path, monkeypatch):
    """Two ranks agree on SIGTERM only at rank 0's periodic checks (no per-step round trip): rank 0 checkpoints where
    they stopped, every rank leaves, and a resumed two-rank fit ends where an uninterrupted one does."""
    from recsys.models.ncf import trainer

    overrides = {"model_type": "neumf", "epochs": 2}
    hp = hp_for(**overrides)
    two = {WORLD_SIZE_KEY: 2}
    _, full = fit(data, context(data, checkpoints=checkpointer(tmp_path / "a", hp), **two), **overrides)
    # Rank 0 sizes the interval and sends it with each check: 0 s makes every step a check, so the stop lands at a
    # known step on any machine.
    monkeypatch.setattr(trainer, "STOP_CHECK_S", 0.0)
    steps_per_epoch = -(-(len(data.train) * 5) // FAST["batch_size"])
    ckpt = checkpointer(tmp_path / "b", hp)
    with pytest.raises(TrainingStopped):
        fit(data, context(data, stop=StopAfter(steps_per_epoch // 2), checkpoints=ckpt, **two), **overrides)
    _, meta = ckpt.latest()
    assert meta["epoch"] == 1 and meta["batch"] == steps_per_epoch // 2, (meta, steps_per_epoch)
    monkeypatch.undo()
    _, resumed = fit(data, context(data, checkpoints=ckpt, **two), **overrides)
    assert [r["epoch"] for r in resumed.history] == [r["epoch"] for r in full.history], (resumed.history, full.history)
    for a, b in zip(resumed.history, full.history, strict=True):
        assert a["Loss"] == pytest.approx(b["Loss"], rel=1e-6) and a["HR"] == b["HR"], (resumed.history, full.history)


# -- the `train` entry point


def test_train_end_to_end_on_the_fixture(opt_ml, capsys):
    code = train_in(opt_ml, {"algorithm": "ncf", "preset": "online_retail", "epochs": 3})
    assert code == 0, (opt_ml / "output/failure").read_text()
    manifest = json.loads((opt_ml / "model/manifest.json").read_text())
    assert manifest["algorithm"] == "ncf" and "ncf.pt" in manifest["files"]
    # Quality is gated on MovieLens-100K (below): on the 300-user fixture NCF and item popularity are within noise.
    validation = manifest["metrics"]["validation"]
    assert 0.0 <= validation["HR"] <= 1.0 and validation["best_epoch"] in (1, 2, 3)
    assert "test" not in manifest["metrics"]
    out = capsys.readouterr().out
    for pattern in (r"HR=(.*?);", r"NDCG=(.*?);", r"Loss=(.*?);"):
        values = re.findall(pattern, out)
        assert len(values) >= 3 and all(float(v) >= 0 for v in values)
    assert re.search(r"epoch=1; Loss=[0-9.]+; HR=[0-9.]+; NDCG=[0-9.]+;", out)


def test_train_resumes_from_opt_ml_checkpoints(opt_ml, capsys):
    (opt_ml / "checkpoints").mkdir()
    assert train_in(opt_ml, {"algorithm": "ncf", "preset": "online_retail", "epochs": 2}) == 0
    assert list((opt_ml / "checkpoints").glob("ncf-*.ckpt"))
    capsys.readouterr()
    assert train_in(opt_ml, {"algorithm": "ncf", "preset": "online_retail", "epochs": 2}) == 0
    # Nothing left to train: both epochs (and the refit) were checkpointed; no per-epoch line is printed again.
    assert not re.search(r"(?m)^epoch=", capsys.readouterr().out)
