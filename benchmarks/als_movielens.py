"""Spark ALS quality, speed and memory on MovieLens-100K (and Online Retail), through the real data layer.

    .venv/bin/python benchmarks/als_movielens.py                 # defaults: implicit + explicit on ml-100k, retail
    .venv/bin/python benchmarks/als_movielens.py --sweep         # hyperparameter / confidence-mapping sweep table
    .venv/bin/python benchmarks/als_movielens.py --train         # a whole `python -m recsys.training`: wall, peak RSS
    .venv/bin/python benchmarks/als_movielens.py --set rank=32 --set alpha=5   # one configuration

Data: ``--ml100k DIR`` or ``RECSYS_ML100K_DIR`` (default ../shared/data/ml-100k), ``--retail FILE`` or
``RECSYS_RETAIL_CSV`` (default ../shared/data/online-retail/online_retail_sample.csv); each part is skipped, saying
so, when its file is absent. HR@10 / NDCG@10 here are measured on `train`'s own validation (each user's latest
interaction, carved out of the file): VALIDATION figures, for comparing settings; held-out test figures over seeds
come from ``benchmarks/quality.py`` only.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import threading
import time
from itertools import product
from pathlib import Path

from common import ML100K, RETAIL, load, opt_ml_with

from recsys.models.als.factors import train_factors
from recsys.models.als.model import ALSRecommender
from recsys.models.base import FitContext
from recsys.platform.lifecycle import StopController
from recsys.platform.resources import ResourceConfig
from recsys.training.hyperparameters import parse


def popularity_baseline(data_file: Path, hyperparameters: dict, label: str) -> dict:
    """Reference point: rank candidates by training popularity (distinct users per item), no personalization."""
    import numpy as np

    _, data, evaluator = load(data_file, hyperparameters)
    popularity = data.train.item_popularity().astype(np.float32)

    class Popularity:
        def score(self, users, items):
            return popularity[np.asarray(items)]

    metrics = evaluator.sampled(Popularity())
    row = {"run": label, "HR@10": round(metrics["HR"], 4), "NDCG@10": round(metrics["NDCG"], 4)}
    print(json.dumps(row), flush=True)
    return row


def fit_once(data_file: Path, hyperparameters: dict, label: str) -> dict:
    """One `ALSRecommender.fit` as `train` runs it: its own Spark session (JVM start timed apart from the fit)."""
    hp, data, evaluator = load(data_file, hyperparameters)
    model = ALSRecommender(hp, len(data.users), len(data.items))
    ctx = FitContext(evaluator=evaluator, stop=StopController(), resources=ResourceConfig())
    started = time.perf_counter()
    result = model.fit(data, ctx)
    wall = time.perf_counter() - started
    full = evaluator.full_ranking(model)
    info = result.info
    row = {
        "run": label,
        "HR@10": round(result.metrics["HR"], 4),
        "NDCG@10": round(result.metrics["NDCG"], 4),
        **{k: round(v, 4) for k, v in full.items()},
        "jvm_start_s": info.get("spark_start_seconds"),
        "dataframe_s": info.get("dataframe_seconds"),
        "fit_s": info.get("fit_seconds"),
        "export_s": info.get("export_seconds"),
        "stop_s": info.get("spark_stop_seconds"),
        "fit_call_wall_s": round(wall, 2),
        "users": len(data.users),
        "items": len(data.items),
        "train_rows": len(data.train),
        "validation_rows": len(data.validation),
    }
    print(json.dumps(row), flush=True)
    return row


def defaults_report(args) -> None:
    hp = parse({"algorithm": "als"})
    print("defaults:", json.dumps({k: hp[k] for k in ("rank", "max_iter", "reg_param", "alpha", "implicit_prefs")}))
    if (args.ml100k / "u.data").is_file():
        ml = args.ml100k / "u.data"
        implicit = fit_once(ml, {"algorithm": "als", "preset": "movielens", **args.set}, "ml-100k implicit (defaults)")
        popularity_baseline(ml, {"algorithm": "als", "preset": "movielens"}, "ml-100k popularity baseline")
        print(f"validation HR@10 {implicit['HR@10']} (held-out test over seeds: benchmarks/quality.py)", flush=True)
        fit_once(
            ml,
            {"algorithm": "als", "preset": "movielens", "implicit_prefs": "false", **args.set},
            "ml-100k explicit (defaults otherwise)",
        )
    else:
        print(f"SKIP ml-100k: {args.ml100k / 'u.data'} not found (set RECSYS_ML100K_DIR or --ml100k)")
    if args.retail.is_file():
        fit_once(args.retail, {"algorithm": "als", "preset": "online_retail", **args.set}, "online-retail implicit")
        popularity_baseline(args.retail, {"algorithm": "als", "preset": "online_retail"}, "online-retail popularity")
    else:
        print(f"SKIP online retail: {args.retail} not found (set RECSYS_RETAIL_CSV or --retail)")


SWEEP = {  # the default --sweep grid (54 configurations × 2 data sets, ~10 min here); --grid replaces it
    "mapping": ["log1p", "binary", "raw"],
    "rank": [16, 24, 32],
    "reg_param": [0.05, 0.1, 1.0],
    "alpha": [1.0, 5.0],
    "max_iter": [10],
}


def sweep(args) -> None:
    """A grid in one shared Spark session (JVM started once); ml-100k and retail scored per configuration."""
    from recsys.models.als import spark as sessions

    datasets = []
    if (args.ml100k / "u.data").is_file():
        datasets.append(("ml-100k", load(args.ml100k / "u.data", {"algorithm": "als", "preset": "movielens"})))
    if args.retail.is_file():
        datasets.append(("retail", load(args.retail, {"algorithm": "als", "preset": "online_retail"})))
    if not datasets:
        print("SKIP sweep: no data found")
        return
    grid = json.loads(args.grid) if args.grid else SWEEP
    keys = list(grid)
    timings: dict = {}
    with sessions.spark_session(sessions.settings_for(), timings) as spark:
        print(f"spark start {timings['spark_start_seconds']} s", flush=True)
        header = keys + [f"{name} {m}" for name, _ in datasets for m in ("HR@10", "NDCG@10", "fit_s")]
        print("| " + " | ".join(header) + " |")
        print("|" + "---|" * len(header), flush=True)
        for values in product(*(grid[k] for k in keys)):
            config = dict(zip(keys, values, strict=True))
            mapping = config.pop("mapping", "log1p")
            cells = [str(v) for v in values]
            for _, (base_hp, data, evaluator) in datasets:
                hp = base_hp.replace(**config)
                fit_timings: dict = {}
                users, items = train_factors(spark, data.train, hp, mapping=mapping, timings=fit_timings)
                model = ALSRecommender(hp, len(data.users), len(data.items), users, items)
                metrics = evaluator.sampled(model)
                cells += [f"{metrics['HR']:.4f}", f"{metrics['NDCG']:.4f}", f"{fit_timings['fit_seconds']:.1f}"]
            print("| " + " | ".join(cells) + " |", flush=True)


def _tree_rss_mb(pid: int) -> float:
    """RSS of a process and all its descendants (the Python driver + the Spark JVM), from /proc."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    total, stack = 0, [pid]
    while stack:
        p = stack.pop()
        stack += children.get(p, [])
        try:
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
        except OSError:
            pass
    return total / 1024


