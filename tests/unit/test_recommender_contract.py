"""The contract every registered Recommender meets, checked on models trained by the real `train`."""

import numpy as np
import pytest

from helpers.algorithms import ALGORITHMS
from recsys.artifact import load_model
from recsys.models import Recommender, recommender_class


@pytest.fixture(params=ALGORITHMS)
def loaded(request, trained_model_dir):
    return load_model(trained_model_dir(request.param))


def test_is_a_recommender_with_its_algorithm_name(loaded):
    assert isinstance(loaded.recommender, Recommender)
    assert loaded.recommender.algorithm == loaded.algorithm == loaded.manifest["algorithm"]
    assert recommender_class(loaded.algorithm) is type(loaded.recommender)


def test_score_shapes_and_dtype(loaded):
    model = loaded.recommender
    users = np.array([0, 1, 2])
    items = np.array([[0, 1], [2, 3], [4, 5]])
    scores = model.score(users, items)
    assert scores.shape == (3, 2) and scores.dtype == np.float32 and np.isfinite(scores).all()
    assert model.score_all(users).shape == (3, loaded.manifest["n_items"])
    assert model.score(np.array([], dtype=np.int64), np.zeros((0, 4), dtype=np.int64)).shape == (0, 4)


def test_score_all_agrees_with_score(loaded):
    model = loaded.recommender
    users = np.arange(min(7, model.n_users))
    everything = np.broadcast_to(np.arange(model.n_items), (len(users), model.n_items))
    np.testing.assert_allclose(model.score_all(users), model.score(users, everything), rtol=1e-4, atol=1e-5)


def test_score_is_independent_of_batch_composition(loaded):
    model = loaded.recommender
    alone = model.score(np.array([3]), np.array([[1, 2, 3]]))
    together = model.score(np.array([0, 3, 5]), np.array([[9, 8, 7], [1, 2, 3], [4, 5, 6]]))[1:2]
    np.testing.assert_allclose(alone, together, rtol=1e-5, atol=1e-6)


def test_single_user_top_k_agrees_with_score_all(loaded):
    """``top_k_one`` (every registered algorithm has one) ranks ``score_all``'s row: banned items dropped, best
    first, the same scores up to float32 rounding."""
    model = loaded.recommender
    for user in range(min(6, model.n_users)):
        banned = np.asarray(loaded.seen_indices[loaded.seen_indptr[user] : loaded.seen_indptr[user + 1]], np.int64)
        scores = model.score_all(np.array([user]))[0].astype(np.float64)
        scores[banned] = -np.inf
        allowed = int(np.count_nonzero(scores > -np.inf))
        for k in (1, 10, model.n_items + 1):
            found = model.top_k_one(user, k, banned)
            assert found is not None, f"{loaded.algorithm} has no single-user top-K"
            items, values = found
            assert items.dtype == np.int64 and values.dtype == np.float32 and len(items) == min(k, allowed)
            assert not set(items.tolist()) & set(banned.tolist())
            assert np.all(np.diff(values) <= 0)
            np.testing.assert_allclose(values, scores[items], rtol=1e-5, atol=1e-5)
            np.testing.assert_allclose(values, np.sort(scores)[::-1][: len(items)], rtol=1e-5, atol=1e-5)


def test_item_vectors(loaded):
    vectors = loaded.recommender.item_vectors()
    assert vectors.shape[0] == loaded.manifest["n_items"] and vectors.ndim == 2
    assert vectors.dtype == np.float32 and np.isfinite(vectors).all()


def test_save_load_round_trip(loaded, tmp_path):
    model = loaded.recommender
    files = model.save(tmp_path)
    assert files and all((tmp_path / f).is_file() for f in files)
    again = type(model).load(tmp_path, model.hp, model.n_users, model.n_items)
    users = np.arange(min(5, model.n_users))
    np.testing.assert_allclose(again.score_all(users), model.score_all(users), rtol=1e-6)


def test_manifest_reports_validation_selected_metrics(loaded):
    # Quality bars (beating item popularity by a clear margin) live in the MovieLens-100K gates of test_ncf.py and
    # test_als.py: on this 300-user fixture with fast settings every model is within noise of popularity.
    validation = loaded.manifest["metrics"]["validation"]
    assert 0.0 <= validation["HR"] <= 1.0 and 0.0 <= validation["NDCG"] <= validation["HR"]
    assert loaded.manifest["evaluation"]["held_out"]["validation"] is True
