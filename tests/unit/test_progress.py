"""Progress lines: rate limiting, what a line says, that no metric regex matches one, and the evaluator's and the
data loader's lines."""

from __future__ import annotations

import logging
import re

import numpy as np
import pytest

from recsys.data.interactions import Interactions
from recsys.platform.progress import Progress, duration, format_line, interval_seconds
from recsys.training import evaluation
from recsys.training.evaluation import Evaluator, PopularityScorer
from recsys.training.hyperparameters import METRIC_DEFINITIONS


class Clock:
    def __init__(self):
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_lines_are_rate_limited_to_one_per_interval():
    clock, lines = Clock(), []
    progress = Progress("ncf epoch 1/1", 1000, "samples", every=30, emit=lines.append, clock=clock)
    for step in range(1, 101):  # 100 updates over 99 s: a line at 30, 60 and 90 s
        clock.now = 100.0 + step - 1
        progress.update(step * 10)
    assert len(lines) == 3 and progress.lines == 3
    assert progress.update(1000, force=True) and len(lines) == 4


def test_a_line_says_phase_share_rate_and_eta():
    line = format_line("ncf neumf epoch 2/20", 250_000, 1_000_000, "samples", 10.0, "mean loss 0.4321")
    assert line.startswith("progress: ncf neumf epoch 2/20: 25.0% (250,000/1,000,000 samples)")
    assert "25,000 samples/s" in line and "ETA 30s" in line and "mean loss 0.4321" in line
    assert duration(75) == "1m15s" and duration(3725) == "1h02m"


@pytest.mark.parametrize("note", ["", "Loss=0.5; HR=0.3; NDCG=0.1;", "validation:HR@10=0.5;"])
def test_no_metric_regex_matches_a_progress_line(note):
    line = format_line("phase HR=1;", 5, 10, "rows", 1.0, note)
    assert "=" not in line
    for definition in METRIC_DEFINITIONS:
        assert re.search(definition["Regex"], line) is None


def test_interval_comes_from_the_environment(monkeypatch):
    monkeypatch.setenv("RECSYS_PROGRESS_SECONDS", "5")
    assert interval_seconds() == 5
    monkeypatch.delenv("RECSYS_PROGRESS_SECONDS")
    assert interval_seconds() == 30


def interactions(n_users: int, n_items: int, per_user: int, seed: int) -> Interactions:
    rng = np.random.default_rng(seed)
    users = np.repeat(np.arange(n_users), per_user)
    items = np.concatenate([rng.choice(n_items, per_user, replace=False) for _ in range(n_users)])
    return Interactions(users, items, np.ones(len(users)), None, n_users, n_items)


def test_sampled_evaluation_in_blocks_gives_the_same_metrics_and_logs_progress(monkeypatch, caplog):
    train, test = interactions(300, 200, 5, 0), interactions(300, 200, 1, 1)
    scorer = PopularityScorer(train.item_popularity() + np.arange(200) * 1e-3)
    whole = Evaluator(train, test, 10, 49, 3).sampled(scorer)
    monkeypatch.setattr(evaluation, "_SAMPLED_ROWS_PER_BLOCK", 64)
    monkeypatch.setenv("RECSYS_PROGRESS_SECONDS", "0")
    with caplog.at_level(logging.INFO, logger="recsys.progress"):
        blocked = Evaluator(train, test, 10, 49, 3).sampled(scorer)
    assert blocked == whole
    lines = [r.getMessage() for r in caplog.records if r.name == "recsys.progress"]
    assert len(lines) == 5 and lines[-1].startswith("progress: evaluation (sampled): 100.0% (300/300 users)")


def test_full_ranking_ranks_a_seeded_sample_of_users_above_the_cap(monkeypatch):
    train, test = interactions(300, 50, 5, 0), interactions(300, 50, 2, 1)
    scorer = PopularityScorer(train.item_popularity())
    all_users = Evaluator(train, test, 10, 20, 3).full_ranking(scorer)
    monkeypatch.setattr(evaluation, "FULL_RANKING_MAX_USERS", 100)
    evaluator = Evaluator(train, test, 10, 20, 3)
    chosen = evaluator.full_ranking_users()
    assert len(chosen) == 100 and np.array_equal(chosen, evaluator.full_ranking_users())  # seeded
    capped = evaluator.full_ranking(scorer)
    # Same metric over the chosen users only, computed from the uncapped evaluator's per-user definition.
    sub = Evaluator(train, test.subset(np.isin(test.users, chosen)), 10, 20, 3).full_ranking(scorer)
    assert capped == sub and set(capped) == set(all_users)


def test_loading_a_channel_logs_rows_per_second(tmp_path, caplog):
    from recsys.data.readers import read_channel

    for part in range(3):
        (tmp_path / f"part-{part}.csv").write_text("user,item\n" + "".join(f"u{i},i{i}\n" for i in range(10)))
    with caplog.at_level(logging.INFO):
        table = read_channel(tmp_path, "train", header=True)
    assert len(table.frame) == 30
    assert any("read 30 rows from 3 file(s)" in r.getMessage() and "rows/s" in r.getMessage() for r in caplog.records)


class FakeTracker:
    """What ``FitProgress`` reads from a SparkContext's status tracker."""

    def __init__(self):
        self.jobs = {1: "SUCCEEDED"}

    def getActiveStageIds(self):
        return [7]

    def getStageInfo(self, stage_id):
        return type("Stage", (), {"name": "map at ALS.scala:1018", "numCompletedTasks": 3, "numTasks": 8})()

    def getJobIdsForGroup(self, group):
        return list(self.jobs)

    def getJobInfo(self, job_id):
        return type("Job", (), {"status": self.jobs[job_id]})()


def test_als_status_line_counts_jobs_of_this_fit_and_shows_active_stages():
    from recsys.models.als.progress import status_line

    tracker = FakeTracker()
    before = set(tracker.jobs)
    tracker.jobs.update({2: "SUCCEEDED", 3: "RUNNING"})
    line = status_line("als fit (10 iterations)", tracker, before, started=0.0)
    assert line.startswith("progress: als fit (10 iterations): 1 Spark jobs done, stage 7 map 3/8 tasks, elapsed")
