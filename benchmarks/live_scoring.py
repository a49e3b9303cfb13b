"""Live scoring against the same stack answering a constant: what share of the framework's throughput survives scoring.

    .venv/bin/python benchmarks/live_scoring.py [--models ncf als ncf-100000] [--runs 5] [--duration 9]
                                                [--connections 8] [--slices 3]

Each model is served twice through the real `serve` (nginx → gunicorn → Flask, 2 gthread workers × 2 threads,
``RECSYS_SCORE_CACHE=off``: no precomputed per-user score table): once as it is, once with
``benchmarks/constant_answer`` on PYTHONPATH and ``RECSYS_BENCH_CONSTANT=1``, where every top-K call returns the
ranking of its first call (everything else a request costs — HTTP, JSON, validation, id lookups, filters, encoding —
still runs). wrk (1 thread, a random known user per request, top-10) runs alternately against the two servers,
``--runs`` pairs; each pair's ratio is live req/s ÷ constant req/s. Within a pair the servers take turns
``--slices`` times (duration ÷ slices seconds each; requests and seconds summed per server), so that a slow spell
of a shared VM falls on both sides. Target: ≥ 0.70 in every run.

Models: ``ncf`` / ``als`` are the ml-100k models `train` fits (preset movielens, cached as in serve_load.py);
``ncf-<N>`` is that NeuMF grown to N items (as in large_catalog.py; two-stage top-K from 100,000 items).
Skips cleanly (exit 0) when ml-100k or wrk is missing.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import serve_load  # noqa: E402  (the stack helpers: train once, start/stop serve, wrk)

CONSTANT = HERE / "constant_answer"


def model_dir(name: str) -> Path:
    if name.startswith("ncf-"):
        import large_catalog  # imports torch; only needed for grown catalogs

        return large_catalog.grown_ncf(int(name.split("-", 1)[1]))
    return serve_load.trained_model(name)


def bench(name: str, args: argparse.Namespace) -> dict:
    directory = model_dir(name)
    import numpy as np

    with np.load(directory / "ids.npz") as ids:
        users = ids["users"].tolist()
    base = {"RECSYS_SCORE_CACHE": "off", "RECSYS_WORKER_CLASS": "gthread", "RECSYS_THREADS": "2"}
    path = os.pathsep.join(p for p in (str(CONSTANT), os.environ.get("PYTHONPATH", "")) if p)
    constant_env = dict(base, PYTHONPATH=path, RECSYS_BENCH_CONSTANT="1")
    servers = []
    try:
        for env in (base, constant_env):
            port = serve_load.free_port()
            proc, _ = serve_load.start_serve(directory, port, env)
            servers.append((port, proc))
            serve_load.run_wrk(port, users, 2, args.connections, 1)  # warm-up
        pairs = []
        step = max(1, args.duration // args.slices)
        for _ in range(args.runs):
            slices = [
                [serve_load.run_wrk(port, users, step, args.connections, 1) for port, _ in servers]
                for _ in range(args.slices)
            ]
            pairs.append(tuple(merged([s[side] for s in slices]) for side in (0, 1)))
    finally:
        for _, proc in servers:
            serve_load.stop_serve(proc)
    ratios = [live["rps"] / constant["rps"] for live, constant in pairs]
    result = {
        "model": name,
        "live_rps": [round(live["rps"]) for live, _ in pairs],
        "constant_rps": [round(constant["rps"]) for _, constant in pairs],
        "ratio": [round(r, 3) for r in ratios],
        "min_ratio": round(min(ratios), 3),
        "median_ratio": round(statistics.median(ratios), 3),
        "live_p99_ms": [live["p99_us"] / 1000 for live, _ in pairs],
        "constant_p99_ms": [constant["p99_us"] / 1000 for _, constant in pairs],
        "errors": sum(r["status_errors"] + r["socket_errors"] for pair in pairs for r in pair),
    }
    print(json.dumps(result), flush=True)
    return result


def merged(slices: list[dict]) -> dict:
    """One server's figures over the slices of a run: requests per second over their summed time, worst p99."""
    requests = sum(r["requests"] for r in slices)
    seconds = sum(r["duration_us"] for r in slices) / 1e6
    return {
        "rps": requests / seconds,
        "p99_us": max(r["p99_us"] for r in slices),
        "status_errors": sum(r["status_errors"] for r in slices),
        "socket_errors": sum(r["socket_errors"] for r in slices),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=["ncf", "als", "ncf-100000"])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--duration", type=int, default=9)
    parser.add_argument("--connections", type=int, default=8)
    parser.add_argument(
        "--slices",
        type=int,
        default=3,
        help="each run alternates the two servers this many times (duration/slices seconds each), so that a slow "
        "spell of a shared machine falls on both sides of a pair; 1 = one block per server",
    )
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        print("SKIP: wrk is not installed (apt-get install wrk)")
        return 0
    if not (serve_load.ML100K / "u.data").is_file():
        print(f"SKIP: MovieLens-100K not found at {serve_load.ML100K} (set RECSYS_ML100K_DIR)")
        return 0
    serve_load.BENCH_DIR.mkdir(parents=True, exist_ok=True)
    results = [bench(name, args) for name in args.models]
    print()
    print("| model | live req/s per run | constant req/s per run | ratio per run | min | median | errors |")
    print("|---|---|---|---|---|---|---|")
    for r in results:
        print(
            f"| {r['model']} | {', '.join(map(str, r['live_rps']))} | {', '.join(map(str, r['constant_rps']))} | "
            f"{', '.join(f'{x:.2f}' for x in r['ratio'])} | {r['min_ratio']:.2f} | {r['median_ratio']:.2f} | "
            f"{r['errors']} |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
