"""The three data roles through the real `train`: the test channel never influences the model (byte-identical
model files whether it is absent, real or shuffled), validation selects, refit ships a model that saw all of
train, and the same data passed as train and test is flagged as not held-out."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from helpers.algorithms import ALGORITHMS, FAST
from helpers.opt_ml import FIXTURE, make_opt_ml, train_in

SOURCE = next((FIXTURE / "input/data/train").glob("*.csv"))


@pytest.fixture(scope="module")
def channel_files(tmp_path_factory) -> dict[str, Path]:
    """train.csv (all but each customer's latest row), test.csv (those rows) and shuffled.csv (test, reordered)."""
    out = tmp_path_factory.mktemp("roles")
    frame = pd.read_csv(SOURCE, dtype=str)
    valid = frame["CustomerID"].notna() & ~frame["InvoiceNo"].str.startswith("C")
    order = frame[valid].assign(_t=pd.to_datetime(frame["InvoiceDate"])).sort_values(["CustomerID", "_t"])
    latest = order.index[~order.duplicated("CustomerID", keep="last")]
    frame.drop(index=latest).to_csv(out / "train.csv", index=False)
    test = frame.loc[latest]
    test.to_csv(out / "test.csv", index=False)
    test.sample(frac=1.0, random_state=3).to_csv(out / "shuffled.csv", index=False)
    return {"train": out / "train.csv", "test": out / "test.csv", "shuffled": out / "shuffled.csv"}


def run(tmp_path: Path, name: str, hyperparameters: dict, channels: dict) -> Path:
    base = make_opt_ml(tmp_path / name, channels=channels)
    assert train_in(base, hyperparameters) == 0, (base / "output/failure").read_text()
    return base


def model_files(base: Path) -> dict[str, bytes]:
    manifest = json.loads((base / "model/manifest.json").read_text())
    return {name: (base / "model" / name).read_bytes() for name in manifest["files"]}


def report(base: Path) -> dict:
    return json.loads((base / "output/data/evaluation.json").read_text())


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_model_files_are_byte_identical_whatever_the_test_channel(tmp_path, channel_files, algorithm):
    hp = FAST[algorithm]
    train = channel_files["train"]
    absent = run(tmp_path, "absent", hp, {"train": train})
    real = run(tmp_path, "real", hp, {"train": train, "test": channel_files["test"]})
    shuffled = run(tmp_path, "shuffled", hp, {"train": train, "test": channel_files["shuffled"]})
    files = model_files(absent)
    assert files and model_files(real) == files and model_files(shuffled) == files
    # Validation (what selected the model) is the same in all three; test is reported only where it exists.
    assert report(real)["metrics"]["validation"] == report(absent)["metrics"]["validation"]
    assert "test" not in report(absent)["metrics"] and report(absent)["held_out"] == {"validation": True}
    # Fixed negatives per user: the same test metrics in any row order (up to the order of the float sums).
    assert report(real)["metrics"]["test"] == pytest.approx(report(shuffled)["metrics"]["test"], rel=1e-12)
    # Retail customers re-buy: some latest purchases repeat an earlier one, so this test set is not all held-out.
    repeats = report(real)["data"]["overlap_with_train"]["test"]
    assert report(real)["held_out"] == {"validation": True, "test": repeats == 0}
    assert any("no test channel" in note for note in report(absent)["notes"])


def test_refit_ships_a_model_trained_on_all_of_train(tmp_path, channel_files):
    channels = {"train": channel_files["train"], "test": channel_files["test"]}
    refit = run(tmp_path, "refit", FAST["ncf"], channels)
    plain = run(tmp_path, "plain", {**FAST["ncf"], "refit": "false"}, channels)
    r, p = report(refit), report(plain)
    assert r["metrics"]["validation"] == p["metrics"]["validation"]  # measured before the refit: same selection
    assert r["refit"]["epochs"] == {"neumf": r["metrics"]["validation"]["best_epoch"]}
    assert r["refit"]["interactions"] == r["data"]["train_interactions"] + r["data"]["validation_interactions"]
    assert {"select_seconds", "refit_seconds", "test_seconds"} <= set(r["phases"])
    assert p["refit"] is None and "refit_seconds" not in p["phases"]
    assert any("refit=false" in note for note in p["notes"])
    assert model_files(refit)["ncf.pt"] != model_files(plain)["ncf.pt"]
    manifest = json.loads((plain / "model/manifest.json").read_text())
    assert manifest["hyperparameters"]["refit"] is False and manifest["evaluation"]["refit"] is None


def test_a_validation_channel_selects_and_nothing_is_carved_or_refit(tmp_path, channel_files):
    base = run(
        tmp_path,
        "validation",
        FAST["ncf"],
        {"train": channel_files["train"], "validation": channel_files["test"]},
    )
    r = report(base)
    assert r["data"]["validation_source"] == "validation channel" and r["refit"] is None
    assert r["data"]["train_interactions"] == r["data"]["train"]["interactions"]
    assert "test" not in r["metrics"]


def test_same_data_as_train_and_test_is_flagged_not_held_out(tmp_path, capsys):
    base = run(tmp_path, "same", FAST["ncf"], {"train": SOURCE, "test": SOURCE})
    r = report(base)
    overlap = r["data"]["overlap_with_train"]["test"]
    assert overlap == r["data"]["test_interactions"] > 0
    assert r["held_out"]["test"] is False
    assert any("not held-out" in note for note in r["notes"])
    manifest = json.loads((base / "model/manifest.json").read_text())
    assert manifest["evaluation"]["held_out"]["test"] is False
    assert f"{overlap} of {overlap} test pairs also occur in the train channel" in capsys.readouterr().err
