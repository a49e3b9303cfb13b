"""MovieLens-100K as a SageMaker job sees it in the quality gates: a ``test`` channel holding each user's latest
rating, a ``train`` channel holding the rest (the job carves its own validation from train). The job reports item
popularity on the same candidates (``baselines``), the bar every model must clearly beat."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd


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
