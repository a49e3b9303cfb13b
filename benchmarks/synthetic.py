"""Synthetic interaction logs for scale tests: power-law user activity and item popularity (Zipf-like), with
timestamps. Nothing larger than the samples ships with the project, so scale is generated here."""

from __future__ import annotations

import numpy as np
import pandas as pd


def power_law_interactions(
    n_rows: int, n_users: int, n_items: int, seed: int = 0, exponent: float = 1.1
) -> pd.DataFrame:
    rng = np.random.default_rng(seed)

    def zipf_choice(n: int, size: int) -> np.ndarray:
        weights = 1.0 / np.arange(1, n + 1) ** exponent
        cdf = np.cumsum(weights / weights.sum())
        ranks = np.searchsorted(cdf, rng.random(size), side="right")
        return rng.permutation(n)[np.minimum(ranks, n - 1)]  # popular ids scattered over the id space

    return pd.DataFrame(
        {
            "user_id": np.char.add("u", zipf_choice(n_users, n_rows).astype(str)),
            "item_id": np.char.add("sku-", zipf_choice(n_items, n_rows).astype(str)),
            "quantity": rng.integers(1, 6, n_rows),
            "timestamp": 1_600_000_000 + rng.integers(0, 86_400 * 365, n_rows),
        }
    )
