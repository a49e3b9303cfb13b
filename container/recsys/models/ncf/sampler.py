"""Training examples for NCF: every positive pair plus ``num_negatives`` uniformly drawn unseen items per positive,
re-drawn each epoch, entirely with tensors on the training device.

Negatives are drawn **exactly** (no rejection loop): for a user with sorted seen items ``s_0 < … < s_{c-1}`` the
r-th unseen item (0-based) is ``r + #{k : s_k - k ≤ r}``. With the global sorted keys ``user·n_items + (s_k - k)``
that count is one ``torch.searchsorted`` per draw, so a batch of draws is: one uniform ``r`` in ``[0, n_items - c_u)``
per row, one ``searchsorted``, one subtraction. It costs the same for a user who has seen 99 % of the items as for
one who has seen 1, never returns a seen item, and needs no Python loop over samples or users.

Recency: a recommender is asked for what a user will want *next*, and a user's latest interactions say most about
that. With timestamps, each positive's loss is weighted ``1 + recency_weight · f^recency_power``, where ``f`` is the
interaction's place in its user's history by time (0 = oldest, 1 = newest; ties share the later place). Negatives
weigh 1. Measured on MovieLens-100K in ``benchmarks/ncf_movielens.py`` (see benchmarks/README.md).
"""

from __future__ import annotations

import numpy as np
import torch


def _index_dtype(n: int) -> torch.dtype:
    """int32 indices into ``n`` rows where they fit (half the bytes of int64), else int64."""
    return torch.int32 if n < 2**31 else torch.int64


def recency_fractions(users: np.ndarray, timestamps: np.ndarray) -> np.ndarray:
    """Per row: its place in its user's history by time, 0 (oldest) .. 1 (newest); equal timestamps share the later
    place; a user's only row is 1."""
    users = np.asarray(users, dtype=np.int64)
    timestamps = np.asarray(timestamps, dtype=np.float64)
    n = len(users)
    if n == 0:
        return np.zeros(0)
    order = np.lexsort((timestamps, users))
    su, st = users[order], timestamps[order]
    new_user = np.r_[True, su[1:] != su[:-1]]
    new_run = new_user | np.r_[True, st[1:] != st[:-1]]
    user_start = np.maximum.accumulate(np.where(new_user, np.arange(n), 0))
    user_end = np.r_[np.flatnonzero(new_user)[1:], n][np.cumsum(new_user) - 1] - 1
    run_ids = np.cumsum(new_run) - 1
    run_end = np.r_[np.flatnonzero(new_run)[1:], n][run_ids] - 1  # ties: the run's last place
    span = user_end - user_start
    frac_sorted = np.where(span > 0, (run_end - user_start) / np.maximum(span, 1), 1.0)
    out = np.empty(n)
    out[order] = frac_sorted
    return out


def recency_weights(users: np.ndarray, timestamps: np.ndarray | None, weight: float, power: float) -> np.ndarray | None:
    """Per-row positive weights ``1 + weight · f^power`` (None when there is nothing to weight)."""
    if timestamps is None or weight == 0 or len(users) == 0:
        return None
    return 1.0 + weight * recency_fractions(users, timestamps) ** power


