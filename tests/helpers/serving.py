"""A small, real ``Recommender`` for serving tests: dot products over given factors (numpy), and helpers to build a
``LoadedModel`` or a model directory from it (through the real ``recsys.artifact.write_model``); ``Server``: the real
``serve`` as a subprocess on a free port, for the stack tests."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import requests

from helpers.net import free_port  # noqa: F401  (the serving tests take it from here)
from recsys.artifact import LoadedModel
from recsys.data.ids import IdIndex
from recsys.models.base import Recommender
from recsys.training.hyperparameters import parse

ALGORITHM = "dot"
SERVE = Path(sys.executable).parent / "serve"


class DotRecommender(Recommender):
    """score(u, i) = user_factors[u] · item_factors[i]."""

    algorithm = ALGORITHM

    def __init__(self, hp, n_users: int, n_items: int, user_factors=None, item_factors=None):
        super().__init__(hp, n_users, n_items)
        self.user_factors = np.asarray(user_factors, dtype=np.float32)
        self.item_factors = np.asarray(item_factors, dtype=np.float32)

    def fit(self, data, ctx):  # pragma: no cover - serving tests never train it
        raise NotImplementedError

    def score(self, users, items):
        users = np.asarray(users, dtype=np.int64)
        items = np.asarray(items, dtype=np.int64)
        return np.einsum("nd,nmd->nm", self.user_factors[users], self.item_factors[items]).astype(np.float32)

    def score_all(self, users):
        return self.user_factors[np.asarray(users, dtype=np.int64)] @ self.item_factors.T

    def item_vectors(self):
        return self.item_factors

    def save(self, directory: Path) -> list[str]:
        np.savez(directory / "dot.npz", users=self.user_factors, items=self.item_factors)
        return ["dot.npz"]

    @classmethod
    def load(cls, directory, hp, n_users, n_items, device=None):
        with np.load(Path(directory) / "dot.npz") as f:
            return cls(hp, n_users, n_items, f["users"], f["items"])


def csr(rows: list[list[int]]) -> tuple[np.ndarray, np.ndarray]:
    indptr = np.cumsum([0] + [len(r) for r in rows]).astype(np.int64)
    indices = np.asarray([i for r in rows for i in r], dtype=np.int64)
    return indptr, indices


def small_model(
    user_factors, item_factors, seen: list[list[int]], user_ids=None, item_ids=None, popularity=None
) -> LoadedModel:
    uf, itf = np.asarray(user_factors, np.float32), np.asarray(item_factors, np.float32)
    n_users, n_items = len(uf), len(itf)
    users = IdIndex(user_ids or [f"u{i}" for i in range(n_users)])
    items = IdIndex(item_ids or [f"i{i}" for i in range(n_items)])
    indptr, indices = csr(seen)
    if popularity is None:
        popularity = np.bincount(indices, minlength=n_items)
    rec = DotRecommender(parse({"algorithm": "ncf"}), n_users, n_items, uf, itf)
    manifest = {"algorithm": ALGORITHM, "n_users": n_users, "n_items": n_items, "schema_version": 1}
    return LoadedModel(manifest, rec, users, items, indptr, indices, np.asarray(popularity))


def random_model(n_users: int = 50, n_items: int = 200, dim: int = 8, seed: int = 0) -> LoadedModel:
    rng = np.random.default_rng(seed)
    seen = [sorted(rng.choice(n_items, size=rng.integers(0, 15), replace=False).tolist()) for _ in range(n_users)]
    return small_model(
        rng.normal(size=(n_users, dim)),
        rng.normal(size=(n_items, dim)),
        seen,
        user_ids=[str(100 + i) for i in range(n_users)],
        item_ids=[str(1000 + i) for i in range(n_items)],
    )


# ---------------------------------------------------------------------------------------------- the real stack


class Server:
    def __init__(self, base: Path, **env: str):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = base / f"serve-{self.port}.log"
        environment = dict(
            os.environ, SAGEMAKER_BASE_DIR=str(base), SAGEMAKER_BIND_TO_PORT=str(self.port), MODEL_SERVER_WORKERS="2"
        )
        environment.update(env)
        environment.pop("RECSYS_MODEL_DIR", None)
        self.started = time.perf_counter()
        self.proc = subprocess.Popen(
            [str(SERVE)], env=environment, stdout=self.log.open("wb"), stderr=subprocess.STDOUT, start_new_session=True
        )

    def wait_healthy(self, timeout: float = 60) -> float:
        while time.perf_counter() - self.started < timeout:
            assert self.proc.poll() is None, f"serve exited with {self.proc.returncode}:\n{self.log.read_text()}"
            try:
                if requests.get(f"{self.url}/ping", timeout=2).status_code == 200:
                    return time.perf_counter() - self.started
            except requests.ConnectionError:
                pass
            time.sleep(0.05)
        raise AssertionError(f"no /ping 200 within {timeout} s:\n{self.log.read_text()}")

    def gunicorn_workers(self) -> list[int]:
        """The gunicorn master's children (the master is serve's child running ``-m gunicorn``)."""
        for pid in Path(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children").read_text().split():
            if b"gunicorn" in Path(f"/proc/{pid}/cmdline").read_bytes():
                return [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
        raise AssertionError(f"no gunicorn master under serve:\n{self.log.read_text()}")

    def children(self) -> list[int]:
        """All descendants (gunicorn master and workers, nginx master and workers)."""
        pids, todo = [], [self.proc.pid]
        while todo:
            pid = todo.pop()
            try:
                kids = [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
            except OSError:
                kids = []
            pids += kids
            todo += kids
        return pids

    def kill(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()


def ping_until(srv: Server, status: int, timeout: float) -> list[str]:
    """/ping until it answers ``status``; the 503 error messages seen on the way (and at the end)."""
    seen: list[str] = []
    deadline = time.perf_counter() + timeout
    while time.perf_counter() < deadline:
        assert srv.proc.poll() is None, srv.log.read_text()
        try:
            response = requests.get(f"{srv.url}/ping", timeout=2)
        except requests.ConnectionError:
            time.sleep(0.05)
            continue
        if response.status_code == 503:
            seen.append(response.json()["error"])
        if response.status_code == status:
            return seen
        time.sleep(0.05)
    raise AssertionError(f"no /ping {status} within {timeout} s (saw {seen[-3:]}):\n{srv.log.read_text()}")


def invocations_all_succeed(srv: Server, user: str, n: int = 24) -> list[int]:
    statuses: list[int] = []

    def ask():
        for _ in range(n // 8):
            statuses.append(
                requests.post(f"{srv.url}/invocations", json={"users": [user], "k": 3}, timeout=10).status_code
            )

    threads = [threading.Thread(target=ask) for _ in range(8)]  # concurrent: nginx spreads them over workers
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return statuses
