"""Creating and tearing down the Spark session ALS trains in — the one place that knows how Spark is started.

A single-host job runs Spark ``local[*]`` inside the training container. A job on several hosts runs a standalone
cluster across them (``recsys.models.als.standalone``); ``settings_for(cluster=...)`` then makes this process its
driver, and ``spark_session`` waits until every host runs an executor. Nothing in the recommender changes.

Everything here imports pyspark lazily: serving imports ``recsys.models.als.model`` and must never load pyspark.

Teardown is complete: ``spark_session`` stops the SparkContext and then ends the JVM that pyspark launched (closing
the pipe it watches, then terminating/killing it), on every exit path, so no Spark process outlives the fit and the
JVM's heap is returned before the model is written.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from recsys.platform.settings import TrainingSettings

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

    from recsys.models.als.standalone import SparkCluster
    from recsys.platform.lifecycle import StopController
    from recsys.platform.resources import ResourceConfig

log = logging.getLogger(__name__)

LOCAL_MASTER = "local[*]"
# Share of the machine's (or the container's cgroup) memory given to the driver JVM in local mode: the rest is for
# the Python process (the data arrays, pandas/Arrow copies while building the DataFrame) and the OS.
DRIVER_MEMORY_FRACTION = 0.6
MIN_DRIVER_MEMORY_MB = 1024
# Leave at least this much to Python and the OS on small machines.
RESERVED_MEMORY_MB = 2048
# Heaps above ~31 GiB lose compressed object pointers; more only helps data far larger than one ALS driver holds.
MAX_DRIVER_MEMORY_MB = 31 * 1024
DRIVER_MEMORY_ENV = "RECSYS_SPARK_DRIVER_MEMORY"  # e.g. "8g": overrides the sizing below (recsys.platform.settings)

_LOG4J2 = """\
rootLogger.level = error
rootLogger.appenderRef.stderr.ref = console
appender.console.type = Console
appender.console.name = console
appender.console.target = SYSTEM_ERR
appender.console.layout.type = PatternLayout
appender.console.layout.pattern = %d{yy/MM/dd HH:mm:ss} %p %c{1}: %m%n
"""


def physical_memory_mb() -> int:
    """Memory this process may use: physical RAM, or the container's cgroup limit when that is lower."""
    total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    for limit_file in ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"):
        try:
            text = Path(limit_file).read_text().strip()
        except OSError:
            continue
        if text.isdigit() and 0 < int(text) < total:
            total = int(text)
        break
    return total // (1024 * 1024)


def driver_memory_mb(total_mb: int | None = None) -> int:
    total_mb = physical_memory_mb() if total_mb is None else total_mb
    wanted = int(total_mb * DRIVER_MEMORY_FRACTION)
    wanted = min(wanted, total_mb - RESERVED_MEMORY_MB, MAX_DRIVER_MEMORY_MB)
    return max(wanted, MIN_DRIVER_MEMORY_MB)


@dataclass
class SparkSettings:
    master: str = LOCAL_MASTER
    driver_memory: str = "1g"
    cores: int = 1  # cores of the host (local) or of the cluster: sizes shuffle partitions and ALS blocks
    app_name: str = "recsys-als"
    conf: dict[str, str] = field(default_factory=dict)  # anything else, passed verbatim
    # Cluster mode: worker address → host name; the session waits until each has an executor.
    executor_hosts: dict[str, str] = field(default_factory=dict)

    @property
    def is_local(self) -> bool:
        return self.master.startswith("local")

    @property
    def partitions(self) -> int:
        """Shuffle partitions / ALS blocks: one per core (measured on 2 cores, ml-100k: 2 blocks 2.4 s per warm
        fit, 4 blocks 3.8 s, 10 blocks 6.4 s). Spark's 200 shuffle partitions default costs seconds on small data."""
        return max(2, self.cores)


