"""SageMaker Python SDK v2 local mode, the real SDK (`sagemaker<3`): Estimator.fit → model.tar.gz in a file:// output
path → deploy → predict, a batch transform (JSON Lines, SplitType=Line, MultiRecord), and a failing job — for NCF and
ALS. No AWS account: inputs and outputs are file://, telemetry is off (see the ``sdk_env`` fixture)."""

from __future__ import annotations

import contextlib
import io
import json
import re
import sys
import tarfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from .container_helpers import (
    FAST,
    METRIC_DEFINITIONS,
    assert_top_k,
    docker,
    engine_is_podman,
    free_port,
    model_ids,
    split_fixture,
)

pytestmark = pytest.mark.container

ROLE = "arn:aws:iam::111111111111:role/SageMakerRole"
FINAL_METRICS = r"final=\w+; HR="  # the metrics line `train` prints once, after training
LOSS_METRIC = next(d["Regex"] for d in METRIC_DEFINITIONS if d["Name"] == "Loss")


class _Tee(io.TextIOBase):
    """Local mode streams the containers' output to sys.stdout: keep a copy to assert on."""

    def __init__(self, *streams):
        self.streams = streams

    def write(self, text: str) -> int:
        for stream in self.streams:
            stream.write(text)
        return len(text)

    def flush(self) -> None:
        for stream in self.streams:
            stream.flush()


@contextlib.contextmanager
def captured_stdout():
    buffer = io.StringIO()
    with contextlib.redirect_stdout(_Tee(sys.stdout, buffer)):
        yield buffer


def local_session(root: Path, port: int):
    from sagemaker.local import LocalSession

    root.mkdir(parents=True, exist_ok=True)
    session = LocalSession()
    session.config = {"local": {"local_code": True, "container_root": str(root), "serving_port": port}}
    return session


@dataclass
class Fitted:
    estimator: object
    session: object
    output: Path
    logs: str
    seconds: float
    model_dir: Path  # model.tar.gz extracted


