"""MovieLens-100K as a SageMaker job sees it in the quality gates: a ``test`` channel holding each user's latest
rating, a ``train`` channel holding the rest (the job carves its own validation from train), and item popularity
ranked through the same evaluator as the baseline every model must clearly beat."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from recsys.data.dataset import concat, load_training_data
from recsys.evaluation import Evaluator
from recsys.hyperparameters import parse
from recsys.paths import SageMakerPaths


def split_channels(ml100k: Path, base: Path) -> Path:
    """``base/input/data/{train,test}/u.data``: test = each user's latest rating. Ties (44% of users rated several
    films in their last second) are broken at random with a fixed seed: by item id they would favour the catalog's
    high ids, which are its obscure films."""
    ratings = pd.read_csv(ml100k / "u.data", sep="\t", header=None, names=["user", "item", "rating", "time"])
    ratings["tiebreak"] = np.random.default_rng(0).random(len(ratings))
    ratings = ratings.sort_values(["user", "time", "tiebreak"], kind="stable").drop(columns="tiebreak")
    latest = ~ratings.duplicated("user", keep="last")
    for name, part in (("train", ratings[~latest]), ("test", ratings[latest])):
        (base / "input/data" / name).mkdir(parents=True)
        part.to_csv(base / "input/data" / name / "u.data", sep="\t", header=False, index=False)
    (base / "input/config").mkdir(parents=True, exist_ok=True)
    return base


class _Popularity:
    def __init__(self, popularity: np.ndarray):
        self.popularity = popularity.astype(np.float32)

    def score(self, users, items):
        return self.popularity[np.asarray(items)]


def popularity_test_metrics(base: Path, hyperparameters: dict) -> dict[str, float]:
    """HR/NDCG on the test channel of ranking by item popularity (distinct users per item in train)."""
    hp = parse(hyperparameters)
    data = load_training_data(SageMakerPaths(base), hp)
    known = concat(data.known_pairs(), data.test)
    tester = Evaluator(data.all, data.test, hp.top_k, hp.num_eval_negatives, hp.seed, known=known)
    return tester.sampled(_Popularity(data.all.item_popularity()))
