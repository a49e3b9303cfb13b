"""How the data layer scales: load a synthetic channel (CSV and Parquet), split, build the evaluator.

    .venv/bin/python benchmarks/data_scale.py [--rows 2000000] [--users 200000] [--items 50000]

Prints wall time per stage and peak RSS. Targets: none in the issue; this guards the roadmap's "large catalogs".
"""

from __future__ import annotations

import argparse
import resource
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from synthetic import power_law_interactions  # noqa: E402

from recsys.platform.paths import SageMakerPaths  # noqa: E402
from recsys.training.evaluation import Evaluator  # noqa: E402
from recsys.training.hyperparameters import parse  # noqa: E402
from recsys.training.roles import load_training_data  # noqa: E402


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=2_000_000)
    ap.add_argument("--users", type=int, default=200_000)
    ap.add_argument("--items", type=int, default=50_000)
    args = ap.parse_args()
    frame = power_law_interactions(args.rows, args.users, args.items)
    print(f"synthetic: {args.rows:,} rows, ≤{args.users:,} users, ≤{args.items:,} items")
    for fmt in ("csv", "parquet"):
        with tempfile.TemporaryDirectory() as tmp:
            channel = Path(tmp) / "input/data/train"
            channel.mkdir(parents=True)
            if fmt == "csv":
                frame.to_csv(channel / "part-0.csv", index=False)
            else:
                frame.to_parquet(channel / "part-0.parquet")
            hp = parse(
                {"user_col": "user_id", "item_col": "item_id", "rating_col": "quantity", "timestamp_col": "timestamp"}
            )
            t = time.perf_counter()
            data = load_training_data(SageMakerPaths(Path(tmp)), hp)
            load_s = time.perf_counter() - t
            t = time.perf_counter()
            Evaluator(data.train, data.validation, 10, 99, 0, known=data.known_pairs())
            eval_s = time.perf_counter() - t
            print(
                f"{fmt:8s} load+clean+split {load_s:6.2f}s  evaluator setup {eval_s:6.2f}s  "
                f"users {len(data.users):,} items {len(data.items):,} interactions {len(data.all):,}  "
                f"peak RSS {peak_rss_mb():,.0f} MB"
            )


if __name__ == "__main__":
    main()
