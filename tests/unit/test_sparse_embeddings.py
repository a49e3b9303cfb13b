"""Sparse embedding gradients with the row-wise Adam: which rows a step touches, agreement with torch's Adam on
dense parameters, the auto rule, and NCF training, quality and resume on the sparse path."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from test_ncf import N_USERS, StopAfter, checkpointer, comparable, context, fit, hp_for, planted
from torch import nn

from recsys.models.ncf.sparse import AUTO_ROWS_PER_BATCH, RowSparseAdam, use_sparse
from recsys.platform.errors import TrainingStopped
from recsys.training.evaluation import PopularityScorer


@pytest.mark.parametrize("decoupled", [False, True])
def test_dense_parameters_follow_torch_adam(decoupled):
    torch.manual_seed(0)
    ours, theirs = nn.Linear(6, 3), nn.Linear(6, 3)
    theirs.load_state_dict(ours.state_dict())
    kind = torch.optim.AdamW if decoupled else torch.optim.Adam
    opts = [RowSparseAdam(ours.parameters(), 0.01, 0.1, decoupled)]
    opts.append(kind(theirs.parameters(), lr=0.01, weight_decay=0.1))
    x = torch.randn(32, 6)
    for _ in range(20):
        for net, opt in zip((ours, theirs), opts):
            opt.zero_grad()
            net(x).pow(2).mean().backward()
            opt.step()
    for a, b in zip(ours.parameters(), theirs.parameters()):
        torch.testing.assert_close(a, b)


def test_a_sparse_step_changes_only_the_touched_rows_and_matches_dense_adam_there():
    torch.manual_seed(0)
    sparse, dense = nn.Embedding(50, 4, sparse=True), nn.Embedding(50, 4)
    dense.load_state_dict(sparse.state_dict())
    before = sparse.weight.detach().clone()
    rows = torch.tensor([3, 7, 7, 20])
    opts = [RowSparseAdam(sparse.parameters(), 0.01, 0.01), torch.optim.Adam(dense.parameters(), 0.01, weight_decay=0)]
    for net, opt in zip((sparse, dense), opts):
        opt.zero_grad()
        net(rows).sum().backward()
        opt.step()
    touched = torch.zeros(50, dtype=torch.bool)
    touched[rows] = True
    assert torch.equal(sparse.weight[~touched], before[~touched])  # untouched rows: no update, no decay
    assert not torch.equal(sparse.weight[touched], before[touched])
    state = opts[0].state[sparse.weight]
    assert torch.count_nonzero(state["exp_avg"].abs().sum(1)) == 3  # moments of the 3 distinct rows only
    # First step: Adam's update is lr * sign(g) whatever the L2 term adds (|m̂/√v̂| = 1), so both agree.
    torch.testing.assert_close(sparse.weight[touched], dense.weight[touched])


def test_auto_turns_sparse_on_for_large_tables_only():
    assert not use_sparse("auto", AUTO_ROWS_PER_BATCH * 4096, 4096, "adam", None)
    assert use_sparse("auto", AUTO_ROWS_PER_BATCH * 4096 + 1, 4096, "adam", None)
    assert not use_sparse("auto", 10**7, 4096, "sgd", None)  # no row-wise SGD/Adagrad: dense
    assert not use_sparse("auto", 10**7, 4096, "adam", "nccl")  # NCCL has no sparse all-reduce
    assert use_sparse("true", 10, 4096, "adamw", "gloo") and not use_sparse("false", 10**7, 4096, "adam", None)


@pytest.fixture(scope="module")
def data():
    return planted()


def test_sparse_training_learns_the_planted_structure(data):
    model, result = fit(data, sparse_embeddings="true", model_type="neumf")
    assert result.info["stages"]["neumf"]["HR"] > 0.6  # random: 0.2
    popularity = context(data).evaluator.sampled(PopularityScorer(data.train.item_popularity()))
    assert result.metrics["HR"] > popularity["HR"]


def test_auto_keeps_small_data_on_the_dense_path(data):
    dense_model, _ = fit(data, sparse_embeddings="false", epochs=1)
    auto_model, _ = fit(data, sparse_embeddings="auto", epochs=1)
    users = np.arange(N_USERS)
    assert np.array_equal(dense_model.score_all(users), auto_model.score_all(users))
    sparse_model, _ = fit(data, sparse_embeddings="true", epochs=1)
    assert not np.array_equal(dense_model.score_all(users), sparse_model.score_all(users))


def test_sparse_training_resumes_mid_epoch_as_if_uninterrupted(data, tmp_path):
    overrides = {"model_type": "neumf", "epochs": 2, "sparse_embeddings": "true"}
    hp = hp_for(**overrides)
    full_model, full = fit(data, context(data, checkpoints=checkpointer(tmp_path / "a", hp)), **overrides)
    steps_per_epoch = -(-(len(data.train) * 5) // 256)
    ckpt = checkpointer(tmp_path / "b", hp)
    with pytest.raises(TrainingStopped):
        fit(data, context(data, stop=StopAfter(steps_per_epoch + steps_per_epoch // 2), checkpoints=ckpt), **overrides)
    assert ckpt.latest()[1]["batch"] not in (None, 0)
    resumed_model, resumed = fit(data, context(data, checkpoints=ckpt), **overrides)
    assert comparable(resumed.history) == comparable(full.history)
    users = np.arange(N_USERS)
    assert np.array_equal(resumed_model.score_all(users), full_model.score_all(users))
