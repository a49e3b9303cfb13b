"""ALS and NCF across two hosts: a Spark standalone cluster, and a torch.distributed (gloo) group, spanning the
job's containers.

- SDK v2 local mode, ``instance_count=2``: executors on both hosts ran tasks, both containers exit 0, the model
  serves, and the validation HR matches one host's on the same data and seed.
- SDK v2 local mode: the worker host's Spark worker dies; the job fails, the leader's failure reason names that
  host, both containers exit non-zero and no model is written.
- Two containers started by hand on one network with ``S3DistributionType=ShardedByS3Key`` (local mode refuses
  sharded channels): each host's shard reaches the model.
- NCF, SDK v2 local mode, ``instance_count=2``: a rank on each host trained (selection and refit), both containers
  exit 0, the model serves, and the validation HR matches one host's; a rank killed on the worker host fails the
  job with a reason naming that host.

Exit codes are read from the engine (``docker inspect``): docker-compose on podman can lose them.
"""

from __future__ import annotations

import contextlib
import csv
import json
import os
import re
import signal
import tarfile
import threading
import time
import uuid
from pathlib import Path

import pytest

from .container_helpers import (
    FAST,
    FIXTURE,
    assert_top_k,
    docker,
    make_opt_ml,
    model_ids,
    run_container,
)
from .test_container_sdk_v2 import FINAL_METRICS, Host, captured_stdout, compose_hosts, two_host_estimator

pytestmark = pytest.mark.container

# Ten iterations, one fit: Spark ALS seeds its initial factors per block, and two hosts have twice one host's cores
# (so twice its blocks); after 3 iterations (FAST) that start still shows (HR 0.147 on 2 blocks, 0.130 on 4 on the
# fixture), after 10 it has washed out. refit=false: the selected model is the one measured.
HYPERPARAMETERS = {**FAST["als"], "max_iter": "10", "refit": "false"}
HR_TOLERANCE = 0.015  # the target: two hosts give one host's HR within this
EXECUTOR_TASKS = re.compile(r"Spark executor (\S+) on host (\S+) \((\S+)\): (\d+) tasks")
SPARK_WORKER_PID = re.compile(r"Spark worker started \(pid (\d+)\)")
WORKER_CLASS = "org.apache.spark.deploy.worker.Worker"
# NCF: few, large steps (each one an all-reduce between the containers); seeded.
NCF_HYPERPARAMETERS = {**FAST["ncf"], "batch_size": "1024", "seed": "3"}
NCF_RANK_1 = re.compile(r"rank 1/2 on host (\S+) ")
RANK_PROCESS = b"spawn_main"  # a rank is a multiprocessing "spawn" child of `train`
TRAIN_CHANNEL = FIXTURE / "input/data/train"


def selected_hr(log: str) -> float:
    found = re.findall(r"final=selected; HR=([0-9.]+);", log)
    assert len(found) == 1, f"expected one final=selected line, found {len(found)}"
    return float(found[0])


def executor_tasks(leader_log: str) -> dict[str, int]:
    """Tasks each host's executor finished, from the leader's log."""
    tasks: dict[str, int] = {}
    for _, host, _, count in EXECUTOR_TASKS.findall(leader_log):
        tasks[host] = tasks.get(host, 0) + int(count)
    return tasks


@pytest.fixture(scope="module")
def one_host(image: str, tmp_path_factory: pytest.TempPathFactory) -> tuple[float, set[str]]:
    """(validation HR, users) of a one-host ALS job on the fixture with the same settings."""
    base = make_opt_ml(tmp_path_factory.mktemp("one-host") / "opt_ml", HYPERPARAMETERS)
    run = run_container(image, "train", volumes={base: "/opt/ml"})
    assert run.code == 0, run.logs[-3000:]
    print(f"\none-host ALS job: {run.seconds:.1f} s")
    return selected_hr(run.logs), set(model_ids(base / "model")[0])


