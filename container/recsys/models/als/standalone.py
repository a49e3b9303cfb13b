"""A Spark standalone cluster across the hosts of one training job, for ALS (``HostServices`` in recsys.platform).

Every host runs a Spark worker daemon; the leader also runs the master, and its ``train`` process is the driver.
The daemons are pyspark's own classes, started as ``java -cp <pyspark>/jars/* org.apache.spark.deploy...``: the
wheel ships no sbin/ start scripts, and a direct ``java`` keeps their heap, ports and environment explicit.

Ports (fixed, so that they are known between containers; every host uses the same ones): master 7077 (its status
page, ``/json``, on 8080), worker 7078 (page 8081), driver 7080, driver block manager 7081, executor block managers
7082 (Spark tries the next ports when taken). The coordination port (7079) is ``recsys.platform.cluster``'s.

Sizing per host: each worker offers all the CPUs this process may use (affinity) and the JVM heap local mode would
give its single JVM (``recsys.models.als.spark``); on the leader the driver takes a third of that. One executor per
worker takes all its cores; the executor heap is the smallest any host offered, so that every worker can start one.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import os
import shutil
import subprocess
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from recsys.models.als import spark as sessions
from recsys.models.als.model import CLUSTER_KEY
from recsys.platform.cluster import Peer
from recsys.platform.errors import UserError
from recsys.platform.lifecycle import StopController
from recsys.platform.network import host_address
from recsys.platform.resources import ResourceConfig, usable_cpus

log = logging.getLogger(__name__)

MASTER_PORT = 7077
MASTER_UI_PORT = 8080
WORKER_PORT = 7078
WORKER_UI_PORT = 8081
DRIVER_PORT = 7080
DRIVER_BLOCK_MANAGER_PORT = 7081
BLOCK_MANAGER_PORT = 7082
DAEMON_HEAP = "512m"  # master and worker daemons only schedule; executors get their own heap
REGISTRATION_TIMEOUT_S = 180.0  # after every host joined: its worker registers within seconds once its JVM is up
MASTER_CLASS = "org.apache.spark.deploy.master.Master"
WORKER_CLASS = "org.apache.spark.deploy.worker.Worker"


@dataclass(frozen=True)
class SparkCluster:
    """What the driver needs to train on the cluster (``recsys.models.als.spark.settings_for``)."""

    master_url: str
    driver_address: str
    executor_memory_mb: int
    total_cores: int
    hosts: dict[str, str] = field(default_factory=dict)  # worker address → host name

    def conf(self) -> dict[str, str]:
        return {
            "spark.driver.host": self.driver_address,
            "spark.driver.bindAddress": self.driver_address,
            "spark.driver.port": str(DRIVER_PORT),
            "spark.driver.blockManager.port": str(DRIVER_BLOCK_MANAGER_PORT),
            "spark.blockManager.port": str(BLOCK_MANAGER_PORT),
            "spark.executor.memory": f"{self.executor_memory_mb}m",
            # No job starts before every worker's executor is up: ALS blocks are placed on the first executors.
            "spark.cores.max": str(self.total_cores),
            "spark.scheduler.minRegisteredResourcesRatio": "1.0",
            # Bounded, because SparkContext's own wait cannot be interrupted; spark.await_executors then waits on,
            # interruptibly, and names a host whose executor never came.
            "spark.scheduler.maxRegisteredResourcesWaitingTime": "30s",
            "spark.executor.extraJavaOptions": "-Xss8m",  # see the driver's -Xss8m in recsys.models.als.spark
        }


def spark_home() -> Path:
    """pyspark's package directory: its jars/ are a Spark distribution's."""
    spec = importlib.util.find_spec("pyspark")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("pyspark is not installed")
    return Path(next(iter(spec.submodule_search_locations)))


def scala_version(home: Path) -> str:
    """From ``spark-core_<scala>-<spark>.jar``: executors are launched by Spark's launcher, which needs it."""
    for jar in sorted((home / "jars").glob("spark-core_*.jar")):
        return jar.name.removeprefix("spark-core_").split("-")[0]
    raise RuntimeError(f"no spark-core jar under {home / 'jars'}")


def heap_budget_mb(total_mb: int | None = None) -> int:
    """The JVM heap one host can give Spark: what local mode gives its single JVM."""
    return sessions.driver_memory_mb(total_mb)


