"""recsys.serving.ranking against a hand-built dot-product model, checked against brute force."""

import numpy as np
import pytest

from helpers.serving import random_model, small_model
from recsys.serving.ranking import Filters, Ranker


@pytest.fixture(scope="module")
def model():
    return random_model(n_users=40, n_items=120, dim=6, seed=3)


@pytest.fixture(scope="module")
def ranker(model):
    return Ranker(model)


def brute_top_k(model, user, k, banned=()):
    scores = model.recommender.score_all(np.array([user]))[0].astype(np.float64)
    for item in set(banned):
        scores[item] = -np.inf
    order = [i for i in np.argsort(-scores, kind="stable") if np.isfinite(scores[i])]
    return order[:k]


def test_top_k_matches_brute_force_and_excludes_seen(model, ranker):
    users = np.arange(model.recommender.n_users)
    for user, ranked in zip(users, ranker.top_k(users, 7)):
        expected = brute_top_k(model, user, 7, banned=model.seen_items(user))
        assert ranked.items.tolist() == expected
        assert not set(ranked.items) & set(model.seen_items(user).tolist())
        assert np.all(np.diff(ranked.scores) <= 0) and not ranked.cold_start


def test_exclude_seen_false_can_return_seen_items(model, ranker):
    user = int(np.argmax(np.diff(model.seen_indptr)))
    (ranked,) = ranker.top_k(np.array([user]), model.recommender.n_items, Filters(exclude_seen=False))
    assert len(ranked.items) == model.recommender.n_items
    assert set(model.seen_items(user).tolist()) <= set(ranked.items.tolist())


def test_blocks_give_the_same_answer(model):
    users = np.arange(model.recommender.n_users)
    whole = Ranker(model).top_k(users, 5)
    tiny = Ranker(model, block_cells=model.recommender.n_items * 3).top_k(users, 5)  # 3 users per block
    for a, b in zip(whole, tiny):
        assert a.items.tolist() == b.items.tolist()


def test_exclude_include_and_exclude_popular(model, ranker):
    user = 5
    top = ranker.top_k(np.array([user]), 10)[0].items
    exclude = top[:3]
    popular = ranker.by_popularity[:4]
    include = np.array([popular[0], *model.seen_items(user)[:1]])
    (ranked,) = ranker.top_k(np.array([user]), 10, Filters(exclude=exclude, exclude_popular=4, include=include))
    banned = set(exclude.tolist()) | (set(popular.tolist()) - set(include.tolist()))
    banned |= set(model.seen_items(user).tolist()) - set(include.tolist())
    assert ranked.items.tolist() == brute_top_k(model, user, 10, banned)


def test_exclude_wins_over_include(ranker):
    (ranked,) = ranker.top_k(np.array([0]), 120, Filters(include=np.array([7]), exclude=np.array([7])))
    assert 7 not in ranked.items


def test_candidates_restrict_and_include_extends(model, ranker):
    candidates = np.array([3, 9, 27, 81])
    (ranked,) = ranker.top_k(
        np.array([1]), 10, Filters(candidates=candidates, include=np.array([100]), exclude_seen=False)
    )
    assert sorted(ranked.items.tolist()) == [3, 9, 27, 81, 100]
    scores = model.recommender.score_all(np.array([1]))[0]
    assert ranked.items.tolist() == sorted([3, 9, 27, 81, 100], key=lambda i: -scores[i])
    np.testing.assert_allclose(ranked.scores, scores[ranked.items], rtol=1e-5)


def test_fewer_allowed_items_than_k(ranker):
    (ranked,) = ranker.top_k(
        np.array([2]), 10, Filters(candidates=np.array([1, 2]), exclude=np.array([2]), exclude_seen=False)
    )
    assert ranked.items.tolist() == [1]


def test_cold_start_ranks_by_popularity_with_filters(model, ranker):
    out = ranker.top_k(np.array([-1, 0, -1]), 5, Filters(exclude=ranker.by_popularity[:1]))
    assert out[0].cold_start and out[2].cold_start and not out[1].cold_start
    assert out[0].items.tolist() == ranker.by_popularity[1:6].tolist()
    np.testing.assert_array_equal(out[0].scores, model.popularity[out[0].items])


def test_rank_pairs(model, ranker):
    users = np.array([0, 0, 3, -1, 2])
    items = np.array([5, 6, 7, 8, -1])
    scores = ranker.rank_pairs(users, items)
    assert scores[0] == pytest.approx(model.recommender.score(np.array([0]), np.array([[5]]))[0, 0], rel=1e-5)
    assert scores[3] == model.popularity[8]  # cold user: popularity
    assert scores[4] == -np.inf  # unknown item


def test_similar_items_is_cosine_and_never_the_item_itself(model, ranker):
    v = model.recommender.item_vectors().astype(np.float64)
    v /= np.linalg.norm(v, axis=1, keepdims=True)
    out = ranker.similar(np.array([4, -1, 10]), 6, Filters(exclude=np.array([11])))
    sims = v[4] @ v.T
    sims[[4, 11]] = -np.inf
    assert out[0].items.tolist() == np.argsort(-sims)[:6].tolist()
    assert 4 not in out[0].items and 10 not in out[2].items and 11 not in out[2].items
    assert out[1].cold_start and out[1].items.tolist() == [i for i in ranker.by_popularity if i != 11][:6]


def test_similar_with_candidates(ranker):
    (ranked,) = ranker.similar(np.array([4]), 3, Filters(candidates=np.array([4, 5, 6, 7])))
    assert sorted(ranked.items.tolist()) != [] and set(ranked.items.tolist()) <= {5, 6, 7}


