"""Channels → ``TrainingData``: id maps, the training interactions, and the held-out test interactions.

- ``train`` channel (required) defines the users and items the model knows.
- ``test`` (or ``validation``) channel, when given, is the held-out set; rows whose user or item never appears in
  training are reported and skipped. Without one, each user's latest interaction (by timestamp; a random one when
  there are no timestamps) is held out — the leave-one-out protocol of the NCF paper.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from recsys.data.ids import IdIndex
from recsys.data.interactions import Interactions
from recsys.data.presets import CleanFrame, load_channel
from recsys.errors import UserError
from recsys.hyperparameters import Hyperparameters
from recsys.paths import SageMakerPaths

log = logging.getLogger(__name__)

TRAIN_CHANNEL = "train"
EVAL_CHANNELS = ("test", "validation")


@dataclass
class TrainingData:
    users: IdIndex
    items: IdIndex
    all: Interactions  # the whole train channel: the artifact's seen lists and popularity come from here
    train: Interactions  # what the model is fitted on (all minus the leave-one-out hold-out)
    test: Interactions  # held-out pairs the evaluator ranks
    report: dict = field(default_factory=dict)


def load_training_data(paths: SageMakerPaths, hp: Hyperparameters) -> TrainingData:
    train_dir = paths.channel(TRAIN_CHANNEL)
    if not train_dir.exists():
        present = sorted(p.name for p in paths.data_dir.iterdir()) if paths.data_dir.is_dir() else []
        raise UserError(
            f"no `train` channel: {train_dir} does not exist (channels given: {present or 'none'}); "
            "start the job with a channel named `train`"
        )
    train = load_channel(train_dir, TRAIN_CHANNEL, hp)
    eval_name = next((c for c in EVAL_CHANNELS if paths.channel(c).exists()), None)
    evaluation = load_channel(paths.channel(eval_name), eval_name, hp) if eval_name else None
    return build(train, evaluation, hp, eval_name)


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


def build(
    train: CleanFrame, evaluation: CleanFrame | None, hp: Hyperparameters, eval_name: str | None = None
) -> TrainingData:
    users, items, user_codes, item_codes = _index(train.frame)
    everything = _interactions(train.frame, user_codes, item_codes, len(users), len(items), train.has_timestamps)
    report: dict = {"train": train.report(), "n_users": len(users), "n_items": len(items)}

    test = None
    if evaluation is not None:
        test_users = users.lookup_normalized(evaluation.frame["user"])
        test_items = items.lookup_normalized(evaluation.frame["item"])
        unknown_user, unknown_item = test_users < 0, (test_items < 0) & (test_users >= 0)
        skipped = {"unknown user": int(unknown_user.sum()), "unknown item": int(unknown_item.sum())}
        known = ~(unknown_user | unknown_item)
        report[eval_name] = {**evaluation.report(), "rows_skipped": {k: v for k, v in skipped.items() if v}}
        if any(skipped.values()):
            log.warning(
                "%s channel: skipped %d row(s) with a user never seen in training and %d with an unknown item",
                eval_name,
                skipped["unknown user"],
                skipped["unknown item"],
            )
        if known.any():
            frame = evaluation.frame[known]
            test = _interactions(
                frame, test_users[known], test_items[known], len(users), len(items), evaluation.has_timestamps
            )
            report["split"] = f"{eval_name} channel"
        else:
            log.warning(
                "%s channel has no usable rows (all users/items unknown); holding out from train instead", eval_name
            )
            report["split_note"] = f"{eval_name} channel had no rows with known users and items"
    if test is None:
        train_part, test = leave_one_out(everything, hp.seed)
        report["split"] = (
            "leave-one-out by timestamp"
            if everything.timestamps is not None
            else "leave-one-out, random item (no timestamps)"
        )
    else:
        train_part = everything
    if len(test) == 0:
        raise UserError(
            "nothing to evaluate on: no user has 2 or more interactions to hold one out, and no `test` channel "
            "was given; add a `test` or `validation` channel"
        )
    report["train_interactions"] = len(train_part)
    report["test_interactions"] = len(test)
    return TrainingData(users, items, everything, train_part, test, report)


def leave_one_out(data: Interactions, seed: int) -> tuple[Interactions, Interactions]:
    """Hold out each user's latest interaction (ties and missing timestamps broken by a seeded random draw).

    Users with a single interaction keep it in training (they could not be trained on otherwise).
    """
    rng = np.random.default_rng(seed)
    tiebreak = rng.random(len(data))
    time = data.timestamps if data.timestamps is not None else np.zeros(len(data))
    order = np.lexsort((tiebreak, time, data.users))  # by user, then time, then random
    sorted_users = data.users[order]
    last_of_user = np.r_[sorted_users[1:] != sorted_users[:-1], True]
    counts = np.bincount(data.users, minlength=data.n_users)
    held = order[last_of_user & (counts[sorted_users] >= 2)]
    mask = np.zeros(len(data), dtype=bool)
    mask[held] = True
    return data.subset(~mask), data.subset(np.sort(held))
