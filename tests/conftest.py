"""Shared fixtures: a fresh copy of opt_ml_fixture per test, MovieLens (skipped when absent, a failure under CI),
trained models."""

from __future__ import annotations

from pathlib import Path

import pytest

from helpers.algorithms import FAST
from helpers.opt_ml import ML100K, data_required, make_opt_ml, train_in


@pytest.fixture
def opt_ml(tmp_path: Path) -> Path:
    """A fresh /opt/ml tree (copy of opt_ml_fixture)."""
    return make_opt_ml(tmp_path / "opt_ml")


@pytest.fixture
def sagemaker_base(opt_ml: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("SAGEMAKER_BASE_DIR", str(opt_ml))
    return opt_ml


@pytest.fixture(scope="session")
def ml100k() -> Path:
    if not (ML100K / "u.data").is_file():
        message = f"MovieLens-100K not found at {ML100K} (set RECSYS_ML100K_DIR); see README"
        if data_required():
            pytest.fail(message + " — required under CI / RECSYS_REQUIRE_DATA=1", pytrace=False)
        pytest.skip(message)
    return ML100K


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
