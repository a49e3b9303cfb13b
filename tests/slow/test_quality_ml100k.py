"""Quality gates on MovieLens-100K through the real `train` with the default hyperparameters: each algorithm must
clearly beat item popularity on an untouched test channel (each user's latest rating). The data is never committed;
these tests skip without it and fail under CI (see the ``ml100k`` fixture). Figures over seeds 1-5:
benchmarks/quality.py."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from helpers.movielens import split_channels
from helpers.opt_ml import train_in

pytestmark = pytest.mark.slow


def _train(ml100k: Path, base: Path, algorithm: str) -> dict:
    split_channels(ml100k, base)
    assert train_in(base, {"algorithm": algorithm, "preset": "movielens"}) == 0, (base / "output/failure").read_text()
    return json.loads((base / "output/data/evaluation.json").read_text())


def test_ncf_beats_item_popularity_on_the_held_out_test(ml100k, tmp_path):
    report = _train(ml100k, tmp_path / "opt_ml", "ncf")
    test, popularity = report["metrics"]["test"], report["baselines"]["item_popularity"]["test"]
    assert report["held_out"] == {"validation": True, "test": True} and report["refit"]["epochs"]["neumf"] >= 1
    assert test["HR"] >= popularity["HR"] + 0.2 and test["NDCG"] >= popularity["NDCG"] + 0.12, (test, popularity)
    assert test["HR"] >= 0.64 and test["NDCG"] >= 0.37, test


def test_als_beats_item_popularity_on_the_held_out_test(ml100k, tmp_path):
    report = _train(ml100k, tmp_path / "opt_ml", "als")
    test, popularity = report["metrics"]["test"], report["baselines"]["item_popularity"]["test"]
    assert report["held_out"] == {"validation": True, "test": True} and report["refit"]["interactions"] > 99_000
    assert test["HR"] >= popularity["HR"] + 0.2 and test["NDCG"] >= popularity["NDCG"] + 0.12, (test, popularity)
