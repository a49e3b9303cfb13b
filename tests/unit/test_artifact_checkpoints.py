import json
import os
import signal
import tarfile
import threading

import numpy as np
import pytest

from helpers.algorithms import ALGORITHMS
from recsys.artifact import ArtifactError, load_model, remove_partial, write_model
from recsys.platform.checkpoints import Checkpointer
from recsys.platform.errors import TrainingStopped, UserError
from recsys.platform.lifecycle import StopController


def test_loader_refuses_a_directory_without_manifest(tmp_path):
    (tmp_path / "ids.npz").write_bytes(b"partial")
    with pytest.raises(ArtifactError, match="no model"):
        load_model(tmp_path)


def test_loader_refuses_missing_files_and_unknown_schema(trained_model_dir, tmp_path):
    import shutil

    model = tmp_path / "m"
    shutil.copytree(trained_model_dir("ncf"), model)
    manifest = json.loads((model / "manifest.json").read_text())
    (model / "seen.npz").unlink()
    with pytest.raises(ArtifactError, match="missing seen.npz"):
        load_model(model)
    manifest["schema_version"] = 99
    (model / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ArtifactError, match="schema version 99"):
        load_model(model)


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_model_tar_gz_layout_of_sdk_local_mode_is_accepted(trained_model_dir, tmp_path, algorithm):
    src = trained_model_dir(algorithm)
    with tarfile.open(tmp_path / "model.tar.gz", "w:gz") as tar:
        for f in src.iterdir():
            tar.add(f, arcname=f.name)
    (tmp_path / "output.tar.gz").write_bytes(b"sibling file the loader must ignore")
    loaded = load_model(tmp_path)
    direct = load_model(src)
    assert loaded.algorithm == algorithm and loaded.manifest == direct.manifest
    users = np.arange(min(5, len(direct.users)))
    assert np.allclose(loaded.recommender.score_all(users), direct.recommender.score_all(users))


def test_manifest_is_self_describing(trained_model_dir):
    manifest = json.loads((trained_model_dir("ncf") / "manifest.json").read_text())
    assert manifest["schema_version"] == 1 and manifest["algorithm"] == "ncf"
    assert {"HR", "NDCG"} <= set(manifest["metrics"]["validation"]) and manifest["hyperparameters"]["model_type"]
    assert manifest["evaluation"]["held_out"] == {"validation": True} and manifest["evaluation"]["refit"]["epochs"]
    assert set(manifest["files"]) >= {"ids.npz", "seen.npz"}
    assert manifest["n_users"] > 0 and manifest["n_items"] > 0 and "data" in manifest


def test_remove_partial_cleans_staging(tmp_path):
    (tmp_path / ".staging-abc").mkdir()
    (tmp_path / ".staging-abc" / "ids.npz").write_text("x")
    remove_partial(tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_write_model_failure_leaves_no_manifest(tmp_path):
    class Broken:
        algorithm = "ncf"

        def save(self, directory):
            raise OSError("disk full")

    from recsys.data.ids import IdIndex
    from recsys.training.hyperparameters import parse

    with pytest.raises(OSError):
        write_model(
            tmp_path,
            Broken(),
            IdIndex(["a"]),
            IdIndex(["b"]),
            (np.array([0, 1]), np.array([0])),
            np.ones(1),
            parse({}),
            {},
        )
    assert not (tmp_path / "manifest.json").exists() and list(tmp_path.iterdir()) == []


def test_checkpointer_round_trip_rotation_and_refusal(tmp_path):
    ck = Checkpointer(tmp_path, "ncf", {"lr": 0.1, "data": "abc"}, host="algo-1-xyz")
    assert ck.latest() is None
    for step in range(1, 5):
        ck.save(step, lambda p, s=step: p.write_text(str(s)))
    path, meta = ck.latest()
    assert path.read_text() == "4" and meta["step"] == 4 and "algo-1-xyz" in path.name
    assert len(list(tmp_path.glob("*.ckpt"))) == 2  # only the newest two kept
    other = Checkpointer(tmp_path, "ncf", {"lr": 0.2, "data": "abc"})
    with pytest.raises(UserError, match="refusing to resume.*lr: checkpoint 0.1 vs job 0.2"):
        other.latest()


def test_torn_checkpoint_without_sidecar_is_not_resumed(tmp_path):
    ck = Checkpointer(tmp_path, "ncf", {"a": 1})
    (tmp_path / "ncf-algo-1-step000009.ckpt").write_text("torn")
    assert ck.latest() is None


def test_stop_controller_check_and_interruptible():
    stop = StopController().install()
    stop.check()
    timer = threading.Timer(0.2, lambda: os.kill(os.getpid(), signal.SIGTERM))
    timer.start()
    with pytest.raises(TrainingStopped), stop.interruptible():
        threading.Event().wait(5)  # a long blocking call, interrupted by SIGTERM
    assert stop.requested
    with pytest.raises(TrainingStopped):
        stop.check()
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
