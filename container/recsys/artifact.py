"""The model artifact: a self-describing directory SageMaker tars into model.tar.gz.

Layout (schema version ``SCHEMA_VERSION``)::

    manifest.json   schema version, algorithm, hyperparameters, metrics, sizes, file list — written LAST
    ids.npz         users, items: raw ids in index order (strings)
    seen.npz        indptr, indices: each user's training items (CSR), popularity: distinct users per item
    <weights>       algorithm files (ncf: ncf.pt; als: als_factors.npz), listed in the manifest

Writing is staged: files go to a hidden directory inside the model dir, are moved into place, and the manifest is
moved last, so a job that dies midway never leaves a directory that ``load_model`` accepts.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tarfile
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from recsys import __version__
from recsys.data.ids import IdIndex
from recsys.models import Recommender, recommender_class
from recsys.training.hyperparameters import Hyperparameters, parse

log = logging.getLogger(__name__)

SCHEMA_VERSION = 1
MANIFEST = "manifest.json"
IDS = "ids.npz"
SEEN = "seen.npz"
STAGING_PREFIX = ".staging-"


class ArtifactError(Exception):
    """The model directory is missing, partial, or from an incompatible version."""


@dataclass
class LoadedModel:
    manifest: dict[str, Any]
    recommender: Recommender
    users: IdIndex
    items: IdIndex
    seen_indptr: np.ndarray
    seen_indices: np.ndarray
    popularity: np.ndarray  # distinct users per item

    @property
    def algorithm(self) -> str:
        return self.manifest["algorithm"]

    def seen_items(self, user: int) -> np.ndarray:
        return self.seen_indices[self.seen_indptr[user] : self.seen_indptr[user + 1]]


def write_model(
    model_dir: Path,
    recommender: Recommender,
    users: IdIndex,
    items: IdIndex,
    seen: tuple[np.ndarray, np.ndarray],
    popularity: np.ndarray,
    hp: Hyperparameters,
    metrics: dict[str, float],
    extra: dict[str, Any] | None = None,
) -> Path:
    """Write the artifact into ``model_dir`` atomically (manifest last). Returns the manifest path."""
    model_dir.mkdir(parents=True, exist_ok=True)
    for name in (MANIFEST,):
        if (model_dir / name).exists():  # an older model in the same dir must not mix with this one
            (model_dir / name).unlink()
    staging = Path(tempfile.mkdtemp(prefix=STAGING_PREFIX, dir=model_dir))
    try:
        np.savez(staging / IDS, users=users.ids, items=items.ids)
        indptr, indices = seen
        np.savez(staging / SEEN, indptr=indptr, indices=indices, popularity=popularity)
        weight_files = recommender.save(staging)
        files = [IDS, SEEN, *weight_files]
        manifest = {
            "schema_version": SCHEMA_VERSION,
            "recsys_version": __version__,
            "algorithm": recommender.algorithm,
            "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "n_users": len(users),
            "n_items": len(items),
            "hyperparameters": hp.for_algorithm(),
            "metrics": metrics,
            "files": {name: _sha256(staging / name) for name in files},
            **(extra or {}),
        }
        (staging / MANIFEST).write_text(json.dumps(manifest, indent=2, default=_json_default) + "\n")
        for name in files:
            os.replace(staging / name, model_dir / name)
        os.replace(staging / MANIFEST, model_dir / MANIFEST)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return model_dir / MANIFEST


def remove_partial(model_dir: Path) -> None:
    """After a failed job: remove staging dirs and any manifest-less leftovers we may have moved in."""
    if not model_dir.is_dir():
        return
    for child in model_dir.iterdir():
        if child.name.startswith(STAGING_PREFIX):
            shutil.rmtree(child, ignore_errors=True)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    return str(value)


def find_model_dir(model_dir: Path) -> Path:
    """The directory holding manifest.json: ``model_dir`` itself, or a model.tar.gz in it unpacked to a temp dir.

    SageMaker hosting unpacks model.tar.gz into /opt/ml/model; SDK local mode mounts a directory that may hold the
    tarball itself (and siblings such as output.tar.gz), so both are accepted. Extra files are ignored.
    """
    if (model_dir / MANIFEST).is_file():
        return model_dir
    tarball = model_dir / "model.tar.gz"
    if tarball.is_file():
        target = Path(tempfile.mkdtemp(prefix="recsys-model-"))
        with tarfile.open(tarball, "r:gz") as tar:
            tar.extractall(target, filter="data")
        if (target / MANIFEST).is_file():
            return target
        nested = [p.parent for p in target.rglob(MANIFEST)]
        if len(nested) == 1:
            return nested[0]
        raise ArtifactError(f"{tarball} holds no {MANIFEST}; it was not written by recsys `train`")
    raise ArtifactError(
        f"no model in {model_dir}: expected {MANIFEST} (a completed recsys training job) or model.tar.gz"
    )


def load_model(model_dir: Path, device: str | None = None) -> LoadedModel:
    """Load a complete artifact; refuse partial or incompatible ones with ``ArtifactError``."""
    root = find_model_dir(Path(model_dir))
    manifest = json.loads((root / MANIFEST).read_text())
    version = manifest.get("schema_version")
    if version != SCHEMA_VERSION:
        raise ArtifactError(f"model schema version {version!r} is not supported (this image reads {SCHEMA_VERSION})")
    missing = [name for name in manifest.get("files", {}) if not (root / name).is_file()]
    if missing:
        raise ArtifactError(f"model in {root} is incomplete: missing {', '.join(missing)}")
    with np.load(root / IDS, allow_pickle=False) as ids:
        users, items = IdIndex(ids["users"]), IdIndex(ids["items"])
    with np.load(root / SEEN, allow_pickle=False) as seen:
        indptr, indices, popularity = seen["indptr"], seen["indices"], seen["popularity"]
    hp = parse({k: json.dumps(v) for k, v in manifest["hyperparameters"].items()})
    cls = recommender_class(manifest["algorithm"])
    recommender = cls.load(root, hp, len(users), len(items), device=device)
    return LoadedModel(manifest, recommender, users, items, indptr, indices, popularity)
