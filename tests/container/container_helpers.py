"""Plain helpers for the container tests: the docker CLI, /opt/ml trees, HTTP polling, free ports.

Everything talks to the real engine through the ``docker`` CLI (``DOCKER_HOST`` decides which: Docker, or podman's
Docker API on this workplace). Containers the tests start are named ``recsys-test-*`` and removed afterwards.
"""

from __future__ import annotations

import csv
import json
import os
import socket
import subprocess
import time
import urllib.error
import urllib.request
import uuid
from dataclasses import dataclass
from pathlib import Path

from helpers.algorithms import FAST as FAST_SETTINGS
from helpers.net import free_port  # noqa: F401  (the container tests take it from here)
from helpers.opt_ml import FIXTURE, ROOT, as_sagemaker_strings  # noqa: F401  (ROOT: for the container tests)
from helpers.opt_ml import make_opt_ml as shared_make_opt_ml

DOCKERFILE = ROOT / "container" / "Dockerfile"
DEFAULT_IMAGE = "recsys-test:cpu"
NAME_PREFIX = "recsys-test"

# The LotteON post's metric definitions; `train` prints lines these regexes scrape.
METRIC_DEFINITIONS = [
    {"Name": "HR", "Regex": "HR=(.*?);"},
    {"Name": "NDCG", "Regex": "NDCG=(.*?);"},
    {"Name": "Loss", "Regex": "Loss=(.*?);"},
]
# Small, fast settings on the fixture (a few seconds of training each).
# Each algorithm's fast settings from the registry, as the strings SageMaker delivers.
FAST = {name: as_sagemaker_strings(settings) for name, settings in FAST_SETTINGS.items()}


def require_engine() -> bool:
    """Under CI (or RECSYS_REQUIRE_CONTAINER=1) a missing engine or tool fails the run instead of skipping."""
    return os.environ.get("RECSYS_REQUIRE_CONTAINER", "") == "1" or os.environ.get("CI", "").lower() == "true"


def torch_index_build_args() -> list[str]:
    """Build args for the torch index: RECSYS_TORCH_INDEX_URL if set; ``none`` when download.pytorch.org cannot be
    resolved (offline builders: torch then comes from the indexes and find-links pip is configured with inside the
    build, e.g. a local ``+cpu`` wheel the base image carries; the Dockerfile refuses a CUDA torch in the CPU
    variant); else nothing (the Dockerfile's default, PyTorch's CPU wheel index)."""
    url = os.environ.get("RECSYS_TORCH_INDEX_URL")
    if url is None:
        try:
            socket.getaddrinfo("download.pytorch.org", 443)
        except OSError:
            url = "none"
    return ["--build-arg", f"TORCH_INDEX_URL={url}"] if url else []


