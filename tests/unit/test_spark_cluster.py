"""Multi-host coordination (recsys.platform.cluster) and the ALS standalone cluster's sizing and settings, without
containers: the join protocol over loopback (shards, failures, hosts that never join), the gathered channel view,
interface addresses, executor sizing and the driver's settings in cluster mode."""

from __future__ import annotations

import json
import socket
import threading
import time
from pathlib import Path

import pytest

from helpers.net import free_port
from recsys.data.readers import list_files
from recsys.models.als import spark as sessions
from recsys.models.als import standalone
from recsys.platform.cluster import LeaderBeacon, LeaderLink
from recsys.platform.errors import UserError
from recsys.platform.lifecycle import StopController
from recsys.platform.network import interface_address
from recsys.platform.paths import SageMakerPaths
from recsys.platform.resources import ResourceConfig
from recsys.platform.shards import gathered_channels, sharded_channels

SHARDED = {"train": {"S3DistributionType": "ShardedByS3Key"}, "test": {"S3DistributionType": "FullyReplicated"}}


def opt_ml(root: Path, host: str, hosts: list[str], files: dict[str, str]) -> tuple[SageMakerPaths, ResourceConfig]:
    for rel, text in files.items():
        path = root / "input/data" / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return SageMakerPaths(root), ResourceConfig(current_host=host, hosts=hosts, input_data_config=SHARDED)


def worker(link_args, offer, paths, results, watch=lambda: None):
    resources, port = link_args
    try:
        link = LeaderLink(resources, port).connect(StopController(), timeout=10)
        link.join(offer, paths)
        link.wait(StopController(), watch)
        results.append("ok")
    except UserError as exc:
        results.append(str(exc))


def test_sharded_channels_are_read_from_the_input_data_config():
    resources = ResourceConfig(input_data_config={**SHARDED, "validation": {}})
    assert sharded_channels(resources) == ["train"]


def test_workers_send_their_shards_and_the_leader_reads_every_host_in_order(tmp_path):
    hosts = ["algo-1-aaaaa", "algo-2-bbbbb"]
    leader_paths, leader = opt_ml(
        tmp_path / "leader", hosts[0], hosts, {"train/a.csv": "u,i\n1,x\n", "test/t.csv": "u,i\n1,y\n"}
    )
    worker_paths, worker_res = opt_ml(
        tmp_path / "worker", hosts[1], hosts, {"train/b.csv": "u,i\n2,z\n", "train/sub/c.csv": "u,i\n3,w\n"}
    )
    worker_res.hosts = ["localhost", hosts[1]]  # the leader's name must resolve here
    port, view = free_port(), tmp_path / "view"
    view.mkdir()
    beacon = LeaderBeacon(port=port, shard_dir=view)
    results: list[str] = []
    thread = threading.Thread(target=worker, args=((worker_res, port), {"cores": 3}, worker_paths, results))
    thread.start()
    peers = beacon.wait_for_peers([hosts[1]], StopController(), timeout=20)
    assert peers[hosts[1]].offer == {"cores": 3} and peers[hosts[1]].ready
    gathered = gathered_channels(leader_paths, leader, view)
    files = [p.relative_to(gathered.channel("train")).as_posix() for p in list_files(gathered.channel("train"))]
    assert files == [f"{hosts[0]}/a.csv", f"{hosts[1]}/b.csv", f"{hosts[1]}/sub/c.csv"]
    assert (gathered.channel("train") / hosts[1] / "sub/c.csv").read_text() == "u,i\n3,w\n"
    assert [p.name for p in list_files(gathered.channel("test"))] == ["t.csv"]  # replicated: the original
    assert gathered.model_dir == leader_paths.model_dir
    beacon.finish(ok=True, linger=0.2)
    thread.join(10)
    assert results == ["ok"] and beacon.failure is None


def test_a_host_that_never_joins_is_named(tmp_path):
    beacon = LeaderBeacon(port=free_port())
    try:
        with pytest.raises(UserError, match="algo-2-zzzzz never joined"):
            beacon.wait_for_peers(["algo-2-zzzzz"], StopController(), timeout=1)
    finally:
        beacon.finish(ok=False, reason="x", linger=0)


