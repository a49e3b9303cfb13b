"""The notebooks, executed top to bottom by papermill against the image this run built (SDK local mode, no AWS),
each with small sizes through its tagged ``parameters`` cell. A notebook that fails, or runs past its budget, fails
the test; the executed copies are kept under the test's tmp dir for reading."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from .container_helpers import ROOT

pytestmark = pytest.mark.container

NOTEBOOKS = ROOT / "notebooks"

# Per notebook: the parameters CI passes and the wall-time budget (seconds) on the CI machine.
RUNS = {
    "01_quickstart_local.ipynb": (
        {
            "NCF_HYPERPARAMETERS": {"algorithm": "ncf", "preset": "online_retail", "epochs": 3},
            "ALS_HYPERPARAMETERS": {"algorithm": "als", "preset": "online_retail", "max_iter": 3},
        },
        300,
    ),
    "02_training_job_and_endpoint.ipynb": (
        {
            "MODE": "moto",
            "NCF_HYPERPARAMETERS": {"algorithm": "ncf", "preset": "online_retail", "epochs": 2},
            "ALS_HYPERPARAMETERS": {"algorithm": "als", "preset": "online_retail", "max_iter": 2},
        },
        300,
    ),
    "03_pipeline.ipynb": ({"HYPERPARAMETERS": {"algorithm": "ncf", "preset": "online_retail", "epochs": "2"}}, 240),
    "04_batch_recommendations.ipynb": (
        {"HYPERPARAMETERS": {"algorithm": "ncf", "preset": "online_retail", "epochs": "2"}},
        180,
    ),
}


def test_every_notebook_has_a_ci_run() -> None:
    assert sorted(p.name for p in NOTEBOOKS.glob("*.ipynb")) == sorted(RUNS)


@pytest.mark.parametrize("name", sorted(RUNS))
def test_notebook_runs_top_to_bottom(name: str, image: str, sdk_env, tmp_path: Path) -> None:
    import papermill

    parameters, budget_s = RUNS[name]
    executed = tmp_path / name
    started = time.monotonic()
    papermill.execute_notebook(
        str(NOTEBOOKS / name),
        str(executed),
        parameters={"IMAGE": image, "WORK_DIR": str(tmp_path / "work"), **parameters},
        cwd=str(NOTEBOOKS),
        kernel_name="python3",
        progress_bar=False,
    )
    seconds = time.monotonic() - started
    print(f"\n{name}: {seconds:.0f} s (executed copy: {executed})")
    cells = json.loads(executed.read_text())["cells"]
    errors = [o for c in cells for o in c.get("outputs", []) if o.get("output_type") == "error"]
    assert not errors, errors
    figures = [o for c in cells for o in c.get("outputs", []) if "image/png" in o.get("data", {})]
    assert figures, "the notebook drew no chart"
    assert seconds <= budget_s, f"{name} took {seconds:.0f} s, budget {budget_s} s"
