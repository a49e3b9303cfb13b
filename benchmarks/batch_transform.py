"""Batch transform throughput: top-K for every user of a synthetic ALS model, through SageMaker SDK local mode.

The model is written directly as a model directory (random numpy factors, a few seen items per user, through
``recsys.artifact.write_model`` and the ALS recommender's own save), packed as model.tar.gz, and served by the image
as a local transform job: JSON Lines input (one ``{"users": [...], "k": K}`` record per ``--users-per-line`` users),
``SplitType=Line``, ``BatchStrategy=MultiRecord``, ``AssembleWith=Line``. The figures: users/s over the whole job
(container start and model load included) and over the requests alone, and how the transform sized its requests —
the container's ``/execution-parameters`` answer, the requests sent, records and bytes per request.

    .venv/bin/python benchmarks/batch_transform.py --image recsys-test:cpu [--users 100000] [--items 10000]

Needs a Docker-compatible engine and the SageMaker SDK v2 (the project venv); no AWS account.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import socket
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "container"))  # the package from this checkout, installed or not

from recsys.artifact import write_model  # noqa: E402
from recsys.data.ids import IdIndex  # noqa: E402
from recsys.models.als.model import ALSRecommender  # noqa: E402
from recsys.pipeline import batch  # noqa: E402
from recsys.training.hyperparameters import parse  # noqa: E402

ROLE = "arn:aws:iam::111111111111:role/SageMakerRole"  # local mode does not check it


def synthetic_model(model_dir: Path, n_users: int, n_items: int, rank: int, seen_per_user: int, seed: int) -> Path:
    """An ALS model directory: Gaussian factors, ``seen_per_user`` distinct training items per user."""
    if seen_per_user >= n_items:
        raise ValueError(f"--seen-per-user ({seen_per_user}) must be below --items ({n_items})")
    rng = np.random.default_rng(seed)
    scale = 1.0 / np.sqrt(rank)
    user_factors = rng.normal(0.0, scale, (n_users, rank)).astype(np.float32)
    item_factors = rng.normal(0.0, scale, (n_items, rank)).astype(np.float32)
    # Distinct items per user without an n_users × n_items matrix: sorted draws, resampled where they collide.
    seen = np.sort(rng.integers(0, n_items, (n_users, seen_per_user)), axis=1)
    while (clash := (np.diff(seen, axis=1) == 0).any(axis=1)).any():
        seen[clash] = np.sort(rng.integers(0, n_items, (int(clash.sum()), seen_per_user)), axis=1)
    indptr = np.arange(0, n_users * seen_per_user + 1, seen_per_user, dtype=np.int64)
    indices = seen.reshape(-1).astype(np.int32)
    popularity = np.bincount(indices, minlength=n_items).astype(np.int64)
    hp = parse({"algorithm": "als", "rank": str(rank)})
    recommender = ALSRecommender(hp, n_users, n_items, user_factors, item_factors)
    users = IdIndex([f"u{i}" for i in range(n_users)])
    items = IdIndex([f"sku-{i}" for i in range(n_items)])
    extra = {"synthetic": {"seed": seed, "seen_per_user": seen_per_user}}
    write_model(model_dir, recommender, users, items, (indptr, indices), popularity, hp, metrics={}, extra=extra)
    return model_dir


def pack(model_dir: Path, archive: Path) -> Path:
    with tarfile.open(archive, "w:gz", compresslevel=1) as tar:
        for path in sorted(model_dir.iterdir()):
            tar.add(path, arcname=path.name)
    return archive


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def remove_local_containers(root: Path) -> None:
    """Containers local mode left for this run: their compose project lives under our container root."""
    listing = subprocess.run(
        ["docker", "ps", "-a", "--format", '{{.ID}} {{.Label "com.docker.compose.project.working_dir"}}'],
        capture_output=True,
        text=True,
    ).stdout
    ids = [line.split()[0] for line in listing.splitlines() if str(root) in line]
    if ids:
        subprocess.run(["docker", "rm", "-f", *ids], capture_output=True)


def transform(args: argparse.Namespace, work: Path, model_data: Path, inputs: Path) -> tuple[float, dict]:
    """Run the local transform job; (wall seconds, what it sent)."""
    from sagemaker.local import LocalSession
    from sagemaker.model import Model

    root = work / "containers"
    root.mkdir()
    session = LocalSession()
    session.config = {"local": {"local_code": True, "container_root": str(root), "serving_port": free_port()}}
    model = Model(image_uri=args.image, model_data=f"file://{model_data}", role=ROLE, sagemaker_session=session)
    transformer = model.transformer(
        instance_count=1,
        instance_type="local",
        strategy="MultiRecord",
        assemble_with="Line",
        accept="application/jsonlines",
        output_path=f"file://{work / 'out'}",
        max_payload=args.max_payload_mb,
    )
    started = time.monotonic()
    try:
        with batch.record_local_transform(session) as record:
            transformer.transform(
                f"file://{inputs}",
                content_type="application/jsonlines",
                split_type="Line",
                job_name=f"recsys-bench-{int(time.time())}",
                wait=True,
                logs=False,
            )
    finally:
        remove_local_containers(root)
    return time.monotonic() - started, record.summary()


def run(args: argparse.Namespace, work: Path) -> dict:
    started = time.monotonic()
    model_dir = synthetic_model(work / "model", args.users, args.items, args.rank, args.seen_per_user, args.seed)
    # A folder of its own: local mode unpacks a file:// model.tar.gz next to itself and mounts that folder.
    (work / "archive").mkdir()
    archive = pack(model_dir, work / "archive" / "model.tar.gz")
    build_s = time.monotonic() - started
    users = [f"u{i}" for i in range(args.users)]
    requests_file = work / "in" / "users.jsonl"
    lines = batch.write_requests(requests_file, users, args.users_per_line, args.k)
    wall, sent = transform(args, work, archive, requests_file.parent)
    started = time.monotonic()
    answered = sum(
        len(p) for p in batch.iter_answers(work / "out" / "users.jsonl.out", batch.read_requests(requests_file))
    )
    if answered != args.users:
        raise RuntimeError(f"the transform answered {answered} users of {args.users}")
    parameters = sent["execution_parameters"] or {}
    return {
        "users": args.users,
        "items": args.items,
        "rank": args.rank,
        "k": args.k,
        "users_per_line": args.users_per_line,
        "input_lines": lines,
        "input_mb": round(requests_file.stat().st_size / 2**20, 2),
        "model_tar_gz_mb": round(archive.stat().st_size / 2**20, 1),
        "model_build_s": round(build_s, 1),
        "transform_wall_s": round(wall, 1),
        "users_per_s_wall": round(args.users / wall, 1),
        "users_per_s_in_requests": round(args.users / max(sent["request_seconds_total"], 1e-9), 1),
        "max_payload_mb_passed": args.max_payload_mb,
        "max_payload_mb_used": args.max_payload_mb or parameters.get("MaxPayloadInMB", 6),
        "output_check_s": round(time.monotonic() - started, 1),
        **sent,
        "cpus": os.cpu_count(),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--image", default="recsys-test:cpu", help="the serving image (built from container/)")
    parser.add_argument("--users", type=int, default=100_000)
    parser.add_argument("--items", type=int, default=10_000)
    parser.add_argument("--rank", type=int, default=32)
    parser.add_argument("--seen-per-user", type=int, default=5)
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--users-per-line", type=int, default=1000, help="users per JSON Lines request record")
    parser.add_argument("--max-payload-mb", type=int, default=None, help="None: the container's answer decides")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--work-dir", type=Path, default=None, help="kept when given; else a temporary directory")
    parser.add_argument("--out", type=Path, default=None, help="also write the figures here as JSON")
    args = parser.parse_args(argv)
    if min(args.users, args.items, args.rank, args.k) < 1:
        parser.error("--users, --items, --rank and --k must be positive")
    os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")
    # Local mode polls /ping until the container answers, logging each refused connection; keep the figures readable.
    for name, level in (("sagemaker", logging.WARNING), ("urllib3.connectionpool", logging.ERROR)):
        logging.getLogger(name).setLevel(level)
    logging.getLogger("sagemaker.local.utils").setLevel(logging.ERROR)
    os.environ.setdefault("SAGEMAKER_SUPPRESS_V2_WARNING", "1")
    with tempfile.TemporaryDirectory(prefix="recsys-bench-bt-") as tmp:
        config = Path(tmp) / "sagemaker-config.yaml"
        config.write_text("SchemaVersion: '1.0'\nSageMaker:\n  PythonSDK:\n    Modules:\n      TelemetryOptOut: true\n")
        os.environ.setdefault("SAGEMAKER_USER_CONFIG_OVERRIDE", str(config))
        work = args.work_dir or Path(tmp) / "work"
        work.mkdir(parents=True, exist_ok=False)
        figures = run(args, work)
    text = json.dumps(figures, indent=2, default=str)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
