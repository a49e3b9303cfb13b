"""The algorithm registry is the one list of algorithms: the built-in ones in order, declarations light to import, and
an extension installed the way a derived image installs one (a distribution with a ``recsys.algorithms`` entry point)
trains through the real `train` and serves, each in a fresh process."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from importlib.metadata import EntryPoint
from pathlib import Path

import pytest

import recsys.models as models
from helpers.opt_ml import ROOT, make_opt_ml
from recsys.models import Recommender, recommender_class, registry
from recsys.platform.errors import UserError
from recsys.training import hyperparameters as hpmod
from recsys.training.hyperparameters import parse

TOY = ROOT / "tests" / "helpers" / "toy_algorithm"
ENTRY_POINTS = "[recsys.algorithms]\ntoy = toy_algorithm:ALGORITHM\n"


@pytest.fixture(scope="module")
def toy_env(tmp_path_factory) -> dict[str, str]:
    """The environment of a process where the toy algorithm is installed: a site directory holding the package and
    its ``*.dist-info`` (METADATA + entry_points.txt), on PYTHONPATH."""
    site = tmp_path_factory.mktemp("site")
    shutil.copytree(TOY, site / "toy_algorithm", ignore=shutil.ignore_patterns("__pycache__"))
    info = site / "toy_recsys_algorithm-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: toy-recsys-algorithm\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(ENTRY_POINTS)
    path = os.pathsep.join(filter(None, [str(site), os.environ.get("PYTHONPATH")]))
    return {**os.environ, "PYTHONPATH": path}


def python(env: dict[str, str], code: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", code, *args], env=env, capture_output=True, text=True, timeout=300, check=False
    )


def train(env: dict[str, str], base: Path, hyperparameters: dict) -> subprocess.CompletedProcess:
    """The real `train` (``python -m recsys.training``) in a fresh process against ``base``."""
    (base / "input/config/hyperparameters.json").write_text(json.dumps({k: str(v) for k, v in hyperparameters.items()}))
    return subprocess.run(
        [sys.executable, "-m", "recsys.training"],
        env={**env, "SAGEMAKER_BASE_DIR": str(base)},
        cwd=base,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


@pytest.fixture
def fresh_registry():
    """Caches rebuilt from the registry before and after the test (undoing its patches first)."""

    def clear() -> None:
        registry.algorithms.cache_clear()
        hpmod._declarations.cache_clear()
        models._modules.cache_clear()

    clear()
    with pytest.MonkeyPatch.context() as mp:
        mp.syspath_prepend(str(TOY.parent))  # the toy package imports as `toy_algorithm`, as when installed
        yield mp
    clear()


def test_builtin_algorithms_come_first_each_with_its_recommender():
    assert registry.names()[:2] == ("ncf", "als")
    for name, spec in registry.algorithms().items():
        cls = recommender_class(name)
        assert issubclass(cls, Recommender) and cls.algorithm == name == spec.name
        assert spec.description and spec.fast and spec.params


def test_parsing_and_the_registry_import_neither_torch_nor_pyspark():
    code = (
        "import sys\n"
        "from recsys.models import registry\n"
        "from recsys.training.hyperparameters import markdown_table, parse\n"
        "for name in registry.names(): parse({'algorithm': name}).for_algorithm()\n"
        "markdown_table()\n"
        "print(sorted(m for m in ('torch', 'pyspark') if m in sys.modules))\n"
    )
    done = python(dict(os.environ), code)
    assert done.returncode == 0 and done.stdout.strip() == "[]", done.stderr


def test_unknown_algorithm_lists_the_registered_ones(toy_env):
    registered = ", ".join(registry.names())
    with pytest.raises(UserError, match=f"`algorithm` must be one of {registered}, got 'svd'"):
        parse({"algorithm": "svd"})
    with pytest.raises(ValueError, match=f"unknown algorithm 'svd'; choose one of {registered}"):
        recommender_class("svd")
    code = (
        "from recsys.training.hyperparameters import parse\n"
        "try: parse({'algorithm': 'svd'})\n"
        "except Exception as e: print(e)\n"
    )
    assert f"must be one of {registered}, toy, got 'svd'" in python(toy_env, code).stdout


def test_a_hyperparameter_declared_twice_is_refused(fresh_registry):
    registered = registry.algorithms()
    epochs = next(p for p in registered["ncf"].params if p.name == "epochs")
    clash = registry.Algorithm("clash", "x:Y", "declares NCF's epochs", params=(epochs,))
    fresh_registry.setattr(registry, "algorithms", lambda: {**registered, "clash": clash})
    with pytest.raises(registry.RegistryError, match="`epochs` is declared twice: by ncf and by clash"):
        parse({})


@pytest.mark.parametrize(
    "value, message",
    [
        ("toy_algorithm.model:ProjectionRecommender", "is not an Algorithm object"),
        ("toy_algorithm:ALGORITHM", "entry point 'other' names an Algorithm called 'toy'"),
        ("no_such_module:ALGORITHM", "could not be imported"),
    ],
)
def test_a_broken_entry_point_is_refused_by_name(fresh_registry, value, message):
    fresh_registry.setattr(registry, "entry_points", lambda group: [EntryPoint("other", value, group)])
    with pytest.raises(registry.RegistryError, match=message):
        registry.names()


SERVE = """
import json, sys
import numpy as np
from recsys.artifact import load_model
from recsys.serving.app import create_app

