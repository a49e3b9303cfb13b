"""Every bad input fails fast through the real `train` entry point: a clear reason in output/failure, a non-zero
exit, and no model that looks valid."""

import json
import subprocess
import sys

import pytest

from helpers.opt_ml import make_opt_ml, train_in

RETAIL = "opt_ml_fixture/input/data/train/online_retail_subset.csv"


def assert_failed(base, code, fragment):
    assert code != 0
    reason = (base / "output/failure").read_text()
    assert fragment in reason, reason
    assert len(reason) <= 1025 and "Traceback" not in reason
    assert not (base / "model/manifest.json").exists()
    assert (
        not any(p.name.startswith(".staging") for p in (base / "model").glob("*"))
        if (base / "model").exists()
        else True
    )


@pytest.mark.parametrize(
    "hyperparameters, fragment",
    [
        ({"preset": "online_retail", "lr": "-1"}, "`lr` must be a number > 0"),
        ({"preset": "online_retail", "factor_num": "0"}, "`factor_num` must be an integer ≥ 1"),
        ({"preset": "online_retail", "epochs": "ten"}, "`epochs` must be an integer"),
        ({"algorithm": "svd"}, "`algorithm` must be one of ncf, als"),
        ({"preset": "online_retail", "learning_rate": "0.1"}, "unknown hyperparameter(s) learning_rate"),
        ({"preset": "none", "user_col": "customer"}, "column 'customer' (`user_col`) not found"),
    ],
)
def test_bad_hyperparameters(opt_ml, hyperparameters, fragment):
    assert_failed(opt_ml, train_in(opt_ml, hyperparameters), fragment)


def test_missing_train_channel(tmp_path):
    base = make_opt_ml(tmp_path / "o", channels={"validation": [RETAIL]})
    assert_failed(base, train_in(base, {"preset": "online_retail"}), "no `train` channel")


def test_empty_file(tmp_path):
    (tmp_path / "empty.csv").write_text("")
    base = make_opt_ml(tmp_path / "o", channels={"train": [tmp_path / "empty.csv"]})
    assert_failed(base, train_in(base, {"preset": "online_retail"}), "empty.csv is empty")


def test_not_a_csv_file(tmp_path):
    (tmp_path / "model.bin").write_bytes(bytes(range(256)) * 40)
    base = make_opt_ml(tmp_path / "o", channels={"train": [tmp_path / "model.bin"]})
    assert_failed(base, train_in(base, {"preset": "online_retail"}), "model.bin is not a CSV/TSV or Parquet file")


def test_misnamed_columns(tmp_path):
    (tmp_path / "x.csv").write_text("cust,prod\n1,2\n3,4\n")
    base = make_opt_ml(tmp_path / "o", channels={"train": [tmp_path / "x.csv"]})
    assert_failed(base, train_in(base, {}), "no user column found among ['cust', 'prod']")


def test_corrupt_hyperparameters_json(opt_ml, monkeypatch):
    (opt_ml / "input/config/hyperparameters.json").write_text("{not json")
    from recsys.training.main import main

    monkeypatch.setenv("SAGEMAKER_BASE_DIR", str(opt_ml))
    assert_failed(opt_ml, main(), "hyperparameters.json")


def test_checkpoint_from_a_different_configuration_is_refused(tmp_path):
    base = make_opt_ml(tmp_path / "o")
    (base / "checkpoints").mkdir()
    assert train_in(base, {"preset": "online_retail", "epochs": 1}) == 0
    assert list((base / "checkpoints").glob("*.ckpt"))
    (base / "model/manifest.json").unlink()
    code = train_in(base, {"preset": "online_retail", "epochs": 1, "factor_num": 4})
    assert_failed(base, code, "refusing to resume")
    assert "factor_num" in (base / "output/failure").read_text()


def train_process(opt_ml, hyperparameters: dict) -> subprocess.CompletedProcess:
    """`python -m recsys.training` in its own process, as the image's console script runs."""
    (opt_ml / "input/config/hyperparameters.json").write_text(json.dumps(hyperparameters))
    return subprocess.run(
        [sys.executable, "-m", "recsys.training"],
        env={"SAGEMAKER_BASE_DIR": str(opt_ml), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_failure_file_and_exit_code_through_the_console_script(opt_ml):
    proc = train_process(opt_ml, {"lr": "-1"})
    assert proc.returncode == 2
    assert "`lr` must be a number > 0" in (opt_ml / "output/failure").read_text()
    assert "`lr` must be a number > 0" in proc.stderr  # the log says it too


def test_internal_error_exits_1_with_a_short_reason_through_the_console_script(opt_ml):
    # /opt/ml/model is a file, not a directory: writing the model fails inside our code (not the user's input).
    (opt_ml / "model").write_text("not a directory")
    proc = train_process(opt_ml, {"preset": "online_retail", "epochs": "1"})
    assert proc.returncode == 1, proc.stderr[-2000:]
    reason = (opt_ml / "output/failure").read_text()
    assert reason.startswith("internal error (") and "Traceback" not in reason, reason
    assert "Traceback" in proc.stderr  # the log keeps it
