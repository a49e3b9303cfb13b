"""A real `train` process (``python -m recsys.training``) stopped by a real SIGTERM, as StopTrainingJob or
MaxRuntimeInSeconds do, with /opt/ml/checkpoints present: exit 143, "stopped: ..." in the failure file, no model,
a checkpoint — and a second job on the same checkpoints resumes from it and finishes."""

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

from helpers.opt_ml import make_opt_ml

NCF = {"algorithm": "ncf", "preset": "online_retail", "epochs": 12, "early_stopping_patience": 0}
ALS = {"algorithm": "als", "preset": "online_retail", "max_iter": 15}  # a refit long enough to be interrupted


def start_train(base: Path, hyperparameters: dict) -> subprocess.Popen:
    (base / "input/config/hyperparameters.json").write_text(json.dumps({k: str(v) for k, v in hyperparameters.items()}))
    env = {**os.environ, "SAGEMAKER_BASE_DIR": str(base), "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen(
        [sys.executable, "-m", "recsys.training"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def read_until(proc: subprocess.Popen, marker: str, timeout: float = 240) -> str:
    """The process's output up to and including the first line containing ``marker``."""
    lines, deadline = [], time.monotonic() + timeout
    for line in proc.stdout:
        lines.append(line)
        if marker in line:
            return "".join(lines)
        if time.monotonic() > deadline:
            break
    proc.kill()
    raise AssertionError(f"{marker!r} never appeared; output:\n{''.join(lines)[-4000:]}")


def stop_with_sigterm(proc: subprocess.Popen, base: Path) -> str:
    proc.send_signal(signal.SIGTERM)
    rest, _ = proc.communicate(timeout=120)
    assert proc.returncode == 143, rest[-3000:]
    reason = (base / "output/failure").read_text()
    assert reason.startswith("stopped:") and "SIGTERM" in reason, reason
    assert not (base / "model/manifest.json").exists()
    return rest


def finish(base: Path, hyperparameters: dict) -> str:
    proc = start_train(base, hyperparameters)
    out, _ = proc.communicate(timeout=600)
    assert proc.returncode == 0, out[-4000:]
    assert (base / "model/manifest.json").is_file()
    return out


def checkpoint_infos(base: Path) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted((base / "checkpoints").glob("*.json"))]


@pytest.fixture
def base(tmp_path: Path) -> Path:
    base = make_opt_ml(tmp_path / "opt_ml")
    (base / "checkpoints").mkdir()
    return base


def test_ncf_stopped_during_selection_resumes_from_its_checkpoint(base):
    proc = start_train(base, NCF)
    read_until(proc, "epoch=2;")  # two epochs checkpointed
    stop_with_sigterm(proc, base)
    saved = checkpoint_infos(base)
    assert saved and all(info["phase"] == "select" for info in saved)
    resumed_at = max(info["epoch"] for info in saved)

    out = finish(base, NCF)
    assert f"resuming at epoch {resumed_at}" in out or f"resuming at epoch {resumed_at + 1}" in out, out[-3000:]
    epochs = re.findall(r"(?m)^epoch=(\d+);", out)  # the per-epoch metric lines of this run
    assert epochs and "1" not in epochs and epochs[-1] == "12", epochs  # continued, not started over
    report = json.loads((base / "output/data/evaluation.json").read_text())
    assert report["refit"]["epochs"]["neumf"] >= 1 and report["info"]["resumed_from"]


def test_ncf_stopped_during_refit_keeps_the_selection_and_resumes_the_refit(base):
    proc = start_train(base, NCF)
    read_until(proc, "refit on all")  # the refit is starting: SIGTERM lands inside its first epoch
    stop_with_sigterm(proc, base)
    assert any(info["phase"] == "refit" for info in checkpoint_infos(base))

    out = finish(base, NCF)
    assert "selection finished in an earlier run" in out and not re.search(r"(?m)^epoch=", out)
    report = json.loads((base / "output/data/evaluation.json").read_text())
    assert report["refit"]["resumed_from"] and report["metrics"]["validation"]["best_epoch"] >= 1


def test_als_stopped_during_refit_resumes_with_the_refit_only(base):
    proc = start_train(base, ALS)
    read_until(proc, "ALS rank=")  # the selection fit is done (and checkpointed)
    stop_with_sigterm(proc, base)
    assert [info["phase"] for info in checkpoint_infos(base)] == ["select"]

    out = finish(base, ALS)
    assert "restored from checkpoint" in out and "(select fit)" in out
    assert out.count("ALS rank=") == 1  # one Spark fit: the refit
    report = json.loads((base / "output/data/evaluation.json").read_text())
    assert report["info"]["resumed_from_checkpoint"] == "select" and report["refit"]["interactions"] > 0
