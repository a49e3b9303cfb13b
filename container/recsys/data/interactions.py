"""``Interactions``: (user, item, weight[, timestamp]) rows over dense indices, and what is derived from them."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class Interactions:
    users: np.ndarray  # int64 user index per row
    items: np.ndarray  # int64 item index per row
    weights: np.ndarray  # float32: rating, quantity or 1.0
    timestamps: np.ndarray | None  # float64 seconds, or None when the data has none
    n_users: int
    n_items: int

    def __post_init__(self) -> None:
        self.users = np.asarray(self.users, dtype=np.int64)
        self.items = np.asarray(self.items, dtype=np.int64)
        self.weights = np.asarray(self.weights, dtype=np.float32)
        if self.timestamps is not None:
            self.timestamps = np.asarray(self.timestamps, dtype=np.float64)
        n = len(self.users)
        if not (len(self.items) == len(self.weights) == n) or (
            self.timestamps is not None and len(self.timestamps) != n
        ):
            raise ValueError("Interactions columns differ in length")

    def __len__(self) -> int:
        return len(self.users)

    def subset(self, mask_or_index: np.ndarray) -> Interactions:
        return Interactions(
            self.users[mask_or_index],
            self.items[mask_or_index],
            self.weights[mask_or_index],
            None if self.timestamps is None else self.timestamps[mask_or_index],
            self.n_users,
            self.n_items,
        )

    def csr(self) -> tuple[np.ndarray, np.ndarray]:
        """(indptr, indices): each user's distinct items, sorted — the "seen" lists serving filters with."""
        keys = np.unique(self.users * np.int64(self.n_items) + self.items)
        users, items = np.divmod(keys, np.int64(self.n_items))
        indptr = np.zeros(self.n_users + 1, dtype=np.int64)
        np.cumsum(np.bincount(users, minlength=self.n_users), out=indptr[1:])
        return indptr, items.astype(np.int64)

    def pair_keys(self) -> np.ndarray:
        """Sorted unique ``user * n_items + item`` keys: O(log n) membership tests with ``np.searchsorted``."""
        return np.unique(self.users * np.int64(self.n_items) + self.items)

    def item_popularity(self) -> np.ndarray:
        """Distinct users per item (float64), the cold-start and ``exclude_popular`` ranking."""
        keys = self.pair_keys()
        return np.bincount(keys % np.int64(self.n_items), minlength=self.n_items).astype(np.float64)


def contains_pairs(sorted_keys: np.ndarray, keys: np.ndarray) -> np.ndarray:
    """Boolean mask: which ``keys`` are in ``sorted_keys`` (both ``user * n_items + item``)."""
    if len(sorted_keys) == 0:
        return np.zeros(np.shape(keys), dtype=bool)
    pos = np.searchsorted(sorted_keys, keys)
    pos = np.minimum(pos, len(sorted_keys) - 1)
    return sorted_keys[pos] == keys
