"""The repository's paths, /opt/ml trees copied from opt_ml_fixture, and the real `train` run in-process."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
FIXTURE = ROOT / "opt_ml_fixture"
RETAIL_SAMPLE = FIXTURE / "input/data/train/online_retail_subset.csv"
# MovieLens-100K is never committed (research license): read it from ../shared/data or RECSYS_ML100K_DIR.
ML100K = Path(os.environ.get("RECSYS_ML100K_DIR", ROOT.parent / "shared" / "data" / "ml-100k"))


def as_sagemaker_strings(hyperparameters: dict) -> dict[str, str]:
    """Every value a string, as SageMaker delivers hyperparameters.json (non-strings JSON-encoded)."""
    return {k: v if isinstance(v, str) else json.dumps(v) for k, v in hyperparameters.items()}


def write_hyperparameters(base: Path, hyperparameters: dict) -> None:
    path = base / "input/config/hyperparameters.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(as_sagemaker_strings(hyperparameters)))


def make_opt_ml(
    base: Path, hyperparameters: dict | None = None, channels: dict[str, Path | list[Path]] | None = None
) -> Path:
    """Copy opt_ml_fixture to ``base``; optionally replace the hyperparameters and the data channels (name → a file,
    a list of files, or a directory whose files are copied)."""
    shutil.copytree(FIXTURE, base, ignore=shutil.ignore_patterns("README.md"))
    if hyperparameters is not None:
        write_hyperparameters(base, hyperparameters)
    if channels is not None:
        shutil.rmtree(base / "input/data")
        for name, files in channels.items():
            target = base / "input/data" / name
            target.mkdir(parents=True)
            if isinstance(files, Path) and files.is_dir():
                files = sorted(p for p in files.iterdir() if p.is_file())
            for f in files if isinstance(files, list) else [files]:
                shutil.copy(f, target / Path(f).name)
    return base


def train_in(base: Path, hyperparameters: dict) -> int:
    """Run the real `train` entry point against ``base`` (in-process); returns its exit code."""
    from recsys.training.main import main

    write_hyperparameters(base, hyperparameters)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("SAGEMAKER_BASE_DIR", str(base))
        return main()


def data_required() -> bool:
    """Under CI (``CI=true``) or with ``RECSYS_REQUIRE_DATA=1``, missing real data fails the run instead of skipping."""
    return os.environ.get("RECSYS_REQUIRE_DATA", "") == "1" or os.environ.get("CI", "").lower() == "true"