def test_als_trains_on_both_hosts_and_serves(image: str, sdk_env, one_host, tmp_path: Path) -> None:
    from sagemaker.deserializers import JSONDeserializer
    from sagemaker.serializers import JSONSerializer

    estimator, _, root = two_host_estimator(image, HYPERPARAMETERS, tmp_path)
    started = time.monotonic()
    with captured_stdout() as logs:
        estimator.fit({"train": f"file://{TRAIN_CHANNEL}"}, job_name="recsys-test-als-two-hosts")
    print(f"\nSDK v2 local two-host ALS fit: {time.monotonic() - started:.1f} s")
    leader, worker = compose_hosts(root)
    states = {host.name: host.state() for host in (leader, worker)}
    assert states == {leader.name: ("exited", 0), worker.name: ("exited", 0)}, states
    leader_log, worker_log = leader.logs(), worker.logs()
    tasks = executor_tasks(leader_log)
    assert set(tasks) == {leader.name, worker.name} and min(tasks.values()) > 0, tasks
    assert SPARK_WORKER_PID.search(worker_log) and f"host {worker.name} done" in worker_log
    assert len(re.findall(FINAL_METRICS, logs.getvalue())) == 1, "only the leader reports metrics"
    hr, users = selected_hr(leader_log), one_host[1]
    assert abs(hr - one_host[0]) <= HR_TOLERANCE, f"two hosts HR {hr}, one host {one_host[0]}"

    model_tar = Path(estimator.model_data.removeprefix("file://"))
    with tarfile.open(model_tar) as tar:
        tar.extractall(tmp_path / "model", filter="data")
    manifest = json.loads((tmp_path / "model/manifest.json").read_text())
    assert {e["host"] for e in manifest["training"]["info"]["executors"]} == {leader.name, worker.name}
    assert set(model_ids(tmp_path / "model")[0]) == users
    predictor = estimator.deploy(
        initial_instance_count=1, instance_type="local", serializer=JSONSerializer(), deserializer=JSONDeserializer()
    )
    try:
        user = sorted(users)[0]
        assert_top_k(predictor.predict({"users": [user], "k": 5}), user, 5)
    finally:
        predictor.delete_endpoint()


def train_child_host_pid(container: str, marker: bytes) -> int:
    """A child of ``container``'s ``train`` whose command line holds ``marker`` (the Spark worker JVM, an NCF
    rank), as a pid of this machine: ``docker exec`` is refused by this workplace's rootful podman (rlimits), but
    the engine's processes are visible here."""
    root = docker("inspect", "--format", "{{.State.Pid}}", container).stdout.strip()
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            parent = stat.read_text().rsplit(")", 1)[1].split()[1]
            cmdline = (stat.parent / "cmdline").read_bytes()
        except (OSError, IndexError):
            continue
        if parent == root and marker in cmdline:
            return int(stat.parent.name)
    raise AssertionError(f"no {marker!r} process under {container}'s train (pid {root})")


class KillOnWorkerHost(threading.Thread):
    """SIGKILL a child process of the worker host's ``train`` once its log matches ``started`` (a host whose Spark
    worker, or NCF rank, dies)."""

    def __init__(self, root: Path, started: re.Pattern, marker: bytes, deadline_s: float = 300):
        super().__init__(name="kill-on-worker-host", daemon=True)
        self.root, self.started, self.marker, self.deadline_s = root, started, marker, deadline_s
        self.killed: Host | None = None
        self.error: str | None = None

    def run(self) -> None:
        started, hosts = time.monotonic(), []
        try:
            while time.monotonic() - started < self.deadline_s:
                try:
                    hosts = hosts or compose_hosts(self.root)
                except AssertionError:  # the compose file is not written yet
                    time.sleep(0.5)
                    continue
                try:
                    status = hosts[1].state()[0]
                except AssertionError:  # compose writes its file before it creates the containers
                    time.sleep(0.5)
                    continue
                found = self.started.search(hosts[1].logs())
                if not found and status == "exited":
                    self.error = f"the worker host exited before {self.started.pattern!r} appeared: {hosts[1]}"
                    return
                if found:
                    os.kill(train_child_host_pid(hosts[1].container, self.marker), signal.SIGKILL)
                    self.killed = hosts[1]
                    return
                time.sleep(0.5)
            self.error = f"{self.started.pattern!r} never appeared on the worker host in {self.deadline_s} s: {hosts}"
        except Exception as exc:  # reported by the test, not lost in the thread
            self.error = f"{type(exc).__name__}: {exc}"
        for host in hosts:  # end the job, so that fit() returns
            docker("kill", host.container, check=False)