def test_a_worker_failure_reaches_the_leader_and_the_worker_gets_the_verdict(tmp_path):
    port = free_port()
    beacon = LeaderBeacon(port=port)
    called: list[str] = []
    beacon.on_failure = called.append
    resources = ResourceConfig(current_host="zz-worker", hosts=["localhost", "zz-worker"])
    results: list[str] = []
    dead = iter([None, "the Spark worker on host zz-worker was killed by signal 9"])
    thread = threading.Thread(target=worker, args=((resources, port), {}, None, results, lambda: next(dead, None)))
    thread.start()
    deadline = time.time() + 20
    while not called and time.time() < deadline:
        time.sleep(0.05)
    assert called == [beacon.failure] and "host zz-worker failed: the Spark worker" in called[0]
    with pytest.raises(UserError, match="zz-worker failed: the Spark worker"):  # a join wait ends with it too
        beacon.wait_for_peers(["zz-worker"], StopController(), timeout=20)
    beacon.finish(ok=False, reason=beacon.failure, linger=0.2)
    thread.join(10)
    assert results == ["the Spark worker on host zz-worker was killed by signal 9"]


def test_a_worker_that_disconnects_after_joining_fails_the_job():
    port = free_port()
    beacon = LeaderBeacon(port=port)
    with socket.create_connection(("127.0.0.1", port)) as conn:
        conn.sendall(b'join {"host": "algo-2", "offer": {}}\nready\n')
        beacon.wait_for_peers(["algo-2"], StopController(), timeout=10)
    deadline = time.time() + 10
    while beacon.failure is None and time.time() < deadline:
        time.sleep(0.05)
    assert beacon.failure and "algo-2 left the job" in beacon.failure
    beacon.finish(ok=False, reason="x", linger=0)


def test_a_shard_path_outside_the_channel_is_refused(tmp_path):
    port = free_port()
    beacon = LeaderBeacon(port=port, shard_dir=tmp_path / "view")
    with socket.create_connection(("127.0.0.1", port)) as conn:
        meta = json.dumps({"channel": "train", "path": "../../escape.csv", "size": 2})
        conn.sendall(f'join {{"host": "algo-2"}}\nfile {meta}\nab'.encode())
        with pytest.raises(UserError, match="bad message"):
            beacon.wait_for_peers(["algo-2"], StopController(), timeout=10)
    assert not list(tmp_path.rglob("escape.csv"))
    beacon.finish(ok=False, reason="x", linger=0)


def test_interface_addresses():
    assert interface_address("lo") == "127.0.0.1"
    assert interface_address("no-such-if0") is None


@pytest.mark.parametrize("total_mb", [4096, 16384, 262144])
def test_the_leader_splits_its_heap_budget_between_driver_and_executor(total_mb):
    budget = standalone.heap_budget_mb(total_mb)
    assert standalone.executor_memory_mb(total_mb, leader=False) == budget
    leader = standalone.executor_memory_mb(total_mb, leader=True) + standalone.driver_memory_mb(total_mb)
    assert budget <= leader <= budget + sessions.MIN_DRIVER_MEMORY_MB  # the 1 GiB floors may add to small hosts
    assert standalone.heap_budget_mb(total_mb) == sessions.driver_memory_mb(total_mb)  # what local mode gives


def test_cluster_settings_make_this_process_the_driver(monkeypatch):
    monkeypatch.delenv("RECSYS_SPARK_DRIVER_MEMORY", raising=False)
    hosts = {"10.0.0.1": "algo-1", "10.0.0.2": "algo-2"}
    cluster = standalone.SparkCluster("spark://10.0.0.1:7077", "10.0.0.1", 3000, 6, hosts)
    settings = sessions.settings_for(cluster=cluster)
    assert settings.master == "spark://10.0.0.1:7077" and not settings.is_local
    assert settings.partitions == 6 and settings.executor_hosts == hosts
    conf = sessions._spark_conf(settings, Path("/tmp"))
    assert conf["spark.driver.host"] == conf["spark.driver.bindAddress"] == "10.0.0.1"
    assert conf["spark.driver.port"] == str(standalone.DRIVER_PORT)
    assert conf["spark.blockManager.port"] == str(standalone.BLOCK_MANAGER_PORT)
    assert conf["spark.executor.memory"] == "3000m" and conf["spark.cores.max"] == "6"
    local = sessions.settings_for()
    assert local.is_local and local.executor_hosts == {} and "spark.executor.memory" not in local.conf


def test_the_pyspark_wheel_is_a_spark_home():
    home = standalone.spark_home()
    assert (home / "jars").is_dir()
    assert standalone.scala_version(home).startswith("2.")