class NegativeSampler:
    def __init__(
        self,
        users: np.ndarray,
        items: np.ndarray,
        n_users: int,
        n_items: int,
        device: torch.device,
        row_weights: np.ndarray | None = None,
    ):
        """``row_weights``: per input row, the loss weight of that positive (a pair seen several times takes its
        largest); None = every sample weighs 1."""
        if max(n_users, n_items) >= 2**31:
            raise ValueError("NegativeSampler packs user and item indices as int32: fewer than 2^31 of each")
        self.n_users, self.n_items, self.device = n_users, n_items, torch.device(device)
        row_keys = np.asarray(users, dtype=np.int64) * np.int64(n_items) + np.asarray(items, dtype=np.int64)
        keys, inverse = np.unique(row_keys, return_inverse=True)
        self.pos_weights = None
        if row_weights is not None:
            weights = np.zeros(len(keys), dtype=np.float32)
            np.maximum.at(weights, inverse.reshape(-1), np.asarray(row_weights, dtype=np.float32))
            self.pos_weights = torch.as_tensor(weights).to(self.device)
        pos_users, pos_items = np.divmod(keys, np.int64(n_items))
        counts = np.bincount(pos_users, minlength=n_users).astype(np.int64)
        indptr = np.zeros(n_users + 1, dtype=np.int64)
        np.cumsum(counts, out=indptr[1:])
        rank_in_user = np.arange(len(keys), dtype=np.int64) - indptr[pos_users]
        adjusted = pos_users * np.int64(n_items) + (pos_items - rank_in_user)  # sorted: s_k - k is non-decreasing
        as_tensor = lambda a: torch.as_tensor(a, dtype=torch.int64).to(self.device)  # noqa: E731
        self.pos_users = as_tensor(pos_users)  # distinct (user, item) positives, sorted by key
        self.pos_items = as_tensor(pos_items)
        self.keys = as_tensor(keys)
        self._adjusted = as_tensor(adjusted)
        self._start = as_tensor(indptr[:-1])
        self._free = as_tensor(n_items - counts)  # unseen items per user
        self._epoch_rows: tuple[torch.Tensor, torch.Tensor] | None = None

    @property
    def n_positives(self) -> int:
        return len(self.pos_users)

    def negative_users(self, num_negatives: int) -> torch.Tensor:
        """Each positive's user repeated ``num_negatives`` times, minus users who have seen every item."""
        users = self.pos_users[self._free[self.pos_users] > 0]
        return users.repeat_interleave(num_negatives)

    def sample(self, users: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """One uniformly random unseen item per entry of ``users`` (each user must have an unseen item)."""
        free = self._free[users]
        # float64 draws: unbiased enough for any realistic item count (2^53 resolution).
        draws = torch.rand(len(users), generator=generator, device=self.device, dtype=torch.float64)
        r = torch.minimum(draws.mul_(free).long(), free.sub_(1))  # in place where it can: an epoch's draws are large
        del draws, free
        keys = torch.mul(users, self.n_items).add_(r)
        below = torch.searchsorted(self._adjusted, keys, right=True).sub_(self._start[users])
        return r.add_(below)

    def epoch(self, neg_users: torch.Tensor, generator: torch.Generator) -> tuple[torch.Tensor, ...]:
        """Shuffled (users, items, labels, weights) of one epoch: all positives + fresh negatives for ``neg_users``;
        ``weights`` is None when every sample weighs 1. Users, items and weights are columns of one tensor.

        The shuffle is a random gather over the whole epoch — at 20M interactions the largest cost outside the
        optimizer steps — so it moves as few bytes and touches as few cache lines as it can: one gather of packed
        int32 rows (user, item[, weight bits, padding to 16 bytes]) instead of one per column of int64/float32, and
        labels from the permutation itself (a sample is positive when it came from the first ``n_positives``)."""
        neg_items = self.sample(neg_users, generator)
        rows = self._unshuffled(neg_users)
        rows[self.n_positives :, 1] = neg_items
        del neg_items
        n = len(rows)
        order = torch.randperm(n, generator=generator, device=self.device, dtype=_index_dtype(n))
        shuffled = rows.index_select(0, order)
        labels = (order < self.n_positives).float()
        weights = shuffled[:, 2].view(torch.float32) if self.pos_weights is not None else None
        return shuffled[:, 0], shuffled[:, 1], labels, weights

    def _unshuffled(self, neg_users: torch.Tensor) -> torch.Tensor:
        """The epoch's packed rows before the shuffle: users, positives' items and weights are the same every
        epoch, so the tensor is built once per ``neg_users`` and only the negatives' items change."""
        if self._epoch_rows is None or self._epoch_rows[0] is not neg_users:
            n = self.n_positives + len(neg_users)
            rows = torch.zeros((n, 2 if self.pos_weights is None else 4), dtype=torch.int32, device=self.device)
            rows[: self.n_positives, 0] = self.pos_users
            rows[self.n_positives :, 0] = neg_users
            rows[: self.n_positives, 1] = self.pos_items
            if self.pos_weights is not None:
                weights = torch.ones(n, device=self.device)
                weights[: self.n_positives] = self.pos_weights
                rows[:, 2] = weights.view(torch.int32)
            self._epoch_rows = (neg_users, rows)
        return self._epoch_rows[1]

    def is_positive(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        keys = users.long() * self.n_items + items.long()
        pos = torch.searchsorted(self.keys, keys).clamp_max(len(self.keys) - 1)
        return self.keys[pos] == keys
