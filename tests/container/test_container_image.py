"""The image itself: how SageMaker starts it (CMD/ENTRYPOINT, root, label), what it carries and what it must not."""

from __future__ import annotations

import json
import re
import tomllib

import pytest

from .container_helpers import ROOT, docker, make_opt_ml, run_container

pytestmark = pytest.mark.container

# Run inside the image: facts about its file system, printed as JSON for precise assertions.
PROBE = r"""
import json, os, shutil, subprocess, sys
import torch
site = f"/opt/venv/lib/python{sys.version_info.major}.{sys.version_info.minor}/site-packages"
apt_lists = [n for n in os.listdir("/var/lib/apt/lists") if n not in ("lock", "partial", "auxfiles")] \
    if os.path.isdir("/var/lib/apt/lists") else []
java = subprocess.run(["java", "-version"], capture_output=True, text=True)
print(json.dumps({
    "uid": os.getuid(),
    "opt_ml_exists": os.path.exists("/opt/ml"),
    "train": shutil.which("train"),
    "serve": shutil.which("serve"),
    "nginx": shutil.which("nginx") or (os.access("/usr/sbin/nginx", os.X_OK) and "/usr/sbin/nginx"),
    "java_ok": java.returncode == 0 and "17." in java.stderr,
    "python": sys.version.split()[0],
    "compilers": [t for t in ("gcc", "cc", "g++", "make", "clang") if shutil.which(t)],
    "apt_lists": apt_lists,
    "pip_caches": [p for p in ("/root/.cache/pip", "/root/.cache") if os.path.exists(p)],
    "torch": torch.__version__,
    "torch_cuda": torch.version.cuda,
    "torch_test_binaries": os.path.exists(f"{site}/torch/test"),
    "pandas_tests": os.path.exists(f"{site}/pandas/tests"),
    "recsys_source_in_tmp": os.path.exists("/tmp/recsys-src") or os.path.exists("/tmp/recsys-deps"),
}))
"""


@pytest.fixture(scope="module")
def config(image: str) -> dict:
    return json.loads(docker("image", "inspect", image).stdout)[0]["Config"]


def test_started_the_way_sagemaker_starts_it(config: dict) -> None:
    # `docker run IMAGE train|serve` replaces CMD; no argument (SDK v3 ModelTrainer local mode) runs train.
    assert config.get("Cmd") == ["train"]
    assert not config.get("Entrypoint"), "no ENTRYPOINT: the train/serve console scripts are PID 1"
    assert config.get("User", "") in ("", "root", "0"), "SageMaker expects containers to run as root"
    assert (config.get("Labels") or {}).get("com.amazonaws.sagemaker.capabilities.accept-bind-to-port") == "true"


def test_environment(config: dict) -> None:
    env = dict(item.split("=", 1) for item in config.get("Env", []))
    assert env["PATH"].startswith("/opt/venv/bin:")
    assert env["PYTHONUNBUFFERED"] == "TRUE"
    assert env.get("PYTHONDONTWRITEBYTECODE")
    assert env["NVIDIA_VISIBLE_DEVICES"] == "all"
    assert env["NVIDIA_DRIVER_CAPABILITIES"] == "compute,utility"
    assert env["RECSYS_IMAGE_VARIANT"] == "cpu"


def test_contents(image: str) -> None:
    run = run_container(image, "python", "-c", PROBE, timeout=120)
    assert run.code == 0, run.logs
    facts = json.loads(run.logs.strip().splitlines()[-1])
    assert facts["uid"] == 0
    assert not facts["opt_ml_exists"], "nothing of ours under /opt/ml: SageMaker mounts over it"
    assert facts["train"] and facts["serve"], facts
    assert facts["nginx"], facts
    assert facts["java_ok"], "Java 17 is needed by Spark (ALS)"
    assert facts["python"].startswith("3.11"), facts
    assert facts["compilers"] == [], f"build tools in the runtime image: {facts['compilers']}"
    assert facts["apt_lists"] == [], "apt lists left in the image"
    assert facts["pip_caches"] == [], "pip cache left in the image"
    dependencies = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    pinned = next(m[1] for d in dependencies if (m := re.fullmatch(r"torch *== *(\S+)", d.strip())))
    assert facts["torch"].split("+")[0] == pinned, f"image torch {facts['torch']}, pyproject.toml pins {pinned}"
    assert facts["torch_cuda"] is None, "CPU variant must carry CPU torch"
    assert not facts["torch_test_binaries"] and not facts["pandas_tests"]
    assert not facts["recsys_source_in_tmp"]


def test_no_argument_runs_train(image: str, tmp_path) -> None:
    """SDK v3's ModelTrainer local mode starts the container with no command: it must run `train` (here on a bad
    configuration, which train reports in /opt/ml/output/failure: proof that train ran)."""
    base = make_opt_ml(tmp_path / "opt_ml", {"algorithm": "ncf", "preset": "online_retail", "factor_num": "0"})
    run = run_container(image, volumes={base: "/opt/ml"}, timeout=300)
    failure = base / "output/failure"
    assert run.code != 0, run.logs
    assert failure.is_file(), f"train did not run or wrote no failure file:\n{run.logs[-3000:]}"
    assert "factor_num" in failure.read_text()