def settings_for(resources: ResourceConfig | None = None, cluster: SparkCluster | None = None) -> SparkSettings:
    """The settings for this job: ``local[*]`` on this host's cores, or the driver of a standalone ``cluster``
    (``recsys.models.als.standalone``) with one ALS block per core of the cluster."""
    del resources  # the cluster (when there is one) already holds what the hosts offered
    memory = TrainingSettings.from_env().spark_driver_memory
    if cluster is None:
        memory = memory or f"{driver_memory_mb()}m"
        return SparkSettings(master=LOCAL_MASTER, driver_memory=memory, cores=os.cpu_count() or 1)
    from recsys.models.als.standalone import driver_memory_mb as cluster_driver_mb

    return SparkSettings(
        master=cluster.master_url,
        driver_memory=memory or f"{cluster_driver_mb()}m",
        cores=cluster.total_cores,
        conf=cluster.conf(),
        executor_hosts=dict(cluster.hosts),
    )


def _spark_conf(settings: SparkSettings, work_dir: Path) -> dict[str, str]:
    log4j = work_dir / "log4j2.properties"
    log4j.write_text(_LOG4J2)
    conf = {
        "spark.master": settings.master,
        "spark.app.name": settings.app_name,
        "spark.driver.memory": settings.driver_memory,
        "spark.ui.enabled": "false",
        "spark.ui.showConsoleProgress": "false",
        "spark.sql.shuffle.partitions": str(settings.partitions),
        "spark.default.parallelism": str(settings.partitions),
        "spark.sql.execution.arrow.pyspark.enabled": "true",
        "spark.sql.execution.arrow.pyspark.fallback.enabled": "false",
        "spark.local.dir": str(work_dir / "local"),
        # Deep ALS lineage (many iterations between checkpoints) overflows the default 1 MiB task-thread stack while
        # deserializing tasks (seen here with 10 iterations and no checkpoint under C1-only JIT); 8 MiB is reserved,
        # not committed, per thread.
        "spark.driver.extraJavaOptions": f"-Dlog4j2.configurationFile=file:{log4j} -Xss8m",
        "spark.sql.warehouse.dir": str(work_dir / "warehouse"),
    }
    if settings.is_local:
        # No name resolution of the container's host name, nothing listening beyond loopback.
        conf["spark.driver.host"] = "127.0.0.1"
        conf["spark.driver.bindAddress"] = "127.0.0.1"
    conf.update(settings.conf)
    return conf


def _jvm_process():
    from pyspark import SparkContext

    gateway = SparkContext._gateway
    return getattr(gateway, "proc", None) if gateway is not None else None


def shutdown(spark: SparkSession | None, timeout: float = 20.0) -> None:
    """Stop the session and end the JVM pyspark launched; safe to call on a half-started or broken session."""
    from pyspark import SparkContext

    if spark is not None:
        # Cancel what runs (an interrupted fit keeps its jobs going in the JVM), then stop, bounded in time: a
        # stuck JVM must not hold the job past SageMaker's 120 s SIGKILL.
        def stop() -> None:
            with contextlib.suppress(Exception):
                spark.sparkContext.cancelAllJobs()
            with contextlib.suppress(Exception):
                spark.stop()

        stopper = threading.Thread(target=stop, name="spark-stop", daemon=True)
        stopper.start()
        stopper.join(timeout)
        if stopper.is_alive():
            log.warning("Spark did not stop within %.0f s; ending its JVM", timeout)
    proc = _jvm_process()
    gateway = SparkContext._gateway
    with SparkContext._lock:
        SparkContext._active_spark_context = None
        SparkContext._gateway = None
        SparkContext._jvm = None
    with contextlib.suppress(Exception):
        from pyspark.sql import SparkSession as _Session

        _Session._instantiatedSession = None
        _Session._activeSession = None
    if gateway is not None:
        with contextlib.suppress(Exception):
            gateway.shutdown()
    if proc is not None and proc.poll() is None:
        with contextlib.suppress(Exception):
            proc.stdin.close()  # the JVM exits when this pipe breaks
        try:
            proc.wait(5)
        except Exception:
            proc.terminate()
            try:
                proc.wait(5)
            except Exception:
                proc.kill()
                proc.wait()