model = load_model(sys.argv[1])
rec = model.recommender
users = np.arange(3)
scores = rec.score(users, np.array([[0, 1], [2, 3], [4, 5]]))
assert scores.shape == (3, 2) and scores.dtype == np.float32 and np.isfinite(scores).all()
np.testing.assert_allclose(rec.score_all(users)[:, [0, 1]], rec.score(users, np.array([[0, 1]] * 3)), rtol=1e-5)
assert rec.item_vectors().shape[0] == model.manifest["n_items"]
user = model.users.raw(np.array([0]))[0]
client = create_app(sys.argv[1], load=True).test_client()
response = client.post("/invocations", json={"users": [user], "k": 5})
print(json.dumps({"class": type(rec).__name__, "status": response.status_code, "body": response.json}))
"""


def test_an_entry_point_algorithm_trains_through_train_and_serves(toy_env, tmp_path):
    base = make_opt_ml(tmp_path / "opt_ml")
    done = train(toy_env, base, {"algorithm": "toy", "preset": "online_retail", "projection_dim": 8})
    assert done.returncode == 0, done.stderr[-3000:]
    manifest = json.loads((base / "model/manifest.json").read_text())
    assert manifest["algorithm"] == "toy" and "toy_projection.npz" in manifest["files"]
    assert manifest["hyperparameters"]["projection_dim"] == 8  # its own, parsed from the string "8"
    assert "epochs" not in manifest["hyperparameters"] and "rank" not in manifest["hyperparameters"]
    assert 0.0 <= manifest["metrics"]["validation"]["HR"] <= 1.0
    assert "validation:HR@10=" in done.stdout

    served = python(toy_env, SERVE, str(base / "model"))
    assert served.returncode == 0, served.stderr[-3000:]
    answer = json.loads(served.stdout.strip().splitlines()[-1])
    assert answer["class"] == "ProjectionRecommender" and answer["status"] == 200
    (prediction,) = answer["body"]["predictions"]
    assert len(prediction["items"]) == 5 == len(prediction["scores"])


@pytest.mark.parametrize(
    "value, message",
    [
        ("0", "hyperparameter `projection_dim` must be an integer ≥ 1, ≤ 1024, got '0'"),
        ("wide", "hyperparameter `projection_dim` must be an integer ≥ 1, ≤ 1024, got 'wide'"),
    ],
)
def test_an_entry_point_algorithms_hyperparameter_is_validated(toy_env, tmp_path, value, message):
    base = make_opt_ml(tmp_path / "opt_ml")
    done = train(toy_env, base, {"algorithm": "toy", "preset": "online_retail", "projection_dim": value})
    assert done.returncode == UserError.exit_code
    assert (base / "output/failure").read_text().strip() == message
    assert not (base / "model/manifest.json").exists()


@pytest.mark.parametrize("algorithm", registry.names())
def test_checkpoint_fingerprint_leaves_out_what_the_algorithm_declares_weight_neutral(tmp_path, monkeypatch, algorithm):
    from types import SimpleNamespace

    from recsys.training import main as train_main

    monkeypatch.setattr(train_main, "data_fingerprint", lambda data: "d")
    hp = parse({"algorithm": algorithm})
    paths, resources = SimpleNamespace(checkpoint_dir=tmp_path), SimpleNamespace(current_host="algo-1")
    fingerprint = train_main._checkpointer(paths, hp, None, resources).fingerprint
    neutral = set(registry.get(algorithm).fingerprint_exclude)
    assert set(fingerprint) == (set(hp.for_algorithm()) - neutral) | {"data"}
    if algorithm == "ncf":
        assert neutral == {"device", "early_stopping_patience"}


def test_out_of_memory_names_what_to_reduce_in_every_algorithm(sagemaker_base, monkeypatch):
    from recsys.training import main as train_main

    def out_of_memory(*args):
        raise MemoryError

    monkeypatch.setattr(train_main, "run", out_of_memory)
    assert train_main.main() == 1
    reducible = " / ".join(p for spec in registry.algorithms().values() for p in spec.memory_params)
    reason = (sagemaker_base / "output/failure").read_text().strip()
    assert reason == f"out of memory: use a larger instance type or reduce {reducible}"
    assert reason.startswith("out of memory: use a larger instance type or reduce batch_size / factor_num / rank")
