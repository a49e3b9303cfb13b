"""What the MovieLens/retail benchmarks share: where the data is, a temporary /opt/ml tree around one data file, and
loading it through the real data layer with `train`'s evaluator."""

from __future__ import annotations

import json
import os
import resource
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "container"))  # the package from this checkout, installed or not

from recsys.platform.paths import SageMakerPaths  # noqa: E402
from recsys.training.evaluation import Evaluator  # noqa: E402
from recsys.training.hyperparameters import parse  # noqa: E402
from recsys.training.roles import load_training_data  # noqa: E402

SHARED = ROOT.parent / "shared" / "data"
ML100K = Path(os.environ.get("RECSYS_ML100K_DIR", SHARED / "ml-100k"))
RETAIL = Path(os.environ.get("RECSYS_RETAIL_CSV", SHARED / "online-retail" / "online_retail_sample.csv"))


def peak_rss_mb() -> float:
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def opt_ml_with(base: Path, data_file: Path, hyperparameters: dict) -> Path:
    """An /opt/ml tree at ``base``: ``data_file`` (linked) as the train channel, ``hyperparameters`` as strings."""
    train = base / "input" / "data" / "train"
    train.mkdir(parents=True)
    (train / data_file.name).symlink_to(data_file.resolve())
    config = base / "input" / "config"
    config.mkdir(parents=True)
    (config / "hyperparameters.json").write_text(json.dumps({k: str(v) for k, v in hyperparameters.items()}))
    return base


def load(data_file: Path, hyperparameters: dict):
    """(hyperparameters, TrainingData, validation Evaluator) for one data file (as the train channel), exactly as
    `train` builds them: validation carved from train. Figures from it are validation figures (what selects);
    held-out test figures come from benchmarks/quality.py."""
    with tempfile.TemporaryDirectory() as tmp:
        hp = parse(hyperparameters)
        data = load_training_data(SageMakerPaths(opt_ml_with(Path(tmp) / "opt_ml", data_file, hyperparameters)), hp)
    evaluator = Evaluator(
        data.train, data.validation, hp.top_k, hp.num_eval_negatives, hp.seed, known=data.known_pairs()
    )
    return hp, data, evaluator