@pytest.fixture(scope="module")
def channels(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return split_fixture(tmp_path_factory.mktemp("sdk2-data"))


@pytest.fixture(scope="module")
def fitted(image: str, sdk_env, channels, tmp_path_factory: pytest.TempPathFactory):
    cache: dict[str, Fitted] = {}

    def get(algorithm: str) -> Fitted:
        if algorithm not in cache:
            from sagemaker.estimator import Estimator

            tmp = tmp_path_factory.mktemp(f"sdk2-{algorithm}")
            output = tmp / "output"
            output.mkdir()
            session = local_session(tmp / "containers", free_port())
            estimator = Estimator(
                image_uri=image,
                role=ROLE,
                instance_type="local",
                instance_count=1,
                hyperparameters=FAST[algorithm],
                metric_definitions=METRIC_DEFINITIONS,
                output_path=f"file://{output}",
                sagemaker_session=session,
            )
            train, test = channels
            started = time.monotonic()
            with captured_stdout() as logs:
                estimator.fit({"train": f"file://{train}", "test": f"file://{test}"}, wait=True, logs=True)
            seconds = time.monotonic() - started
            print(f"\nSDK v2 local fit ({algorithm}): {seconds:.1f} s")
            model_tar = Path(estimator.model_data.removeprefix("file://"))
            extracted = tmp / "model"
            with tarfile.open(model_tar) as tar:
                tar.extractall(extracted, filter="data")
            cache[algorithm] = Fitted(estimator, session, output, logs.getvalue(), seconds, extracted)
        return cache[algorithm]

    return get


@pytest.mark.parametrize("algorithm", ["ncf", "als"])
def test_fit_writes_model_tar_gz(fitted, algorithm: str) -> None:
    result = fitted(algorithm)
    model_tar = Path(result.estimator.model_data.removeprefix("file://"))
    assert model_tar.name == "model.tar.gz" and model_tar.is_file()
    assert result.output in model_tar.parents, f"{model_tar} is not under the file:// output path {result.output}"
    manifest = json.loads((result.model_dir / "manifest.json").read_text())
    assert manifest["algorithm"] == algorithm
    # The metric definitions find values in what the job printed.
    names = {"HR", "NDCG", "Loss"} if algorithm == "ncf" else {"HR", "NDCG"}
    for definition in METRIC_DEFINITIONS:
        if definition["Name"] in names:
            found = re.findall(definition["Regex"], result.logs)
            assert found, f"metric {definition['Name']} not found in the job log"
            float(found[-1])


@pytest.mark.parametrize("algorithm", ["ncf", "als"])
def test_deploy_and_predict(fitted, algorithm: str) -> None:
    from sagemaker.deserializers import JSONDeserializer
    from sagemaker.serializers import JSONSerializer

    result = fitted(algorithm)
    users, _ = model_ids(result.model_dir)
    predictor = result.estimator.deploy(
        initial_instance_count=1, instance_type="local", serializer=JSONSerializer(), deserializer=JSONDeserializer()
    )
    try:
        answer = predictor.predict({"users": [users[0]], "k": 5})
        assert_top_k(answer, users[0], 5)
        both = predictor.predict({"users": users[:2], "k": 3})
        assert [str(p["user"]) for p in both["predictions"]] == users[:2]
    finally:
        predictor.delete_endpoint()


@pytest.mark.parametrize("algorithm", ["als"])
def test_batch_transform_one_line_per_line(fitted, algorithm: str, tmp_path: Path) -> None:
    result = fitted(algorithm)
    users, _ = model_ids(result.model_dir)
    requests = [{"users": [u], "k": 3} for u in users[:6]] + [{"users": users[:2], "k": 2}]
    source = tmp_path / "in"
    source.mkdir()
    (source / "requests.jsonl").write_text("\n".join(json.dumps(r) for r in requests) + "\n")
    out = tmp_path / "out"
    transformer = result.estimator.transformer(
        instance_count=1,
        instance_type="local",
        strategy="MultiRecord",
        assemble_with="Line",
        accept="application/jsonlines",
        output_path=f"file://{out}",
    )
    # logs=False: local mode has no CloudWatch to read the transform's logs from (the containers' output is printed)
    transformer.transform(
        f"file://{source}",
        content_type="application/jsonlines",
        split_type="Line",
        job_name=f"recsys-bt-{algorithm}",
        wait=True,
        logs=False,
    )
    lines = (out / "requests.jsonl.out").read_text().splitlines()
    assert len(lines) == len(requests), lines
    for request, line in zip(requests, lines, strict=True):
        answer = json.loads(line)
        assert [str(p["user"]) for p in answer["predictions"]] == [str(u) for u in request["users"]]
        assert all(len(p["items"]) == request["k"] for p in answer["predictions"])


def test_failing_job_raises_and_keeps_the_reason(image: str, sdk_env, channels, tmp_path: Path) -> None:
    """A bad hyperparameter: the container exits non-zero and writes the reason; local mode raises RuntimeError
    (with the exit code only, not the reason) and keeps the reason in output.tar.gz's `failure` and in the log."""
    from sagemaker.estimator import Estimator

    output, root = tmp_path / "output", tmp_path / "containers"
    output.mkdir()
    estimator = Estimator(
        image_uri=image,
        role=ROLE,
        instance_type="local",
        instance_count=1,
        hyperparameters={"algorithm": "ncf", "preset": "online_retail", "lr": -1},
        output_path=f"file://{output}",
        sagemaker_session=local_session(root, free_port()),
    )
    train, _ = channels
    raised = None
    with captured_stdout() as logs:
        try:
            estimator.fit({"train": f"file://{train}"}, job_name="recsys-test-bad-lr")
        except RuntimeError as err:
            raised = err

    # What the image is responsible for: a non-zero exit, the reason in /opt/ml/output/failure, no model.
    projects = [d.name for d in root.iterdir() if (d / "docker-compose.yaml").is_file()]
    statuses = [
        docker("ps", "-a", "--filter", f"label=com.docker.compose.project={p}", "--format", "{{.Status}}").stdout
        for p in projects
    ]
    assert any(re.search(r"Exited \([1-9]\d*\)", s) for s in statuses), statuses
    archives = list(output.rglob("output.tar.gz"))
    assert archives, f"no output.tar.gz under {output}"
    with tarfile.open(archives[0]) as tar:
        member = next((m for m in tar.getmembers() if Path(m.name).name == "failure"), None)
        assert member is not None, [m.name for m in tar.getmembers()]
        reason = tar.extractfile(member).read().decode()
    assert "lr" in reason, reason
    models = list(output.rglob("model.tar.gz"))
    assert not models or _empty_model(models[0]), "a failed job must not produce a model"
    assert "hyperparameter `lr`" in logs.getvalue()

    # What local mode does with it: RuntimeError from docker-compose's exit code.
    if raised is None and engine_is_podman():
        pytest.xfail(
            "docker-compose 1.29 on podman's Docker API loses the container's exit code under "
            "`up --abort-on-container-exit` (its log printer ends before podman's /wait answers), so local mode "
            "cannot see the failure; with a Docker daemon fit() raises RuntimeError"
        )
    assert raised is not None, "fit() returned normally although the training container failed"
    assert "exited with code" in str(raised)


def _empty_model(model_tar: Path) -> bool:
    with tarfile.open(model_tar) as tar:
        return not any(Path(m.name).name == "manifest.json" for m in tar.getmembers())


@dataclass
class Host:
    """One host of a local-mode job: its compose service (= host name, e.g. ``algo-2-x1y2z``) and container."""

    name: str
    container: str

    def state(self) -> tuple[str, int]:
        """(status, exit code) as the engine reports them."""
        fmt = "{{.State.Status}} {{.State.ExitCode}}"
        status, code = docker("inspect", "--format", fmt, self.container).stdout.split()
        return status, int(code)

    def logs(self) -> str:
        proc = docker("logs", self.container, check=False)
        return proc.stdout + proc.stderr


def compose_hosts(root: Path) -> list[Host]:
    """The hosts of the one training job run under ``root`` (the session's ``container_root``), leader first.

    Local mode writes ``<root>/<tmp>/docker-compose.yaml`` (one service per host, each with a ``container_name``)
    and leaves both the file and the stopped containers behind; the engine is asked for exit codes, not the SDK:
    docker-compose on podman can lose them (see ``test_failing_job_raises_and_keeps_the_reason``)."""
    import yaml

    files = list(root.glob("*/docker-compose.yaml"))
    assert len(files) == 1, f"expected one compose file under {root}: {files}"
    services = yaml.safe_load(files[0].read_text())["services"]
    return [Host(name, services[name]["container_name"]) for name in sorted(services)]


def two_host_estimator(image: str, hyperparameters: dict, tmp_path: Path):
    from sagemaker.estimator import Estimator

    output, root = tmp_path / "output", tmp_path / "containers"
    output.mkdir()
    estimator = Estimator(
        image_uri=image,
        role=ROLE,
        instance_type="local",
        instance_count=2,
        hyperparameters=hyperparameters,
        output_path=f"file://{output}",
        sagemaker_session=local_session(root, free_port()),
    )
    return estimator, output, root


class KillWorker(threading.Thread):
    """SIGKILL the worker host's container while it waits for the leader and the leader is training (a host that
    dies: OOM killer, lost instance). What it did, or why it could not, is kept for the test to assert on."""

    def __init__(self, root: Path, deadline_s: float = 300):
        super().__init__(name="kill-worker", daemon=True)
        self.root, self.deadline_s = root, deadline_s
        self.killed: Host | None = None
        self.error: str | None = None

    def run(self) -> None:
        try:
            self._watch_and_kill()
        except Exception as exc:  # reported by the test, not lost in the thread
            self.error = f"{type(exc).__name__}: {exc}"

    def _watch_and_kill(self) -> None:
        started = time.monotonic()
        hosts: list[Host] = []
        while time.monotonic() - started < self.deadline_s:
            try:
                hosts = hosts or compose_hosts(self.root)
            except AssertionError:  # the compose file is not written yet
                time.sleep(0.5)
                continue
            leader, worker = hosts
            waiting = "waits for leader" in worker.logs()
            training = re.search(LOSS_METRIC, leader.logs())  # an epoch's `Loss=...;` line: the leader trains
            if waiting and training:
                if re.search(FINAL_METRICS, leader.logs()):
                    self.error = "the leader finished before the worker could be killed: give it more epochs"
                    return
                docker("kill", worker.container)
                self.killed = worker
                return
            time.sleep(0.5)
        self.error = f"within {self.deadline_s} s the worker did not wait or the leader did not train: {hosts}"
        for host in hosts:  # end the job, so that fit() returns
            docker("kill", host.container, check=False)


def test_worker_host_failure_fails_the_job(image: str, sdk_env, channels, tmp_path: Path) -> None:
    """instance_count=2 and the worker host (algo-2) dies while the job trains NCF on both hosts. Local mode runs
    `docker-compose up --abort-on-container-exit`: the first container to exit stops the others (SIGTERM), and
    compose exits with that first container's code, so fit() raises RuntimeError(... code: 137). The leader sees the
    host leave (its coordination connection and its rank close), stops mid-training, exits 1 with a reason naming
    that host (143 "stopped" when compose's SIGTERM comes first), writes no model and leaves the reason in
    output.tar.gz's `failure`. (NCF and ALS across hosts, and a failure inside a worker host's training:
    test_container_multihost.py.)"""
    # Enough epochs (no early stop) that the leader is still training when the worker is killed; it is stopped then.
    hyperparameters = {**FAST["ncf"], "epochs": "200", "early_stopping_patience": "0"}
    estimator, output, root = two_host_estimator(image, hyperparameters, tmp_path)
    train, test = channels
    killer = KillWorker(root)
    killer.start()
    raised = None
    started = time.monotonic()
    with captured_stdout():
        try:
            estimator.fit({"train": f"file://{train}", "test": f"file://{test}"}, job_name="recsys-test-worker-dies")
        except RuntimeError as err:
            raised = err
    seconds = time.monotonic() - started
    killer.join(timeout=30)
    print(f"\nSDK v2 local two-host fit with a killed worker: {seconds:.1f} s, fit raised: {raised!r}")
    assert killer.error is None, killer.error
    assert killer.killed is not None

    # What the engine saw: the killed worker 137 (SIGKILL), the leader 1 (the host it trained with left) or 143
    # (compose's SIGTERM first). Any non-zero code fails a SageMaker training job.
    leader, worker = compose_hosts(root)
    assert worker == killer.killed
    states = {host.name: host.state() for host in (leader, worker)}
    assert states[worker.name] == ("exited", 137) and states[leader.name] in (("exited", 1), ("exited", 143)), states
    assert not re.search(FINAL_METRICS, leader.logs()), "the leader must not finish after the worker died"
    archives = list(output.rglob("output.tar.gz"))
    assert archives, f"no output.tar.gz under {output}"
    with tarfile.open(archives[0]) as tar:
        member = next((m for m in tar.getmembers() if Path(m.name).name == "failure"), None)
        assert member is not None, [m.name for m in tar.getmembers()]
        reason = tar.extractfile(member).read().decode()
        assert worker.name in reason or "stopped" in reason, reason
    models = list(output.rglob("model.tar.gz"))
    assert not models or _empty_model(models[0]), "a failed job must not produce a model"

    # What local mode makes of it: RuntimeError with the first exited container's code.
    if raised is None and engine_is_podman():
        pytest.xfail(
            "docker-compose 1.29 on podman's Docker API lost the killed container's exit code under "
            "`up --abort-on-container-exit` (see test_failing_job_raises_and_keeps_the_reason); the engine's exit "
            "codes above show the failure"
        )
    assert raised is not None, "fit() returned normally although the worker host died"
    assert "exited with code: 137" in str(raised), raised
