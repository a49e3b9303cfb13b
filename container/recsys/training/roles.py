"""Channels → ``TrainingData``: id maps and the interactions of three roles that never mix.

- ``train`` (required): what the model learns from; it defines the users and items the model knows.
- ``validation``: model selection (best epoch, early stopping). Without a validation channel, each user's latest
  interaction (by timestamp; a seeded random one without timestamps) is carved out of ``train``; the job then
  refits on all of ``train`` with the selected settings (``refit``).
- ``test`` (optional): reported once, on the final model; it never influences the model. Without it only
  validation metrics are reported.

Rows of ``validation``/``test`` whose user or item never appears in ``train`` are reported and skipped. Pairs that
``test`` (or a ``validation`` channel) shares with ``train`` are counted: metrics on them are not held-out.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from recsys.data.ids import IdIndex
from recsys.data.interactions import Interactions, contains_pairs
from recsys.data.presets import CleanFrame, load_channel
from recsys.platform.errors import UserError
from recsys.platform.paths import SageMakerPaths
from recsys.training.hyperparameters import Hyperparameters

log = logging.getLogger(__name__)

TRAIN_CHANNEL = "train"
VALIDATION_CHANNEL = "validation"
TEST_CHANNEL = "test"


@dataclass
class TrainingData:
    users: IdIndex
    items: IdIndex
    all: Interactions  # the whole train channel: what a refit trains on; the artifact's seen lists and popularity
    train: Interactions  # what model selection trains on: ``all`` minus the carved validation interactions
    validation: Interactions  # what selects (best epoch, early stopping)
    test: Interactions | None = None  # reported once on the final model; None without a test channel
    validation_carved: bool = True  # carved from ``all`` (so a refit on ``all`` is worth it) or its own channel
    report: dict = field(default_factory=dict)

    def known_pairs(self) -> Interactions:
        """Every (user, item) the users interacted with in train and validation: never a sampled negative."""
        return concat(self.all, self.validation)


def load_training_data(paths: SageMakerPaths, hp: Hyperparameters) -> TrainingData:
    train_dir = paths.channel(TRAIN_CHANNEL)
    if not train_dir.exists():
        present = sorted(p.name for p in paths.data_dir.iterdir()) if paths.data_dir.is_dir() else []
        raise UserError(
            f"no `train` channel: {train_dir} does not exist (channels given: {present or 'none'}); "
            "start the job with a channel named `train`"
        )
    train = load_channel(train_dir, TRAIN_CHANNEL, hp)
    optional = {
        name: load_channel(paths.channel(name), name, hp) if paths.channel(name).exists() else None
        for name in (VALIDATION_CHANNEL, TEST_CHANNEL)
    }
    return build(train, optional[VALIDATION_CHANNEL], optional[TEST_CHANNEL], hp)


def _index(frame: pd.DataFrame) -> tuple[IdIndex, IdIndex, np.ndarray, np.ndarray]:
    user_codes, user_ids = pd.factorize(frame["user"], sort=False)
    item_codes, item_ids = pd.factorize(frame["item"], sort=False)
    return IdIndex(np.asarray(user_ids, dtype=str)), IdIndex(np.asarray(item_ids, dtype=str)), user_codes, item_codes


def _interactions(
    frame: pd.DataFrame, users: np.ndarray, items: np.ndarray, n_users: int, n_items: int, has_ts: bool
) -> Interactions:
    return Interactions(
        users,
        items,
        frame["weight"].to_numpy(np.float32),
        frame["timestamp"].to_numpy(np.float64) if has_ts else None,
        n_users,
        n_items,
    )


def concat(a: Interactions, b: Interactions) -> Interactions:
    both_ts = a.timestamps is not None and b.timestamps is not None
    return Interactions(
        np.concatenate([a.users, b.users]),
        np.concatenate([a.items, b.items]),
        np.concatenate([a.weights, b.weights]),
        np.concatenate([a.timestamps, b.timestamps]) if both_ts else None,
        a.n_users,
        a.n_items,
    )


def overlap(held: Interactions, train: Interactions) -> int:
    """How many rows of ``held`` are (user, item) pairs that also occur in ``train``."""
    return int(contains_pairs(train.pair_keys(), held.users * np.int64(held.n_items) + held.items).sum())


def _aligned(channel: CleanFrame, name: str, users: IdIndex, items: IdIndex, report: dict) -> Interactions | None:
    """A validation/test channel over train's indices; rows with an unknown user or item are reported and
    skipped. None when no row is usable."""
    user_idx = users.lookup_normalized(channel.frame["user"])
    item_idx = items.lookup_normalized(channel.frame["item"])
    unknown_user, unknown_item = user_idx < 0, (item_idx < 0) & (user_idx >= 0)
    skipped = {"unknown user": int(unknown_user.sum()), "unknown item": int(unknown_item.sum())}
    usable = ~(unknown_user | unknown_item)
    report[name] = {**channel.report(), "rows_skipped": {k: v for k, v in skipped.items() if v}}
    if any(skipped.values()):
        log.warning(
            "%s channel: skipped %d row(s) with a user never seen in training and %d with an unknown item",
            name,
            skipped["unknown user"],
            skipped["unknown item"],
        )
    if not usable.any():
        log.warning("%s channel has no usable rows (every user or item is unknown to training)", name)
        report[name]["note"] = "no rows with users and items known to training"
        return None
    return _interactions(
        channel.frame[usable], user_idx[usable], item_idx[usable], len(users), len(items), channel.has_timestamps
    )


def build(
    train: CleanFrame,
    validation: CleanFrame | None,
    test: CleanFrame | None,
    hp: Hyperparameters,
) -> TrainingData:
    users, items, user_codes, item_codes = _index(train.frame)
    everything = _interactions(train.frame, user_codes, item_codes, len(users), len(items), train.has_timestamps)
    report: dict = {"train": train.report(), "n_users": len(users), "n_items": len(items)}

    held = _aligned(validation, VALIDATION_CHANNEL, users, items, report) if validation is not None else None
    if held is not None:
        fit_part, carved = everything, False
        report["validation_source"] = "validation channel"
    else:
        fit_part, held = leave_one_out(everything, hp.seed)
        carved = True
        report["validation_source"] = (
            "carved from train: each user's latest interaction"
            if everything.timestamps is not None
            else "carved from train: one seeded random interaction per user (no timestamps)"
        )
    if len(held) == 0:
        raise UserError(
            "nothing to validate on: no user has interactions with 2 or more items to hold one out, and no "
            "`validation` channel was given; add a `validation` channel"
        )
    held_test = _aligned(test, TEST_CHANNEL, users, items, report) if test is not None else None

    # Carved validation never overlaps (leave_one_out removes every row of a held-out pair): no pass over train.
    overlaps = {VALIDATION_CHANNEL: 0 if carved else overlap(held, fit_part)}
    if held_test is not None:
        overlaps[TEST_CHANNEL] = overlap(held_test, everything)
    for name, count in overlaps.items():
        if count:
            log.warning(
                "%d of %d %s pairs also occur in the train channel: %s metrics are not held-out%s",
                count,
                len(held_test if name == TEST_CHANNEL else held),
                name,
                name,
                " (the same data passed as train and test?)" if name == TEST_CHANNEL else "",
            )
    report["overlap_with_train"] = overlaps
    report["train_interactions"] = len(fit_part)
    report["validation_interactions"] = len(held)
    report["test_interactions"] = len(held_test) if held_test is not None else 0
    return TrainingData(users, items, everything, fit_part, held, held_test, carved, report)


def leave_one_out(data: Interactions, seed: int) -> tuple[Interactions, Interactions]:
    """Hold out each user's latest interaction (ties and missing timestamps broken by a seeded random draw).

    Every row of the held-out (user, item) pair leaves the training part, so the held-out item is truly unseen.
    Users with a single distinct item keep it in training (they could not be trained on otherwise). Returns
    (training part, held-out part with one row per user).
    """
    rng = np.random.default_rng(seed)
    tiebreak = rng.random(len(data))
    time = data.timestamps if data.timestamps is not None else np.zeros(len(data))
    order = np.lexsort((tiebreak, time, data.users))  # by user, then time, then random
    sorted_users = data.users[order]
    last_of_user = np.r_[sorted_users[1:] != sorted_users[:-1], True]
    keys = data.users * np.int64(data.n_items) + data.items
    distinct_items = np.bincount(np.unique(keys) // np.int64(data.n_items), minlength=data.n_users)
    held = order[last_of_user & (distinct_items[sorted_users] >= 2)]
    held_out_pair = contains_pairs(np.sort(keys[held]), keys)
    return data.subset(~held_out_pair), data.subset(np.sort(held))
