"""Shared fixtures: a fresh copy of opt_ml_fixture per test, MovieLens (skipped when absent, a failure under CI),
trained models."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FIXTURE = ROOT / "opt_ml_fixture"
# MovieLens-100K is never committed (research license): read it from ../shared/data or RECSYS_ML100K_DIR.
ML100K = Path(os.environ.get("RECSYS_ML100K_DIR", ROOT.parent / "shared" / "data" / "ml-100k"))


def make_opt_ml(
    base: Path, hyperparameters: dict | None = None, channels: dict[str, Path | list[Path]] | None = None
) -> Path:
    """Copy opt_ml_fixture to ``base``; optionally replace hyperparameters (values stringified as SageMaker does)
    and the data channels (name → file(s) to copy)."""
    shutil.copytree(FIXTURE, base, ignore=shutil.ignore_patterns("README.md"))
    if hyperparameters is not None:
        (base / "input/config/hyperparameters.json").write_text(
            json.dumps({k: v if isinstance(v, str) else json.dumps(v) for k, v in hyperparameters.items()})
        )
    if channels is not None:
        shutil.rmtree(base / "input/data")
        for name, files in channels.items():
            target = base / "input/data" / name
            target.mkdir(parents=True)
            for f in files if isinstance(files, list) else [files]:
                shutil.copy(f, target / Path(f).name)
    return base


@pytest.fixture
def opt_ml(tmp_path: Path) -> Path:
    """A fresh /opt/ml tree (copy of opt_ml_fixture)."""
    return make_opt_ml(tmp_path / "opt_ml")


@pytest.fixture
def sagemaker_base(opt_ml: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("SAGEMAKER_BASE_DIR", str(opt_ml))
    return opt_ml


def data_required() -> bool:
    """Under CI (``CI=true``) or with ``RECSYS_REQUIRE_DATA=1``, missing real data fails the run instead of skipping."""
    return os.environ.get("RECSYS_REQUIRE_DATA", "") == "1" or os.environ.get("CI", "").lower() == "true"


@pytest.fixture(scope="session")
def ml100k() -> Path:
    if not (ML100K / "u.data").is_file():
        message = f"MovieLens-100K not found at {ML100K} (set RECSYS_ML100K_DIR); see README"
        if data_required():
            pytest.fail(message + " — required under CI / RECSYS_REQUIRE_DATA=1", pytrace=False)
        pytest.skip(message)
    return ML100K


def train_in(base: Path, hyperparameters: dict) -> int:
    """Run the real `train` entry point against ``base`` (in-process)."""
    from recsys.training.main import main

    (base / "input/config/hyperparameters.json").write_text(
        json.dumps({k: v if isinstance(v, str) else json.dumps(v) for k, v in hyperparameters.items()})
    )
    old = os.environ.get("SAGEMAKER_BASE_DIR")
    os.environ["SAGEMAKER_BASE_DIR"] = str(base)
    try:
        return main()
    finally:
        if old is None:
            os.environ.pop("SAGEMAKER_BASE_DIR", None)
        else:
            os.environ["SAGEMAKER_BASE_DIR"] = old


# Small, fast settings for models the serving and contract tests train on the fixture.
FAST = {
    "ncf": {"algorithm": "ncf", "preset": "online_retail", "epochs": 2},
    "als": {"algorithm": "als", "preset": "online_retail", "max_iter": 3},
}


@pytest.fixture(scope="session")
def trained_model_dir(tmp_path_factory: pytest.TempPathFactory):
    """``trained_model_dir(algorithm)`` → the /opt/ml/model dir of a model trained once per session on the fixture."""
    cache: dict[str, Path] = {}

    def get(algorithm: str) -> Path:
        if algorithm not in cache:
            base = make_opt_ml(tmp_path_factory.mktemp(f"trained-{algorithm}") / "opt_ml")
            code = train_in(base, FAST[algorithm])
            assert code == 0, (base / "output/failure").read_text() if (base / "output/failure").exists() else code
            cache[algorithm] = base / "model"
        return cache[algorithm]

    return get
