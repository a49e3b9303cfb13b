import math

import numpy as np
import pytest

from recsys.data.interactions import Interactions
from recsys.training.evaluation import Evaluator, hit_ndcg, rank_of_first, sample_negatives


class TableModel:
    """Scores from a fixed (n_users, n_items) table: a real, fully specified recommender for metric checks."""

    def __init__(self, table):
        self.table = np.asarray(table, dtype=np.float32)

    def score(self, users, items):
        return self.table[np.asarray(users)[:, None], items]

    def score_all(self, users):
        return self.table[np.asarray(users)]


def test_hit_ndcg_by_hand():
    hr, ndcg = hit_ndcg(np.array([0, 1, 5, 20]), k=10)
    assert hr == pytest.approx(3 / 4)
    assert ndcg == pytest.approx((1 + 1 / math.log2(3) + 1 / math.log2(7) + 0) / 4)


def test_rank_counts_ties_against_the_positive():
    scores = np.array([[0.5, 0.9, 0.5, 0.1], [1.0, 0.0, 0.0, 0.0], [0.0, 0.0, 0.0, 0.0]])
    assert rank_of_first(scores).tolist() == [2, 0, 3]
    valid = np.array([[True, False, True, True]] * 3)
    assert rank_of_first(scores, valid).tolist() == [1, 0, 2]


def test_sample_negatives_never_returns_known_items_even_for_dense_users():
    n_items = 30
    users = np.repeat(np.arange(3), [28, 5, 1])
    items = np.concatenate([np.arange(28), np.arange(5), [7]])
    keys = np.unique(users * n_items + items)
    negs, valid = sample_negatives(np.array([0, 1, 2]), n_items, keys, 10, seed=0)
    for row, user in enumerate([0, 1, 2]):
        chosen = negs[row][valid[row]]
        assert not np.isin(user * n_items + chosen, keys).any()
    assert set(negs[0]) <= {28, 29} and valid.all()  # dense user: only its 2 unseen items
    full = np.arange(n_items)
    negs, valid = sample_negatives(np.array([0]), n_items, np.unique(np.r_[keys, full]), 5, seed=0)
    assert not valid.any()  # nothing left to sample: marked invalid, not a known item


def test_negatives_are_fixed_per_user_whatever_else_is_evaluated():
    """Drawn once per (seed, user): the same candidates whichever users are evaluated alongside, in any order,
    and whichever model is ranked; another seed draws others."""
    rng = np.random.default_rng(3)
    n_users, n_items = 200, 500
    users, items = rng.integers(0, n_users, 4000), rng.integers(0, n_items, 4000)
    keys = np.unique(users * n_items + items)
    everyone, valid = sample_negatives(np.arange(n_users), n_items, keys, 99, seed=7)
    assert valid.all() and not np.isin(np.arange(n_users)[:, None] * n_items + everyone, keys).any()
    some = np.array([150, 3, 42, 3])
    alone, _ = sample_negatives(some, n_items, keys, 99, seed=7)
    np.testing.assert_array_equal(alone, everyone[some])
    other, _ = sample_negatives(np.arange(n_users), n_items, keys, 99, seed=8)
    assert (other != everyone).mean() > 0.9
    # Spread over the catalog: each item is drawn about equally often (a broken hash would cluster).
    counts = np.bincount(everyone.ravel(), minlength=n_items)
    assert counts.min() > 0.3 * counts.mean() and counts.max() < 2.0 * counts.mean()


def test_evaluator_sampled_metrics_by_hand():
    # 2 users, 4 items. User 0 held out item 3, user 1 held out item 0.
    train = Interactions(np.array([0, 1]), np.array([0, 1]), np.ones(2), None, 2, 4)
    test = Interactions(np.array([0, 1]), np.array([3, 0]), np.ones(2), None, 2, 4)
    ev = Evaluator(train, test, top_k=1, num_negatives=2, seed=0)
    # Negatives for user 0 are from {1, 2}; for user 1 from {2, 3}.
    assert set(ev.candidates[0, 1:]) <= {1, 2} and set(ev.candidates[1, 1:]) <= {2, 3}
    table = [[0.0, 0.1, 0.2, 0.9], [0.0, 0.0, 0.5, 0.4]]  # user 0's positive ranks first, user 1's last
    m = ev.sampled(TableModel(table))
    assert m == {"HR": 0.5, "NDCG": 0.5}


def test_full_ranking_excludes_training_items_by_hand():
    train = Interactions(np.array([0, 0]), np.array([0, 1]), np.ones(2), None, 1, 5)
    test = Interactions(np.array([0, 0]), np.array([2, 4]), np.ones(2), None, 1, 5)
    ev = Evaluator(train, test, top_k=2, num_negatives=1, seed=0)
    # Item 0 and 1 score highest but were seen: excluded. Ranking of unseen: 2 (0.8), 3 (0.7), 4 (0.1).
    m = ev.full_ranking(TableModel([[1.0, 0.9, 0.8, 0.7, 0.1]]))
    assert m["full_recall@2"] == pytest.approx(0.5)
    assert m["full_ndcg@2"] == pytest.approx(1.0 / (1 + 1 / math.log2(3)))


def test_perfect_and_constant_models():
    rng = np.random.default_rng(1)
    n_users, n_items = 40, 60
    train = Interactions(
        rng.integers(0, n_users, 300), rng.integers(0, n_items, 300), np.ones(300), None, n_users, n_items
    )
    test_items = rng.integers(0, n_items, n_users)
    test = Interactions(np.arange(n_users), test_items, np.ones(n_users), None, n_users, n_items)
    ev = Evaluator(train, test, top_k=10, num_negatives=20, seed=0)
    oracle = np.zeros((n_users, n_items))
    oracle[np.arange(n_users), test_items] = 1.0
    assert ev.sampled(TableModel(oracle)) == {"HR": 1.0, "NDCG": 1.0}
    assert ev.sampled(TableModel(np.zeros((n_users, n_items))))["HR"] == 0.0
