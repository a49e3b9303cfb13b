"""`docker run IMAGE train` on a mounted /opt/ml and `docker run IMAGE serve` on the model it wrote — the two commands
SageMaker runs — driven through the real engine, nginx and gunicorn."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

import pytest

from .container_helpers import (
    METRIC_DEFINITIONS,
    assert_top_k,
    docker,
    free_port,
    http,
    make_opt_ml,
    model_ids,
    run_container,
    unique_name,
    wait_for_ping,
)

pytestmark = pytest.mark.container

FIRST_PING_LIMIT_S = 20  # target: 10 s; the limit leaves room for a loaded CI machine
STOP_LIMIT_S = 8  # SageMaker SIGKILLs 30 s after SIGTERM on hosting; ours must stop well before


@pytest.mark.parametrize("algorithm", ["ncf", "als"])
def test_train_writes_a_model(trained, algorithm: str) -> None:
    run, base = trained(algorithm)
    failure = base / "output/failure"
    assert run.code == 0, (
        f"train exited {run.code}; failure: {failure.read_text() if failure.exists() else '-'}\n" + (run.logs[-4000:])
    )
    assert not failure.exists()
    manifest = json.loads((base / "model/manifest.json").read_text())
    assert manifest["algorithm"] == algorithm, manifest
    assert (base / "model/ids.npz").is_file()
    assert list((base / "output/data").glob("*.json")), "the evaluation report goes to /opt/ml/output/data"
    # The LotteON metric definitions scrape these lines from the job log.
    names = ["HR", "NDCG", "Loss"] if algorithm == "ncf" else ["HR", "NDCG"]
    for definition in METRIC_DEFINITIONS:
        if definition["Name"] in names:
            values = re.findall(definition["Regex"], run.logs)
            assert values, f"no {definition['Name']} metric line in the log"
            float(values[-1])
    print(f"\n{algorithm}: docker run train took {run.seconds:.1f} s")


@pytest.mark.parametrize(
    "hyperparameters, named",
    [({"algorithm": "ncf", "preset": "online_retail", "lr": "-1"}, "lr"), ({"algorithm": "svd"}, "algorithm")],
    ids=["lr=-1", "algorithm=svd"],
)
def test_bad_hyperparameter_fails_with_a_reason(image: str, tmp_path: Path, hyperparameters: dict, named: str) -> None:
    base = make_opt_ml(tmp_path / "opt_ml", hyperparameters)
    run = run_container(image, "train", volumes={base: "/opt/ml"}, timeout=300)
    assert run.code != 0, run.logs
    failure = base / "output/failure"
    assert failure.is_file(), run.logs
    reason = failure.read_text()
    assert named in reason, reason
    assert len(reason) <= 1024 and not reason.lstrip().startswith("Traceback"), reason
    assert not (base / "model/manifest.json").exists(), "a failed job must not leave a model that looks valid"


TRAIN_STOP_LIMIT_S = 30  # SageMaker SIGKILLs 120 s after SIGTERM


@pytest.mark.parametrize(
    "hyperparameters, busy",
    [
        ({"algorithm": "ncf", "preset": "online_retail", "epochs": "500"}, "Loss="),  # stopped between epochs
        ({"algorithm": "als", "preset": "online_retail", "max_iter": "300"}, "Setting default log level"),  # JVM up
    ],
    ids=["ncf", "als"],
)
def test_train_stops_on_sigterm(image: str, tmp_path: Path, hyperparameters: dict, busy: str) -> None:
    """StopTrainingJob / MaxRuntimeInSeconds = `docker stop`: SIGTERM to PID 1 (the `train` console script, no shell
    in between), SIGKILL 120 s later. train must stop promptly, say so in the failure file and leave no model."""
    base = make_opt_ml(tmp_path / "opt_ml", hyperparameters)
    name = unique_name("train-stop")
    docker("run", "-d", "--name", name, "-v", f"{base}:/opt/ml", image, "train")
    try:
        deadline = time.monotonic() + 120
        while busy not in (logs := docker("logs", name, check=False)).stdout + logs.stderr:
            running = docker("inspect", "-f", "{{.State.Running}}", name).stdout.strip() == "true"
            assert running and time.monotonic() < deadline, f"training did not start:\n{logs.stderr[-3000:]}"
            time.sleep(0.5)
        started = time.monotonic()
        docker("stop", "-t", "60", name, timeout=90)
        took = time.monotonic() - started
        code = docker("inspect", "-f", "{{.State.ExitCode}}", name).stdout.strip()
        print(f"\ntrain stopped {took:.1f} s after SIGTERM, exit code {code}")
        assert took < TRAIN_STOP_LIMIT_S, f"train took {took:.1f} s to stop after SIGTERM"
        assert code not in ("0", "137"), f"exit code {code}: a stopped job must fail, and not by SIGKILL"
        failure = base / "output/failure"
        assert failure.is_file() and "stop" in failure.read_text().lower(), failure.read_text()
        assert not (base / "model/manifest.json").exists()
    finally:
        docker("rm", "-f", name, check=False)


@pytest.mark.parametrize("algorithm", ["ncf", "als"])
def test_serve_answers_and_stops_on_sigterm(image: str, trained, algorithm: str) -> None:
    run, base = trained(algorithm)
    assert run.code == 0, "training failed; see test_train_writes_a_model"
    model_dir = base / "model"
    users, _ = model_ids(model_dir)
    port = free_port()
    name = unique_name(f"serve-{algorithm}")
    started = time.monotonic()
    publish, mount = f"127.0.0.1:{port}:8080", f"{model_dir}:/opt/ml/model:ro"
    docker("run", "-d", "--name", name, "-p", publish, "-v", mount, image, "serve")
    try:

        def alive() -> bool:
            state = docker("inspect", "-f", "{{.State.Running}}", name, check=False).stdout.strip()
            return state == "true"

        try:
            wait_for_ping(port, FIRST_PING_LIMIT_S, alive)
        except (TimeoutError, RuntimeError) as err:
            pytest.fail(f"{err}\n{docker('logs', name, check=False).stderr[-4000:]}")
        first_ping = time.monotonic() - started
        print(f"\n{algorithm}: first /ping 200 {first_ping:.1f} s after `docker run`")

        status, body, headers = http(
            "POST",
            f"http://127.0.0.1:{port}/invocations",
            json.dumps({"users": [users[0]], "k": 5}).encode(),
            {"Content-Type": "application/json", "Accept": "application/json"},
        )
        assert status == 200, body
        assert headers.get("Content-Type", "").startswith("application/json")
        assert_top_k(json.loads(body), users[0], 5)

        status, body, _ = http("GET", f"http://127.0.0.1:{port}/execution-parameters")
        assert status == 200 and json.loads(body)["BatchStrategy"] == "MultiRecord", body

        status, body, _ = http(
            "POST", f"http://127.0.0.1:{port}/invocations", b"{not json", {"Content-Type": "application/json"}
        )
        assert status == 400 and "error" in json.loads(body), body

        stop_started = time.monotonic()
        docker("stop", "-t", "20", name, timeout=60)
        stopped_in = time.monotonic() - stop_started
        code = docker("inspect", "-f", "{{.State.ExitCode}}", name).stdout.strip()
        logs = docker("logs", name, check=False)
        print(f"{algorithm}: stopped {stopped_in:.1f} s after SIGTERM, exit code {code}")
        assert code == "0", f"serve exited {code} after SIGTERM:\n{logs.stdout[-2000:]}{logs.stderr[-3000:]}"
        assert stopped_in < STOP_LIMIT_S, f"SIGTERM → exit took {stopped_in:.1f} s"
        assert "Traceback" not in logs.stdout + logs.stderr, logs.stderr[-3000:]
    finally:
        docker("rm", "-f", name, check=False)
