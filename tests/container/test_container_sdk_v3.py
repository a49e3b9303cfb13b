"""SageMaker Python SDK v3 local mode (the actively developed line), the real SDK in its own venv (.venv-sdk3:
v3 and the project's v2 cannot share one environment). tests/container/sdk_v3_driver.py trains with
``ModelTrainer(training_mode=Mode.LOCAL_CONTAINER)`` — which starts the container with no command, so the image's
default must be `train` — then hosts and batch-transforms through ``sagemaker.core.local.LocalSession``."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from .container_helpers import FAST, ROOT, assert_top_k, free_port, require_engine, split_fixture

pytestmark = pytest.mark.container

VENV = ROOT / ".venv-sdk3"
# Without the two pins pip backtracks for many minutes (sagemaker-core wants a newer boto3 than aiobotocore allows).
REQUIREMENTS = ["sagemaker>=3.20,<4", "boto3<1.44", "aiobotocore==3.10.0"]
DRIVER = ROOT / "tests" / "container" / "sdk_v3_driver.py"


@pytest.fixture(scope="module")
def sdk3_python() -> Path:
    """The SDK v3 venv's python, created here (a few minutes, once per machine) when missing."""
    python = VENV / "bin" / "python"
    probe = [str(python), "-c", "import sagemaker.train.model_trainer, sagemaker.core.local"]
    if python.exists() and subprocess.run(probe, capture_output=True).returncode == 0:
        return python
    started = time.monotonic()
    subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True)
    proc = subprocess.run(
        [str(VENV / "bin/pip"), "install", "-q", *REQUIREMENTS], capture_output=True, text=True, timeout=20 * 60
    )
    if proc.returncode != 0 or subprocess.run(probe, capture_output=True).returncode != 0:
        message = f"could not install SageMaker SDK v3 into {VENV}: {proc.stderr[-2000:]}"
        if require_engine():
            pytest.fail(message)
        pytest.skip(message)
    print(f"\ncreated {VENV} in {time.monotonic() - started:.0f} s")
    return python


@pytest.mark.parametrize("algorithm", ["ncf", "als"])
def test_model_trainer_and_local_session(image: str, sdk_env, sdk3_python: Path, algorithm: str, tmp_path: Path):
    train, test = split_fixture(tmp_path / "data")
    result_file = tmp_path / "result.json"
    hyperparameters = {k: v for k, v in FAST[algorithm].items() if k not in ("algorithm", "preset")}
    cmd = [
        str(sdk3_python),
        str(DRIVER),
        "--image",
        image,
        "--work",
        str(tmp_path / "work"),
        "--train",
        str(train),
        "--test",
        str(test),
        "--algorithm",
        algorithm,
        "--hyperparameters",
        json.dumps(hyperparameters),
        "--port",
        str(free_port()),
        "--result",
        str(result_file),
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=15 * 60, cwd=tmp_path)
    logs = proc.stdout + proc.stderr
    assert proc.returncode == 0, f"SDK v3 driver failed ({proc.returncode}):\n{logs[-6000:]}"
    result = json.loads(result_file.read_text())
    print(f"\nSDK v3 {algorithm}: train {result['train_s']:.1f} s, endpoint ready {result['endpoint_ready_s']:.1f} s")

    assert Path(result["model_tar"]).is_file()
    assert "HR=" in logs, "the training log (metric lines) is streamed by ModelTrainer"
    assert_top_k(result["prediction"], result["user"], 5)
    assert (result.get("content_type") or "application/json").startswith("application/json")

    lines = result["batch_output"].splitlines()
    requests = result["batch_requests"]
    assert len(lines) == len(requests), result["batch_output"]
    for request, line in zip(requests, lines, strict=True):
        predictions = json.loads(line)["predictions"]
        assert [str(p["user"]) for p in predictions] == [str(u) for u in request["users"]]
        assert all(len(p["items"]) == request["k"] for p in predictions)
    cold = json.loads(lines[1])["predictions"][1]
    assert cold.get("cold_start") is True, cold