def train_run(args) -> None:
    """A whole `python -m recsys.training` (algorithm=als, preset=movielens): wall time and peak memory of the tree."""
    if not (args.ml100k / "u.data").is_file():
        print(f"SKIP train run: {args.ml100k / 'u.data'} not found")
        return
    with tempfile.TemporaryDirectory() as tmp:
        base = opt_ml_with(Path(tmp) / "opt_ml", args.ml100k / "u.data", {"algorithm": "als", "preset": "movielens"})
        env = {**os.environ, "SAGEMAKER_BASE_DIR": str(base)}
        started = time.perf_counter()
        proc = subprocess.Popen(
            [sys.executable, "-m", "recsys.training"],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        peak = {"tree": 0.0}

        def sample() -> None:
            while proc.poll() is None:
                peak["tree"] = max(peak["tree"], _tree_rss_mb(proc.pid))
                time.sleep(0.05)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        output, _ = proc.communicate()
        wall = time.perf_counter() - started
        sampler.join()
        children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024  # largest child: JVM or Python
        metric_lines = [line for line in output.splitlines() if "HR=" in line]
        print("\n".join(metric_lines))
        report_file = base / "output" / "data" / "evaluation.json"
        report = json.loads(report_file.read_text()) if report_file.exists() else {}
        print(
            json.dumps(
                {
                    "exit_code": proc.returncode,
                    "wall_s": round(wall, 2),
                    "peak_tree_rss_mb (python + JVM, sampled)": round(peak["tree"], 1),
                    "peak_python_rss_mb (getrusage in train)": report.get("peak_rss_mb"),
                    "largest_child_maxrss_mb": round(children, 1),
                    "fit_seconds (train's fit call)": report.get("fit_seconds"),
                    "phases": report.get("phases"),
                    "info": report.get("info"),
                    "model_files": sorted(p.name for p in (base / "model").iterdir()) if proc.returncode == 0 else [],
                },
                indent=1,
            )
        )
        if proc.returncode != 0:
            print(output[-3000:])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ml100k", type=Path, default=ML100K)
    ap.add_argument("--retail", type=Path, default=RETAIL)
    ap.add_argument("--sweep", action="store_true", help="run the sweep grid instead of the defaults report")
    ap.add_argument("--grid", help='JSON grid for --sweep, e.g. \'{"rank": [16], "alpha": [1, 10]}\'')
    ap.add_argument("--train", action="store_true", help="time a whole `python -m recsys.training` run")
    ap.add_argument("--set", action="append", default=[], help="hyperparameter override NAME=VALUE (repeatable)")
    args = ap.parse_args()
    args.set = dict(kv.split("=", 1) for kv in args.set)
    if args.sweep:
        sweep(args)
    elif args.train:
        train_run(args)
    else:
        defaults_report(args)


if __name__ == "__main__":
    main()