def test_users_without_history_and_zero_vectors():
    model = small_model([[1, 0], [0, 1]], [[1, 0], [0, 0], [0, 2]], seen=[[], [2]])
    ranker = Ranker(model)
    a, b = ranker.top_k(np.array([0, 1]), 3)
    assert a.items.tolist()[0] == 0 and len(a.items) == 3
    assert 2 not in b.items
    (similar,) = ranker.similar(np.array([1]), 2)  # a zero vector: similarity 0 to everything, still answered
    assert len(similar.items) == 2


def test_a_thousand_users_in_one_call_answer_as_one_at_a_time(ranker):
    """The batched path (one scoring pass for many users, repeats and cold-start users mixed in) gives each user the
    answer a single-user call gives. Its speed is benchmarks/serve_load.py's figure (1,000 users' top-10 per request),
    not a unit-test bound: wall-clock limits here fail on a busy machine."""
    users = np.random.default_rng(0).integers(-1, 40, size=1000)  # -1: unknown user (cold start)
    out = ranker.top_k(users, 10)
    assert len(out) == 1000
    single = {int(u): ranker.top_k(np.array([u]), 10)[0] for u in set(users.tolist())}
    assert single[-1].cold_start and not single[0].cold_start
    for user, ranked in zip(users.tolist(), out):
        assert ranked.items.tolist() == single[user].items.tolist() and ranked.cold_start == single[user].cold_start
        np.testing.assert_allclose(ranked.scores, single[user].scores, rtol=1e-5)


def test_score_cache_gives_the_same_answers(model):
    plain, cached = Ranker(model), Ranker(model, block_cells=model.recommender.n_items * 7)
    cached.build_score_cache()
    assert cached.score_cache.shape == (model.recommender.n_users, model.recommender.n_items)
    users = np.array([0, 3, -1, 7, 3])
    for filters in (Filters(), Filters(candidates=np.array([1, 5, 9, 40]), include=np.array([2]))):
        for a, b in zip(plain.top_k(users, 6, filters), cached.top_k(users, 6, filters)):
            assert a.items.tolist() == b.items.tolist()
            np.testing.assert_allclose(a.scores, b.scores, rtol=1e-5)
    pairs = (np.array([0, 1, -1, 2]), np.array([3, -1, 4, 5]))
    np.testing.assert_allclose(plain.rank_pairs(*pairs), cached.rank_pairs(*pairs), rtol=1e-5)


def test_score_cache_policy(model):
    from recsys.serving.predict import Predictor

    assert Predictor(model, "auto").cache_reason.startswith("off: scoring is cheap")  # a dot product
    assert Predictor(model, "on").cache_reason.startswith("on:")
    assert Predictor(model, "on", cache_mb=0).cache_reason.startswith("off: ")  # does not fit
    assert Predictor(model, "off").ranker.score_cache is None


class CompiledDot:
    """Wraps a model's DotRecommender with the compiled single-user path (``dot_top_k_one``), counting its calls."""

    def __init__(self, model):
        from recsys.models.kernels import dot_top_k_one

        self.model, self.calls = model, 0
        inner = model.recommender

        def top_k_one(user, k, banned):
            self.calls += 1
            return dot_top_k_one(inner.user_factors[user], inner.item_factors, banned, k)

        inner.top_k_one = top_k_one


def test_single_user_requests_take_the_models_single_call_path_with_the_same_answers():
    model = random_model(n_users=30, n_items=90, dim=5, seed=11)
    plain = Ranker(random_model(n_users=30, n_items=90, dim=5, seed=11))
    compiled = CompiledDot(model)
    ranker = Ranker(model)
    for user in range(30):
        for filters in (Filters(), Filters(exclude_seen=False)):
            for k in (1, 7, 200):
                before = compiled.calls
                (fast,) = ranker.top_k(np.array([user]), k, filters)
                assert compiled.calls == before + 1
                (reference,) = plain.top_k(np.array([user]), k, filters)
                assert fast.items.tolist() == reference.items.tolist() and not fast.cold_start
                np.testing.assert_allclose(fast.scores, reference.scores, rtol=1e-5, atol=1e-6)
    # anything beyond "exclude the user's seen items" (or several users, or an unknown one) ranks score_all's rows
    calls = compiled.calls
    for users, filters in [
        ([3], Filters(include=np.array([1]))),
        ([3], Filters(exclude=np.array([2]))),
        ([3], Filters(exclude_popular=2)),
        ([3], Filters(candidates=np.arange(10))),
        ([3, 4], Filters()),
        ([-1], Filters()),
    ]:
        got = ranker.top_k(np.array(users), 5, filters)
        assert [r.items.tolist() for r in got] == [r.items.tolist() for r in plain.top_k(np.array(users), 5, filters)]
    assert compiled.calls == calls


def test_the_kernel_compiles_without_a_writable_cache_directory(monkeypatch, caplog):
    """Where numba finds no cache directory it can write (a read-only image run as another user), the kernel is
    compiled in memory instead of failing at import."""
    import importlib.util

    from numba.core import caching

    import recsys.models.kernels as kernels

    impl = getattr(caching, "CacheImpl", None) or caching._CacheImpl  # numba < 0.61 names it _CacheImpl
    monkeypatch.setattr(impl, "_locator_classes", [])
    spec = importlib.util.spec_from_file_location("kernels_without_cache", kernels.__file__)
    module = importlib.util.module_from_spec(spec)
    with caplog.at_level("WARNING"):
        spec.loader.exec_module(module)
    assert "without a disk cache" in caplog.text
    items, scores = module.dot_top_k_one(
        np.ones(2, np.float32), np.array([[1, 0], [3, 1], [0, 2]], np.float32), np.array([1]), 5
    )
    assert items.tolist() == [2, 0] and scores.tolist() == [2.0, 1.0]