def executor_memory_mb(total_mb: int | None = None, leader: bool = False) -> int:
    budget = heap_budget_mb(total_mb)
    return max(sessions.MIN_DRIVER_MEMORY_MB, budget - (budget // 3 if leader else 0))


def driver_memory_mb(total_mb: int | None = None) -> int:
    return max(sessions.MIN_DRIVER_MEMORY_MB, heap_budget_mb(total_mb) // 3)


class Daemon:
    """A Spark master or worker JVM, its output in a log file."""

    def __init__(self, role: str, main_class: str, args: list[str], address: str, work_dir: Path):
        home = spark_home()
        java_home = os.environ.get("JAVA_HOME")  # as pyspark picks it: JAVA_HOME, else java on PATH
        java = os.path.join(java_home, "bin", "java") if java_home else shutil.which("java") or "java"
        env = {
            **os.environ,
            "SPARK_HOME": str(home),
            "SPARK_SCALA_VERSION": scala_version(home),
            "SPARK_LOCAL_IP": address,  # web pages and the executors this worker launches bind there too
        }
        self.role = role
        self.log_path = work_dir / f"{role}.log"
        cmd = [java, f"-Xmx{DAEMON_HEAP}", "-Dspark.master.rest.enabled=false", "-cp", f"{home}/jars/*", main_class]
        with self.log_path.open("wb") as out:
            self.proc = subprocess.Popen([*cmd, *args], stdout=out, stderr=subprocess.STDOUT, env=env, cwd=work_dir)
        log.info("Spark %s started (pid %d): %s", role, self.proc.pid, " ".join(args))

    def exit_code(self) -> int | None:
        return self.proc.poll()

    def tail(self, lines: int = 15) -> str:
        try:
            return "".join(self.log_path.read_text(errors="replace").splitlines(keepends=True)[-lines:])
        except OSError:
            return ""

    def stop(self, timeout: float = 10.0) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()  # a worker's shutdown hook ends the executors it launched
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def master_status(address: str, timeout: float = 5.0) -> dict[str, Any]:
    with urllib.request.urlopen(f"http://{address}:{MASTER_UI_PORT}/json/", timeout=timeout) as resp:
        return json.load(resp)


class SparkStandalone:
    """``HostServices`` for ALS: this host's Spark worker, and on the leader the master."""

    def __init__(self, resources: ResourceConfig, stop: StopController):
        self.resources = resources
        self.address = host_address(resources, stop)
        self.cores = usable_cpus()
        self.memory_mb = executor_memory_mb(leader=resources.is_leader)
        self.work_dir = Path(tempfile.mkdtemp(prefix="recsys-spark-cluster-"))
        self.daemons: list[Daemon] = []

    @property
    def master_url(self) -> str:
        return f"spark://{self.address}:{MASTER_PORT}"

    def offer(self) -> dict[str, Any]:
        return {"address": self.address, "cores": self.cores, "memory_mb": self.memory_mb}

    def start_leader(self) -> None:
        args = ["--host", self.address, "--port", str(MASTER_PORT), "--webui-port", str(MASTER_UI_PORT)]
        self.daemons.append(Daemon("master", MASTER_CLASS, args, self.address, self.work_dir))
        self.start_worker(self.address)

    def start_worker(self, leader_address: str) -> None:
        args = ["--host", self.address, "--port", str(WORKER_PORT), "--webui-port", str(WORKER_UI_PORT)]
        args += ["--cores", str(self.cores), "--memory", f"{self.memory_mb}m", "--work-dir", str(self.work_dir)]
        args.append(f"spark://{leader_address}:{MASTER_PORT}")
        self.daemons.append(Daemon("worker", WORKER_CLASS, args, self.address, self.work_dir))

    def await_cluster(self, peers: dict[str, Peer], stop: StopController) -> dict[str, Any]:
        """Wait until every host's worker is registered with the master; the cluster the driver connects to."""
        offers = [self.offer()] + [{"address": p.address, **p.offer} for p in peers.values()]
        hosts = {self.address: self.resources.current_host}
        hosts.update({p.offer.get("address") or p.address: name for name, p in peers.items()})
        self._await_workers(hosts, stop)
        cluster = SparkCluster(
            master_url=self.master_url,
            driver_address=self.address,
            executor_memory_mb=min(int(o.get("memory_mb") or self.memory_mb) for o in offers),
            total_cores=sum(int(o.get("cores") or 1) for o in offers),
            hosts=hosts,
        )
        log.info(
            "Spark standalone cluster %s: %d workers, %d cores, %d MiB per executor",
            cluster.master_url,
            len(hosts),
            cluster.total_cores,
            cluster.executor_memory_mb,
        )
        return {CLUSTER_KEY: cluster}  # how ALSRecommender.fit finds it

    def _await_workers(self, hosts: dict[str, str], stop: StopController) -> None:
        deadline = time.time() + REGISTRATION_TIMEOUT_S
        alive: set[str] = set()
        while True:
            stop.check()
            failure = self.failure()
            if failure:
                raise UserError(failure)
            try:
                status = master_status(self.address)
                alive = {w.get("host") for w in status.get("workers", []) if w.get("state") == "ALIVE"}
            except (OSError, ValueError):  # the master is still starting
                pass
            missing = [f"{name} ({address})" for address, name in hosts.items() if address not in alive]
            if not missing:
                return
            if time.time() > deadline:
                raise UserError(
                    f"host(s) {', '.join(missing)} did not register a Spark worker with the master {self.master_url} "
                    f"within {REGISTRATION_TIMEOUT_S:.0f} s (ports {MASTER_PORT} and {WORKER_PORT} must be "
                    "reachable between the hosts)"
                )
            time.sleep(1.0)

    def failure(self) -> str | None:
        for daemon in self.daemons:
            code = daemon.exit_code()
            if code is not None:
                log.error("Spark %s log (last lines):\n%s", daemon.role, daemon.tail())
                how = f"was killed by signal {-code}" if code < 0 else f"exited with code {code}"
                return f"the Spark {daemon.role} on host {self.resources.current_host} {how}"
        return None

    def close(self) -> None:
        for daemon in reversed(self.daemons):  # the worker before the master
            daemon.stop()
        self.daemons = []
        shutil.rmtree(self.work_dir, ignore_errors=True)