def test_a_failure_on_the_worker_host_fails_the_job(image: str, sdk_env, tmp_path: Path) -> None:
    estimator, output, root = two_host_estimator(image, HYPERPARAMETERS, tmp_path)
    killer = KillOnWorkerHost(root, SPARK_WORKER_PID, WORKER_CLASS.encode())
    killer.start()
    started = time.monotonic()
    # RuntimeError: local mode's report of the exit code, which compose on podman may lose (the engine has it).
    with captured_stdout(), contextlib.suppress(RuntimeError):
        estimator.fit({"train": f"file://{TRAIN_CHANNEL}"}, job_name="recsys-test-als-worker-fails")
    killer.join(timeout=30)
    print(f"\nSDK v2 local two-host ALS fit with a killed Spark worker: {time.monotonic() - started:.1f} s")
    assert_the_job_failed_for_the_worker_host(killer, root, output, "Spark worker")


def assert_the_job_failed_for_the_worker_host(killer: KillOnWorkerHost, root: Path, output: Path, what: str) -> None:
    """Both containers exited non-zero, the leader did not finish, its reason names the worker host and ``what``
    died there, and no model was written."""
    assert killer.error is None and killer.killed is not None, killer.error
    leader, worker = compose_hosts(root)
    states = {host.name: host.state() for host in (leader, worker)}
    assert all(status == "exited" and code != 0 for status, code in states.values()), states
    assert not re.search(FINAL_METRICS, leader.logs()), "the leader must not finish without the worker host"
    archives = list(output.rglob("output.tar.gz"))
    assert archives, f"no output.tar.gz under {output}"
    with tarfile.open(archives[0]) as tar:
        reasons = [tar.extractfile(m).read().decode() for m in tar.getmembers() if Path(m.name).name == "failure"]
    assert reasons and all(worker.name in r and what in r for r in reasons), reasons
    models = list(output.rglob("model.tar.gz"))
    if models:
        with tarfile.open(models[0]) as tar:
            assert not any(Path(m.name).name == "manifest.json" for m in tar.getmembers()), "a failed job's model"