def docker(*args: str, timeout: float = 120, check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run(["docker", *args], capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"docker {' '.join(args)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return proc


def unique_name(kind: str) -> str:
    return f"{NAME_PREFIX}-{kind}-{uuid.uuid4().hex[:8]}"


@dataclass
class Run:
    code: int
    logs: str
    seconds: float


def run_container(image: str, *args: str, volumes: dict[Path, str] | None = None, timeout: float = 600) -> Run:
    """``docker run`` in the foreground and return its exit code and output.

    Not ``--rm``: with podman's Docker API, ``docker run --rm`` reports exit code 0 whatever the process returned
    (the container is gone before the CLI asks), so the container is removed after its code has been read.
    """
    name = unique_name("run")
    cmd = ["run", "--name", name]
    for host, target in (volumes or {}).items():
        cmd += ["-v", f"{host}:{target}"]
    started = time.monotonic()
    try:
        proc = docker(*cmd, image, *args, timeout=timeout, check=False)
    finally:
        docker("rm", "-f", name, check=False)
    return Run(proc.returncode, proc.stdout + proc.stderr, time.monotonic() - started)


def make_opt_ml(base: Path, hyperparameters: dict[str, str], channels: dict[str, Path] | None = None) -> Path:
    """``helpers.opt_ml.make_opt_ml`` for a container: channel directories get an inputdataconfig.json entry, and the
    tree is world-writable (the container runs as root; the host user must still be able to clean up)."""
    shared_make_opt_ml(base, hyperparameters, channels)
    if channels is not None:
        config = {
            name: {"ContentType": "text/csv", "TrainingInputMode": "File", "RecordWrapperType": "None"}
            for name in channels
        }
        (base / "input/config/inputdataconfig.json").write_text(json.dumps(config))
    base.chmod(0o777)
    return base


def split_fixture(target: Path) -> tuple[Path, Path]:
    """Split the fixture's Online Retail CSV into ``train/`` and ``test/`` channel directories: each customer's
    latest valid purchase goes to test, everything else (messy rows included) to train."""
    source = next((FIXTURE / "input/data/train").glob("*.csv"))
    with source.open(newline="") as f:
        reader = csv.DictReader(f)
        header = reader.fieldnames
        rows = list(reader)

    def valid(row: dict) -> bool:
        try:
            quantity = float(row["Quantity"])
        except ValueError:
            return False
        return bool(row["CustomerID"].strip()) and not row["InvoiceNo"].startswith("C") and quantity > 0

    latest: dict[str, int] = {}
    for i, row in enumerate(rows):
        if valid(row):
            customer = row["CustomerID"]
            if customer not in latest or row["InvoiceDate"] >= rows[latest[customer]]["InvoiceDate"]:
                latest[customer] = i
    test_rows = set(latest.values())
    out = {}
    for channel, keep in (("train", lambda i: i not in test_rows), ("test", lambda i: i in test_rows)):
        directory = target / channel
        directory.mkdir(parents=True)
        with (directory / f"online_retail_{channel}.csv").open("w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=header)
            writer.writeheader()
            writer.writerows(row for i, row in enumerate(rows) if keep(i))
        out[channel] = directory
    return out["train"], out["test"]


def http(method: str, url: str, body: bytes | None = None, headers: dict | None = None, timeout: float = 10):
    """(status, body bytes, headers); HTTP errors are returned, not raised."""
    request = urllib.request.Request(url, data=body, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as resp:
            return resp.status, resp.read(), dict(resp.headers)
    except urllib.error.HTTPError as err:
        return err.code, err.read(), dict(err.headers)


def wait_for_ping(port: int, deadline_s: float, alive=lambda: True) -> float:
    """Seconds until GET /ping answered 200; raises TimeoutError after ``deadline_s``."""
    started = time.monotonic()
    while time.monotonic() - started < deadline_s:
        try:
            status, _, _ = http("GET", f"http://127.0.0.1:{port}/ping", timeout=2)
            if status == 200:
                return time.monotonic() - started
        except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
            pass
        if not alive():
            raise RuntimeError("the serving container exited before /ping answered 200")
        time.sleep(0.1)
    raise TimeoutError(f"/ping did not answer 200 within {deadline_s} s")


def model_ids(model_dir: Path) -> tuple[list[str], list[str]]:
    """(user ids, item ids) the model knows, read from its artifact."""
    import numpy as np

    with np.load(model_dir / "ids.npz", allow_pickle=False) as ids:
        return [str(u) for u in ids["users"]], [str(i) for i in ids["items"]]


def assert_top_k(answer: dict, user: str, k: int) -> None:
    """The documented response shape for a top-K request for one known user."""
    assert set(answer) >= {"predictions"}, answer
    (prediction,) = answer["predictions"]
    assert str(prediction["user"]) == str(user), prediction
    assert len(prediction["items"]) == k, prediction
    assert len(prediction["scores"]) == k, prediction
    assert len(set(map(str, prediction["items"]))) == k, prediction
    assert all(isinstance(s, float | int) for s in prediction["scores"]), prediction
    assert prediction["scores"] == sorted(prediction["scores"], reverse=True), prediction
    assert not prediction.get("cold_start", False), prediction


def _short(reference: str) -> str:
    for prefix in ("docker.io/library/", "localhost/"):
        reference = reference.removeprefix(prefix)
    return reference


def remove_containers_of(image: str) -> None:
    """Remove every container created from ``image`` (our test tag only), whichever build the tag pointed to then:
    SDK local mode leaves its compose containers behind."""
    proc = docker("ps", "-a", "--no-trunc", "--format", "{{.ID}} {{.Image}}", check=False)
    ids = []
    for line in proc.stdout.splitlines():
        parts = line.split()
        if len(parts) == 2 and _short(parts[1]) == _short(image):
            ids.append(parts[0])
    if ids:
        docker("rm", "-f", *ids, check=False, timeout=300)


def engine_is_podman() -> bool:
    proc = docker("version", "--format", "{{json .Server.Components}}", check=False)
    return "podman" in proc.stdout.lower()
