"""Top-10 over large synthetic catalogs (10K … 1M items) through the real `serve` stack (nginx → gunicorn → Flask).

    .venv/bin/python benchmarks/large_catalog.py [--sizes 10000 100000 1000000] [--algorithms ncf als]
                                                 [--users 200] [--duration 10] [--connections 1] [--exhaustive]

The artifacts (written with the real ``recsys.artifact.write_model``, cached in ``$RECSYS_BENCH_DIR/catalog``):
- **ncf**: the ml-100k NeuMF that `train` (preset movielens) fits (``serve_load.trained_model``), grown to N items:
  items 0 … 1,681 are the trained ones; every further item copies a random trained item's embedding rows (GMF and
  MLP jointly) plus Gaussian noise of 0.5 × each dimension's spread (seed 0). Users, the MLP and the predict layer
  stay as trained, so scores keep the trained model's structure (both branches matter) instead of being random.
- **als**: Gaussian random factors, rank 32, 943 users (seed 0): ALS's top-K is exact in one stage, so only its
  latency and memory are of interest here.
Seen items: the ml-100k training items (among the first 1,682).

For each artifact it prints:
- recall@10 of the served answer (``RECSYS_RETRIEVAL=auto``) against exhaustive scoring, in-process, over ``--users``
  random users (seed 1), exclude-seen on;
- wrk single-user top-10 (a random known user per request, ``--connections`` connections): req/s, p50, p99;
- start-up seconds and each gunicorn worker's RSS / PSS (MB).
The server runs with ``RECSYS_SCORE_CACHE=off`` (``--score-cache``): with ml-100k's 943 users a 100K-item score
matrix would fit the cache and hide the scoring; a catalog this size usually comes with far more users.
Target: 1M items, p99 ≤ 50 ms, recall@10 ≥ 0.95. Skips (exit 0) without ml-100k or wrk.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from pathlib import Path

for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):  # one math thread, as in a served worker
    os.environ.setdefault(_var, "1")  # (serve gives each worker cores ÷ workers: 1 on this 2-core machine)

import numpy as np  # noqa: E402
import torch  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
import serve_load  # noqa: E402  (the stack helpers: start/stop serve, wrk, worker memory)

from recsys.artifact import load_model, write_model  # noqa: E402
from recsys.data.ids import IdIndex  # noqa: E402
from recsys.models.als.model import ALSRecommender  # noqa: E402
from recsys.models.ncf.model import NCFRecommender  # noqa: E402
from recsys.serving.ranking import Ranker  # noqa: E402
from recsys.serving.retrieval import RetrievalConfig  # noqa: E402
from recsys.serving.settings import Settings  # noqa: E402

CATALOG_DIR = serve_load.BENCH_DIR / "catalog"
NOISE = 0.5


def grown_ncf(size: int) -> Path:
    """The ml-100k NeuMF grown to ``size`` items (see the module docstring)."""
    target = CATALOG_DIR / f"ncf-{size}"
    if (target / "manifest.json").is_file():
        return target
    base = load_model(serve_load.trained_model("ncf"), device="cpu")
    rec: NCFRecommender = base.recommender  # type: ignore[assignment]
    n_base = rec.n_items
    rng = np.random.default_rng(0)
    source = np.concatenate([np.arange(n_base), rng.integers(0, n_base, size - n_base)])
    grown = NCFRecommender(rec.hp, rec.n_users, size, device="cpu")
    state = rec.net.state_dict()
    for name, value in state.items():
        if name.startswith("embed_item"):
            rows = value[source].clone()
            noise = torch.from_numpy(rng.standard_normal((size - n_base, rows.shape[1]), dtype=np.float32))
            rows[n_base:] += NOISE * value.std(dim=0, keepdim=True) * noise
            state[name] = rows
    grown.net.load_state_dict(state)
    items = IdIndex(np.concatenate([base.items.ids, [f"sku-{i}" for i in range(n_base, size)]]))
    return _write(target, grown, base, items, base.popularity[source])


def random_als(size: int, n_users: int = 943, rank: int = 32) -> Path:
    target = CATALOG_DIR / f"als-{size}"
    if (target / "manifest.json").is_file():
        return target
    base = load_model(serve_load.trained_model("ncf"), device="cpu")  # ids and seen items only
    rng = np.random.default_rng(0)
    users = rng.standard_normal((n_users, rank), dtype=np.float32) / np.sqrt(rank)
    item_factors = rng.standard_normal((size, rank), dtype=np.float32) / np.sqrt(rank)
    from recsys.training.hyperparameters import parse

    hp = parse({"algorithm": "als", "rank": str(rank)})
    rec = ALSRecommender(hp, n_users, size, users, item_factors)
    n_base = len(base.items)
    items = IdIndex(np.concatenate([base.items.ids, [f"sku-{i}" for i in range(n_base, size)]]))
    popularity = np.concatenate([base.popularity, np.zeros(size - n_base, dtype=base.popularity.dtype)])
    return _write(target, rec, base, items, popularity)


def _write(target: Path, rec, base, items: IdIndex, popularity: np.ndarray) -> Path:
    shutil.rmtree(target, ignore_errors=True)
    write_model(
        target, rec, base.users, items, (base.seen_indptr, base.seen_indices), popularity, rec.hp, {}, {"synthetic": 1}
    )
    return target


def recall(model_dir: Path, n_users: int, config: RetrievalConfig) -> tuple[float, str, float, float]:
    """(mean recall@10 of ``config``'s answer vs exhaustive, the mode it chose, ms per user served, exhaustive)."""
    model = load_model(model_dir, device="cpu")
    served, exhaustive = Ranker(model, retrieval=config), Ranker(model, retrieval=RetrievalConfig("exhaustive"))
    rng = np.random.default_rng(1)
    users = rng.choice(len(model.users), size=min(n_users, len(model.users)), replace=False)
    hits, times = [], {"served": 0.0, "exhaustive": 0.0}
    for user in users:
        answers = []
        for name, ranker in (("served", served), ("exhaustive", exhaustive)):
            started = time.perf_counter()
            answers.append(ranker.top_k(np.array([user]), 10)[0].items)
            times[name] += time.perf_counter() - started
        hits.append(len(set(answers[0].tolist()) & set(answers[1].tolist())) / max(1, len(answers[1])))
    per_user = {name: 1000 * t / len(users) for name, t in times.items()}
    return float(np.mean(hits)), served.retrieval_reason, per_user["served"], per_user["exhaustive"]


def bench(name: str, model_dir: Path, args: argparse.Namespace, env: dict[str, str]) -> dict:
    with np.load(model_dir / "ids.npz") as ids:
        users = ids["users"].tolist()
    port = serve_load.free_port()
    proc, startup = serve_load.start_serve(model_dir, port, env)
    try:
        serve_load.run_wrk(port, users, 2, args.connections, 1)  # warm-up
        load = serve_load.run_wrk(port, users, args.duration, args.connections, 1)
        memory = serve_load.worker_memory(proc.pid)
    finally:
        serve_load.stop_serve(proc)
    return {
        "model": name,
        "startup_s": round(startup, 1),
        "rps": round(load["rps"]),
        "p50_ms": load["p50_us"] / 1000,
        "p99_ms": load["p99_us"] / 1000,
        "errors": load["status_errors"] + load["socket_errors"],
        "worker_rss_mb": [round(m["rss_mb"]) for m in memory],
        "worker_pss_mb": [round(m["pss_mb"]) for m in memory],
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", nargs="+", type=int, default=[10_000, 100_000, 1_000_000])
    parser.add_argument("--algorithms", nargs="+", default=["ncf", "als"])
    parser.add_argument("--users", type=int, default=200, help="users the recall is measured over")
    parser.add_argument("--duration", type=int, default=10)
    parser.add_argument("--connections", type=int, default=1)
    parser.add_argument("--exhaustive", action="store_true", help="also serve with RECSYS_RETRIEVAL=exhaustive")
    parser.add_argument(
        "--score-cache", default="off", help="RECSYS_SCORE_CACHE for the server (off: score live, as for many users)"
    )
    args = parser.parse_args()
    if shutil.which("wrk") is None or not (serve_load.ML100K / "u.data").is_file():
        print("SKIP: needs wrk and MovieLens-100K")
        return 0
    CATALOG_DIR.mkdir(parents=True, exist_ok=True)
    config = Settings.from_env().retrieval  # RECSYS_RETRIEVAL* as set for this run
    modes = [{}] + ([{"RECSYS_RETRIEVAL": "exhaustive"}] if args.exhaustive else [])
    cache = {"RECSYS_SCORE_CACHE": args.score_cache}
    rows = []
    for algorithm in args.algorithms:
        for size in args.sizes:
            model_dir = grown_ncf(size) if algorithm == "ncf" else random_als(size)
            rec, reason, served_ms, exhaustive_ms = recall(model_dir, args.users, config)
            row = {"algorithm": algorithm, "items": size, "recall@10": round(rec, 4), "top_k": reason}
            row.update(in_process_ms=round(served_ms, 1), exhaustive_in_process_ms=round(exhaustive_ms, 1))
            print(json.dumps(row), flush=True)
            for env in modes:
                result = {**row, **bench(f"{algorithm}-{size}", model_dir, args, {**cache, **env}), **env}
                if env:  # exhaustive serving answers exactly
                    result["recall@10"] = 1.0
                print(json.dumps(result), flush=True)
                rows.append(result)
    print()
    print("| model | items | top-K | recall@10 | req/s | p50 ms | p99 ms | worker RSS / PSS MB | start-up s |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        memory = ", ".join(f"{a}/{b}" for a, b in zip(r["worker_rss_mb"], r["worker_pss_mb"]))
        mode = r.get("RECSYS_RETRIEVAL", r["top_k"].split(" (")[0])
        print(
            f"| {r['algorithm']} | {r['items']:,} | {mode} | {r['recall@10']} | {r['rps']} | {r['p50_ms']:.1f} | "
            f"{r['p99_ms']:.1f} | {memory} | {r['startup_s']} |"
        )
    return 0


if __name__ == "__main__":
    # `serve` and its workers import this checkout's package, whatever the venv has installed.
    os.environ["PYTHONPATH"] = os.pathsep.join(
        filter(None, [str(serve_load.ROOT / "container"), os.environ.get("PYTHONPATH")])
    )
    sys.exit(main())