def shard_fixture(target: Path, parts: int) -> list[Path]:
    """The fixture's train CSV cut into ``parts`` contiguous files (each with the header), one directory each."""
    source = next(TRAIN_CHANNEL.glob("*.csv"))
    with source.open(newline="") as f:
        rows = list(csv.reader(f))
    header, body = rows[0], rows[1:]
    size = -(-len(body) // parts)
    out = []
    for i in range(parts):
        directory = target / f"shard-{i}"
        directory.mkdir(parents=True)
        with (directory / f"part-{i}.csv").open("w", newline="") as f:
            csv.writer(f).writerows([header, *body[i * size : (i + 1) * size]])
        out.append(directory)
    return out


def test_sharded_channels_reach_the_model(image: str, one_host, tmp_path: Path) -> None:
    suffix = uuid.uuid4().hex[:5]
    hosts = [f"algo-1-{suffix}", f"algo-2-{suffix}"]
    network = f"recsys-test-net-{suffix}"
    bases = []
    for host, shard in zip(hosts, shard_fixture(tmp_path / "shards", 2), strict=True):
        base = make_opt_ml(tmp_path / host, HYPERPARAMETERS, channels={"train": shard})
        config = base / "input/config"
        channels = json.loads((config / "inputdataconfig.json").read_text())
        channels["train"]["S3DistributionType"] = "ShardedByS3Key"
        (config / "inputdataconfig.json").write_text(json.dumps(channels))
        resource = {"current_host": host, "hosts": hosts, "network_interface_name": "eth0"}
        (config / "resourceconfig.json").write_text(json.dumps(resource))
        bases.append(base)
    docker("network", "create", network)
    try:
        for host, base in zip(hosts, bases, strict=True):
            docker(
                "run",
                "-d",
                "--name",
                host,
                "--hostname",
                host,
                "--network",
                network,
                "--network-alias",
                host,
                "-v",
                f"{base}:/opt/ml",
                image,
                "train",
            )
        codes = [int(docker("wait", host, timeout=600).stdout.strip()) for host in hosts]
        logs = [docker("logs", host, check=False) for host in hosts]
        logs = [proc.stdout + proc.stderr for proc in logs]
    finally:
        docker("rm", "-f", *hosts, check=False)
        docker("network", "rm", network, check=False)
    assert codes == [0, 0], "\n\n".join(log[-3000:] for log in logs)
    assert "bytes of sharded channel data to the leader" in logs[1]
    assert set(executor_tasks(logs[0])) == set(hosts), logs[0][-3000:]
    users = set(model_ids(bases[0] / "model")[0])
    assert users == one_host[1], "every host's shard must reach the model: the users of the whole file"
    assert f"{hosts[1]}/part-1.csv" in logs[0], "the leader read the worker's shard"
    assert abs(selected_hr(logs[0]) - one_host[0]) <= HR_TOLERANCE


# -- NCF: torch.distributed across the containers


def test_ncf_trains_on_both_hosts_and_serves(image: str, sdk_env, tmp_path: Path) -> None:
    from sagemaker.deserializers import JSONDeserializer
    from sagemaker.serializers import JSONSerializer

    base = make_opt_ml(tmp_path / "one-host" / "opt_ml", NCF_HYPERPARAMETERS)
    single = run_container(image, "train", volumes={base: "/opt/ml"})
    assert single.code == 0, single.logs[-3000:]
    estimator, _, root = two_host_estimator(image, NCF_HYPERPARAMETERS, tmp_path)
    started = time.monotonic()
    with captured_stdout() as logs:
        estimator.fit({"train": f"file://{TRAIN_CHANNEL}"}, job_name="recsys-test-ncf-two-hosts")
    seconds = time.monotonic() - started
    leader, worker = compose_hosts(root)
    states = {host.name: host.state() for host in (leader, worker)}
    assert states == {leader.name: ("exited", 0), worker.name: ("exited", 0)}, states
    leader_log, worker_log = leader.logs(), worker.logs()
    for phase in ("select", "refit"):  # each host's rank trained both runs of the fit
        assert re.search(rf"rank 0/2 on host {leader.name} .* phase {phase}", leader_log), leader_log[-3000:]
        assert re.search(rf"rank 1/2 on host {worker.name} .* phase {phase}", worker_log), worker_log[-3000:]
    assert f"rank 1 on host {worker.name}: done" in worker_log, worker_log[-6000:]
    assert f"host {worker.name} done" in worker_log, worker_log[-3000:]
    assert len(re.findall(FINAL_METRICS, logs.getvalue())) == 1, "only the leader reports metrics"
    one, two = selected_hr(single.logs), selected_hr(leader_log)
    print(
        f"\nNCF, seed 3: one host {single.seconds:.1f} s, HR {one:.4f}; "
        f"SDK v2 local two hosts {seconds:.1f} s, HR {two:.4f}"
    )
    assert abs(two - one) <= HR_TOLERANCE, f"two hosts HR {two}, one host {one}"

    model_tar = Path(estimator.model_data.removeprefix("file://"))
    with tarfile.open(model_tar) as tar:
        tar.extractall(tmp_path / "model", filter="data")
    manifest = json.loads((tmp_path / "model/manifest.json").read_text())
    assert manifest["training"]["info"]["world_size"] == 2
    users = sorted(model_ids(tmp_path / "model")[0])
    predictor = estimator.deploy(
        initial_instance_count=1, instance_type="local", serializer=JSONSerializer(), deserializer=JSONDeserializer()
    )
    try:
        assert_top_k(predictor.predict({"users": [users[0]], "k": 5}), users[0], 5)
    finally:
        predictor.delete_endpoint()


def test_an_ncf_rank_that_dies_on_the_worker_host_fails_the_job(image: str, sdk_env, tmp_path: Path) -> None:
    hyperparameters = {**NCF_HYPERPARAMETERS, "epochs": "100", "early_stopping_patience": "0"}
    estimator, output, root = two_host_estimator(image, hyperparameters, tmp_path)
    killer = KillOnWorkerHost(root, NCF_RANK_1, RANK_PROCESS)
    killer.start()
    started = time.monotonic()
    with captured_stdout(), contextlib.suppress(RuntimeError):  # as for ALS: the engine has the exit codes
        estimator.fit({"train": f"file://{TRAIN_CHANNEL}"}, job_name="recsys-test-ncf-rank-dies")
    killer.join(timeout=30)
    print(f"\nSDK v2 local two-host NCF fit with a killed rank: {time.monotonic() - started:.1f} s")
    assert_the_job_failed_for_the_worker_host(killer, root, output, "NCF rank 1")