@contextlib.contextmanager
def spark_session(
    settings: SparkSettings, timings: dict[str, Any] | None = None, stop: StopController | None = None
) -> Iterator[SparkSession]:
    """A Spark session for the duration of the block; the JVM is gone afterwards, whatever happened inside.

    ``timings["spark_start_seconds"]`` receives the start-up time (JVM launch + SparkContext, and in cluster mode
    the wait for every host's executor, which ``stop`` can cut short).
    """
    from pyspark.sql import SparkSession

    if active_session() is not None:
        # getOrCreate would hand back that session and our teardown would then end someone else's JVM.
        raise RuntimeError("a Spark session is already running in this process; train in it or stop it first")
    work_dir = Path(tempfile.mkdtemp(prefix="recsys-spark-"))
    spark = None
    try:
        started = time.perf_counter()
        builder = SparkSession.builder
        for key, value in _spark_conf(settings, work_dir).items():
            builder = builder.config(key, value)
        spark = builder.getOrCreate()
        spark.sparkContext.setLogLevel("ERROR")
        if settings.is_local:
            # Executors on other hosts could not read each other's checkpoint files from a local directory, and
            # there is no shared file system: a cluster fit keeps the lineage (executors get -Xss8m for its depth).
            spark.sparkContext.setCheckpointDir(str(work_dir / "checkpoints"))
        if settings.executor_hosts:
            await_executors(spark, settings.executor_hosts, stop)
        if timings is not None:
            timings["spark_start_seconds"] = round(time.perf_counter() - started, 3)
        log.info(
            "Spark %s started in %.1f s: master=%s driver_memory=%s partitions=%d",
            spark.version,
            time.perf_counter() - started,
            settings.master,
            settings.driver_memory,
            settings.partitions,
        )
        yield spark
    finally:
        stopped = time.perf_counter()
        shutdown(spark)
        shutil.rmtree(work_dir, ignore_errors=True)
        if timings is not None:
            timings["spark_stop_seconds"] = round(time.perf_counter() - stopped, 3)


def executors(spark: SparkSession) -> list[dict[str, Any]]:
    """The application's executors (the driver left out): id, host address, tasks finished so far."""
    sc = spark.sparkContext
    jvm = sc._jvm
    summaries = jvm.scala.jdk.javaapi.CollectionConverters.asJava(sc._jsc.sc().statusStore().executorList(True))
    out = []
    for summary in summaries:
        if summary.id() == "driver":
            continue
        out.append({"id": summary.id(), "address": summary.hostPort().rsplit(":", 1)[0], "tasks": summary.totalTasks()})
    return out


def await_executors(
    spark: SparkSession, hosts: dict[str, str], stop: StopController | None = None, timeout: float = 180.0
) -> None:
    """Block until every worker address in ``hosts`` runs an executor of this application; RuntimeError naming the
    hosts without one after ``timeout``."""
    deadline = time.time() + timeout
    while True:
        if stop is not None:
            stop.check()
        running = {e["address"] for e in executors(spark)}
        missing = [f"{name} ({address})" for address, name in hosts.items() if address not in running]
        if not missing:
            log.info("executors registered from %d hosts: %s", len(hosts), ", ".join(sorted(hosts.values())))
            return
        if time.time() > deadline:
            raise RuntimeError(f"no Spark executor started on host(s) {', '.join(missing)} within {timeout:.0f} s")
        time.sleep(0.5)


def active_session() -> SparkSession | None:
    """The Spark session already running in this process (a notebook's, a test's), if any; never starts one."""
    import sys

    if "pyspark" not in sys.modules:
        return None
    from pyspark import SparkContext
    from pyspark.sql import SparkSession

    session = SparkSession._instantiatedSession
    if session is None or SparkContext._active_spark_context is None:
        return None
    return session


def jvm_running() -> bool:
    """Whether this process has a live Spark JVM (tests: nothing may outlive a fit)."""
    import sys

    if "pyspark" not in sys.modules:
        return False
    from pyspark import SparkContext

    proc = _jvm_process()
    return SparkContext._active_spark_context is not None or (proc is not None and proc.poll() is None)
