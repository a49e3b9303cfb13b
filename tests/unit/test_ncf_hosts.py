"""NCF across two "hosts" on this machine: two real `train` processes (``python -m recsys.training``) whose
resourceconfig.json name two hosts on the loopback interface, so they go through the multi-host path of a SageMaker
job (LeaderBeacon / LeaderLink, ``TorchDistributed``, a gloo group over TCP). Checks: both ranks train, the HR
matches one process's on the same data and seed, the selection and the refit both run on both hosts, and a rank
that dies on the worker host fails the job with that host's name; plus the rank layout."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from helpers.net import free_port
from helpers.opt_ml import make_opt_ml
from recsys.models.ncf.hosts import layout
from recsys.platform.errors import UserError

HOSTS = ["localhost", "zz-worker"]  # sorted: localhost leads, and its name resolves on the worker
SEED = 3
# Few, larger steps: every step of two ranks is an all-reduce, slow on a loaded shared machine.
HYPERPARAMETERS = {"algorithm": "ncf", "preset": "online_retail", "epochs": 2, "batch_size": 1024, "seed": SEED}
HR_TOLERANCE = 0.015
SELECTED_HR = re.compile(r"final=selected; HR=([0-9.]+);")


def opt_ml(base: Path, host: str, hosts: list[str], hyperparameters: dict) -> Path:
    base = make_opt_ml(base, {k: str(v) for k, v in hyperparameters.items()})
    resource = {"current_host": host, "hosts": hosts, "network_interface_name": "lo"}
    (base / "input/config/resourceconfig.json").write_text(json.dumps(resource))
    return base


def start(base: Path, env: dict, cpu: int = 0) -> tuple[subprocess.Popen, Path]:
    """A `train` process on one core of this machine (each "host" its own, as on separate machines)."""
    log = base / "train.log"
    environ = {**os.environ, **env, "SAGEMAKER_BASE_DIR": str(base), "PYTHONUNBUFFERED": "1"}
    cores = sorted(os.sched_getaffinity(0))
    core = {cores[cpu % len(cores)]}
    with log.open("w") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "recsys.training"],
            env=environ,
            stdout=out,
            stderr=out,
            preexec_fn=lambda: os.sched_setaffinity(0, core),
        )
    return proc, log


def two_hosts(tmp_path: Path, hyperparameters: dict) -> list[tuple[subprocess.Popen, Path, Path]]:
    env = {"RECSYS_COORDINATION_PORT": str(free_port()), "RECSYS_DISTRIBUTED_PORT": str(free_port())}
    jobs = []
    for cpu, host in enumerate(HOSTS):
        base = opt_ml(tmp_path / host, host, HOSTS, hyperparameters)
        jobs.append((*start(base, env, cpu), base))
    return jobs


def finish(proc: subprocess.Popen, timeout: float = 300) -> int:
    try:
        return proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        raise


def selected_hr(text: str) -> float:
    found = SELECTED_HR.findall(text)
    assert len(found) == 1, text[-3000:]
    return float(found[0])


def test_two_hosts_train_together_and_match_one_host(tmp_path):
    single = opt_ml(tmp_path / "single", "localhost", ["localhost"], HYPERPARAMETERS)
    proc, single_log = start(single, {})
    assert finish(proc) == 0, single_log.read_text()[-3000:]
    started = time.monotonic()
    (leader, leader_log, leader_base), (worker, worker_log, _) = two_hosts(tmp_path, HYPERPARAMETERS)
    codes = [finish(leader), finish(worker)]
    seconds = time.monotonic() - started
    leader_text, worker_text = leader_log.read_text(), worker_log.read_text()
    assert codes == [0, 0], leader_text[-3000:] + "\n----\n" + worker_text[-3000:]
    for phase in ("select", "refit"):  # both runs of the fit were shared
        assert re.search(rf"rank 0/2 on host localhost .* phase {phase}", leader_text), leader_text[-3000:]
        assert re.search(rf"rank 1/2 on host zz-worker .* phase {phase}", worker_text), worker_text[-3000:]
    assert "rank 1 on host zz-worker: done" in worker_text and "host zz-worker done" in worker_text
    assert not SELECTED_HR.search(worker_text), "only the leader reports"
    one, two = selected_hr(single_log.read_text()), selected_hr(leader_text)
    print(f"\nseed {SEED}: HR one host {one:.4f}, two hosts {two:.4f}; two-host job {seconds:.1f} s")
    assert abs(one - two) <= HR_TOLERANCE
    manifest = json.loads((leader_base / "model/manifest.json").read_text())
    assert manifest["training"]["info"]["world_size"] == 2


def rank_process(parent: int) -> int:
    """The pid of a spawned rank under ``parent`` (a `train` process)."""
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            ppid = int(stat.read_text().rsplit(")", 1)[1].split()[1])
            cmdline = (stat.parent / "cmdline").read_bytes()
        except (OSError, IndexError, ValueError):
            continue
        if ppid == parent and b"spawn_main" in cmdline:
            return int(stat.parent.name)
    raise AssertionError(f"no rank process under {parent}")


def test_a_rank_that_dies_on_the_worker_host_fails_the_job(tmp_path):
    (leader, leader_log, leader_base), (worker, worker_log, _) = two_hosts(tmp_path, {**HYPERPARAMETERS, "epochs": 50})
    deadline = time.monotonic() + 240
    while "rank 1/2 on host zz-worker" not in worker_log.read_text():
        assert time.monotonic() < deadline and worker.poll() is None, worker_log.read_text()[-3000:]
        time.sleep(0.2)
    os.kill(rank_process(worker.pid), signal.SIGKILL)
    codes = [finish(leader, 120), finish(worker, 120)]
    leader_text = leader_log.read_text()
    assert codes[0] == 1 and codes[1] != 0, (codes, leader_text[-3000:], worker_log.read_text()[-3000:])
    reason = (leader_base / "output/failure").read_text()
    assert "zz-worker" in reason and "rank 1" in reason and "signal 9" in reason, reason
    assert not (leader_base / "model/manifest.json").exists()
    assert not SELECTED_HR.search(leader_text)


def test_the_layout_numbers_ranks_host_by_host():
    offers = {"a": {"gpus": 2, "cpus": 8}, "b": {"gpus": 2, "cpus": 8}}
    gpu = layout(offers, torch.device("cuda"))
    assert gpu["world_size"] == 4 and gpu["backend"] == "nccl"
    assert [(h["first"], h["count"]) for h in gpu["hosts"].values()] == [(0, 2), (2, 2)]
    cpu = layout(offers, torch.device("cpu"))
    assert (
        cpu["world_size"] == 2 and cpu["backend"] == "gloo" and cpu["hosts"]["b"] == {"first": 1, "count": 1, "cpus": 8}
    )
    with pytest.raises(UserError, match="host b has no GPU"):
        layout({"a": {"gpus": 1}, "b": {"gpus": 0}}, torch.device("cuda"))
