"""Session fixtures for the container tests: a container engine (or a skip that says why), the CPU image built once
per run (layer cache reused), models trained once in the image, and an SDK environment with no AWS and no telemetry.

Environment knobs:
- ``RECSYS_TEST_IMAGE``: use this already-built image instead of building ``recsys-test:cpu``.
- ``RECSYS_REQUIRE_CONTAINER=1`` (set by .ci/run, and implied by ``CI=true``): a missing engine fails the run
  instead of skipping the container tests.
- ``RECSYS_TORCH_INDEX_URL``: the torch index for the CPU build (default: the Dockerfile's, or ``none`` when
  download.pytorch.org cannot be resolved — then torch comes from the indexes pip is configured with in the build,
  e.g. a local ``+cpu`` wheel the base image carries; the Dockerfile refuses a CUDA torch in the CPU variant).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from .container_helpers import (
    DEFAULT_IMAGE,
    DOCKERFILE,
    FAST,
    ROOT,
    Run,
    make_opt_ml,
    remove_containers_of,
    require_engine,
    run_container,
    torch_index_build_args,
)

BUILD_TIMEOUT_S = 40 * 60


@pytest.fixture(scope="session")
def docker_engine() -> str:
    """The engine's description; skips (or fails under CI) when no engine answers."""
    reason = None
    if shutil.which("docker") is None:
        reason = "the docker CLI is not installed"
    else:
        proc = subprocess.run(["docker", "info", "--format", "{{.ServerVersion}}"], capture_output=True, text=True)
        if proc.returncode != 0:
            reason = (
                "no container engine answers `docker info` (DOCKER_HOST="
                f"{os.environ.get('DOCKER_HOST', 'unset')}): {proc.stderr.strip()[:300]}. "
                'Run `make test-container` (it provisions one) or eval "$(../shared/tools/container-engine.sh)"'
            )
    if reason:
        if require_engine():
            pytest.fail(f"container tests required but {reason}")
        pytest.skip(reason)
    return proc.stdout.strip()


@pytest.fixture(scope="session")
def image(docker_engine: str, tmp_path_factory: pytest.TempPathFactory) -> str:
    """The CPU image, built once per session from the working tree (cached layers make a rebuild seconds)."""
    given = os.environ.get("RECSYS_TEST_IMAGE")
    if given:
        yield given
        remove_containers_of(given)
        return
    log = tmp_path_factory.getbasetemp() / "image-build.log"
    cmd = [
        "docker",
        "build",
        "--platform",
        "linux/amd64",
        "-f",
        str(DOCKERFILE),
        "--build-arg",
        "VARIANT=cpu",
        *torch_index_build_args(),
        "-t",
        DEFAULT_IMAGE,
        str(ROOT),
    ]
    started = time.monotonic()
    with log.open("w") as out:
        proc = subprocess.run(cmd, stdout=out, stderr=subprocess.STDOUT, timeout=BUILD_TIMEOUT_S)
    seconds = time.monotonic() - started
    tail = "".join(log.read_text().splitlines(keepends=True)[-60:])
    assert proc.returncode == 0, f"`{' '.join(cmd)}` failed after {seconds:.0f} s; log {log}:\n{tail}"
    print(f"\nimage {DEFAULT_IMAGE} built in {seconds:.1f} s (log: {log})")
    yield DEFAULT_IMAGE
    remove_containers_of(DEFAULT_IMAGE)


@pytest.fixture(scope="session")
def trained(image: str, tmp_path_factory: pytest.TempPathFactory):
    """``trained(algorithm)`` → (Run, /opt/ml dir) of ``docker run -v <dir>:/opt/ml IMAGE train`` on the fixture,
    run once per algorithm per session (the train tests assert on it; the serve tests use its model)."""
    cache: dict[str, tuple[Run, Path]] = {}

    def get(algorithm: str) -> tuple[Run, Path]:
        if algorithm not in cache:
            base = make_opt_ml(tmp_path_factory.mktemp(f"container-{algorithm}") / "opt_ml", FAST[algorithm])
            cache[algorithm] = (run_container(image, "train", volumes={base: "/opt/ml"}), base)
        return cache[algorithm]

    return get


@pytest.fixture(scope="session")
def sdk_env(tmp_path_factory: pytest.TempPathFactory):
    """Process environment for SageMaker SDK local mode: a region, no credentials, no AWS endpoint, telemetry off."""
    config = tmp_path_factory.mktemp("sdk-config") / "config.yaml"
    config.write_text("SchemaVersion: '1.0'\nSageMaker:\n  PythonSDK:\n    Modules:\n      TelemetryOptOut: true\n")
    values = {
        "SAGEMAKER_USER_CONFIG_OVERRIDE": str(config),
        "SAGEMAKER_SUPPRESS_V2_WARNING": "1",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_REGION": "us-east-1",
        "AWS_EC2_METADATA_DISABLED": "true",
    }
    with pytest.MonkeyPatch.context() as mp:
        for key, value in values.items():
            mp.setenv(key, value)
        mp.delenv("AWS_PROFILE", raising=False)
        yield values
