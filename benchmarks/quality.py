"""Honest quality: select on validation, report on an untouched test set, over several seeds, through the real
``train`` (validation carved from train, refit on all of train, test channel scored once on the shipped model).

    .venv/bin/python benchmarks/quality.py                                # NeuMF, GMF, MLP, ALS; seeds 1-5; ml-100k
    .venv/bin/python benchmarks/quality.py --runs neumf,als --seeds 1,2,3
    .venv/bin/python benchmarks/quality.py --runs neumf --set lr=0.002 --set refit=false
    .venv/bin/python benchmarks/quality.py --runs neumf --grid '{"lr": [0.002, 0.005], "factor_num": [32, 64]}'
    .venv/bin/python benchmarks/quality.py --data retail                  # the Online Retail sample instead

Split (fixed, independent of the seeds): ``test`` = each user's latest interaction (ties: a seeded random one), as
its own channel; ``train`` = the rest. The job carves its validation from ``train`` (each user's latest remaining
interaction) — the same thing a user's job does without a validation channel.

``--grid`` is for tuning: every combination runs on every seed without a test channel (and without the refit, which
changes nothing measured before it) and only VALIDATION metrics are printed; the combination with the best mean
validation HR@10 (ties: NDCG) is then run in full and reported with its test metrics, once.
Item popularity (distinct users per item in train), as each job reports it in ``baselines``, is ranked by the same
evaluator on the same candidates.
Results also go to ``--json`` (default ``benchmarks/results/quality.json`` when running the defaults report).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import logging
import statistics
import sys
import tempfile
import time
from itertools import product
from pathlib import Path

import numpy as np
import pandas as pd
from common import ML100K, RETAIL, ROOT

from recsys.platform.lifecycle import StopController
from recsys.platform.paths import SageMakerPaths
from recsys.platform.resources import ResourceConfig
from recsys.training.main import run

RUNS = {
    "neumf": {"algorithm": "ncf", "model_type": "neumf"},
    "gmf": {"algorithm": "ncf", "model_type": "gmf"},
    "mlp": {"algorithm": "ncf", "model_type": "mlp"},
    "als": {"algorithm": "als"},
}
PRESETS = {"ml100k": "movielens", "retail": "online_retail"}


def split(data: str, out: Path) -> Path:
    """Train/test channel files under ``out``; returns ``out``."""
    if data == "ml100k":
        frame = pd.read_csv(ML100K / "u.data", sep="\t", header=None, names=["user", "item", "rating", "time"])
        user, time_col, name, kwargs = "user", "time", "u.data", {"sep": "\t", "header": False}
    else:
        frame = pd.read_csv(RETAIL, dtype={"CustomerID": str, "StockCode": str, "InvoiceNo": str})
        frame = frame[frame["CustomerID"].notna() & ~frame["InvoiceNo"].str.startswith("C") & (frame["Quantity"] > 0)]
        frame = frame.assign(_t=pd.to_datetime(frame["InvoiceDate"]))
        user, time_col, name, kwargs = "CustomerID", "_t", "retail.csv", {}
    # Ties on the latest timestamp (44% of ml-100k users) broken at random, seed 0: by item id they would favour
    # ml-100k's high ids, its obscure films.
    frame = frame.assign(_tie=np.random.default_rng(0).random(len(frame)))
    frame = frame.sort_values([user, time_col, "_tie"], kind="stable").drop(columns="_tie")
    latest = ~frame.duplicated(user, keep="last")
    for channel, part in (("train", frame[~latest]), ("test", frame[latest])):
        (out / channel).mkdir(parents=True, exist_ok=True)
        part.drop(columns=["_t"], errors="ignore").to_csv(out / channel / name, index=False, **kwargs)
    return out


def opt_ml(channels: Path, hyperparameters: dict, base: Path, test: bool = True) -> Path:
    for channel in ("train", "test") if test else ("train",):
        (base / "input/data" / channel).mkdir(parents=True)
        for f in (channels / channel).iterdir():
            (base / "input/data" / channel / f.name).symlink_to(f)
    (base / "input/config").mkdir(parents=True)
    (base / "input/config/hyperparameters.json").write_text(json.dumps({k: str(v) for k, v in hyperparameters.items()}))
    return base


def train_once(channels: Path, hyperparameters: dict, test: bool = True) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        paths = SageMakerPaths(opt_ml(channels, hyperparameters, Path(tmp) / "opt_ml", test))
        started = time.perf_counter()
        with contextlib.redirect_stdout(io.StringIO()):  # the job's metric lines
            report = run(paths, StopController(), ResourceConfig.read(paths))
        report["wall_seconds"] = round(time.perf_counter() - started, 2)
    return report


def summary(values: list[float]) -> str:
    sd = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.mean(values):.4f} ± {sd:.4f} (min {min(values):.4f})"


def run_config(channels, preset, base: dict, seeds, show_test: bool, label: str) -> dict:
    rows = []
    for seed in seeds:
        # Tuning runs get no test channel at all, and no refit (validation metrics are measured before it).
        hyperparameters = {"preset": preset, **base, "seed": seed, **({} if show_test else {"refit": "false"})}
        report = train_once(channels, hyperparameters, test=show_test)
        m = report["metrics"]
        row = {
            "seed": seed,
            "validation": {k: m["validation"][k] for k in ("HR", "NDCG")},
            "test": {k: m["test"][k] for k in ("HR", "NDCG")} if show_test else None,
            "item_popularity": report["baselines"]["item_popularity"],
            "best_epoch": m["validation"].get("best_epoch"),
            "wall_seconds": report["wall_seconds"],
            "phases": report["phases"],
        }
        rows.append(row)
        shown = f"test HR {row['test']['HR']:.4f} NDCG {row['test']['NDCG']:.4f}; " if show_test else ""
        print(
            f"  {label} seed {seed}: validation HR {row['validation']['HR']:.4f} NDCG "
            f"{row['validation']['NDCG']:.4f}; {shown}best epoch {row['best_epoch']}; {row['wall_seconds']:.1f} s",
            flush=True,
        )
    out = {"label": label, "hyperparameters": base, "runs": rows}
    for role in ("validation", "test") if show_test else ("validation",):
        for metric in ("HR", "NDCG"):
            values = [r[role][metric] for r in rows]
            sd = statistics.stdev(values) if len(values) > 1 else 0.0  # the sample sd, as `summary` prints it
            out[f"{role}_{metric}"] = {"mean": statistics.mean(values), "sd": sd, "min": min(values)}
            out[f"{role}_{metric}"]["text"] = summary(values)
    return out


@contextlib.contextmanager
def shared_spark(runs: str):
    """One Spark session for every ALS run (``train`` uses a session already active in the process): one JVM
    start instead of one per run. Its start-up is then missing from the runs' wall times."""
    if "als" not in runs.split(","):
        yield
        return
    from recsys.models.als import spark as sessions

    with sessions.spark_session(sessions.settings_for()):
        yield


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", choices=sorted(PRESETS), default="ml100k")
    ap.add_argument("--runs", default="neumf,gmf,mlp,als", help=f"comma-separated, from {', '.join(RUNS)}")
    ap.add_argument("--seeds", default="1,2,3,4,5")
    ap.add_argument("--set", action="append", default=[], help="hyperparameter NAME=VALUE for every run (repeatable)")
    ap.add_argument("--grid", help="JSON object name → list of values: tune on validation (see the module doc)")
    ap.add_argument("--validation-only", action="store_true", help="with --grid: stop after selecting; no test run")
    ap.add_argument("--json", type=Path, help="write the results here")
    args = ap.parse_args()
    source = ML100K / "u.data" if args.data == "ml100k" else RETAIL
    if not source.is_file():
        sys.exit(f"{source} not found (see README: MovieLens-100K is not in the repository)")
    seeds = [int(s) for s in args.seeds.split(",")]
    overrides = dict(item.split("=", 1) for item in args.set)
    preset = PRESETS[args.data]
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    results: dict = {"data": args.data, "seeds": seeds, "split": "test = each user's latest interaction", "runs": []}
    with tempfile.TemporaryDirectory() as tmp, shared_spark(args.runs):
        channels = split(args.data, Path(tmp) / "channels")
        for name in args.runs.split(","):
            base = {**RUNS[name], **overrides}
            if not args.grid:
                results["runs"].append(run_config(channels, preset, base, seeds, True, name))
                continue
            grid = json.loads(args.grid)
            tried = []
            for values in product(*grid.values()):
                combo = dict(zip(grid, values, strict=True))
                label = f"{name} {json.dumps(combo)}"
                tried.append((run_config(channels, preset, {**base, **combo}, seeds, False, label), combo))
                print(f"{label}: validation HR {tried[-1][0]['validation_HR']['text']}", flush=True)
            best, combo = max(tried, key=lambda t: (t[0]["validation_HR"]["mean"], t[0]["validation_NDCG"]["mean"]))
            if args.validation_only:
                print(f"{name}: best on validation: {json.dumps(combo)} (test not run: --validation-only)")
                results["runs"].append({**best, "grid": grid, "tried": [t[0] for t in tried]})
                continue
            print(f"{name}: selected on validation: {json.dumps(combo)}; its test metrics:", flush=True)
            chosen = run_config(channels, preset, {**base, **combo}, seeds, True, f"{name} selected")
            results["runs"].append({**chosen, "grid": grid, "tried": [t[0] for t in tried]})
    # Item popularity, as each job reported it on its own candidates (the same for every run of a seed).
    pops = [row["item_popularity"] for row in results["runs"][0]["runs"]]
    roles = [role for role in ("validation", "test") if role in pops[0]]
    results["popularity"] = {f"{r}_{m}": summary([p[r][m] for p in pops]) for r in roles for m in ("HR", "NDCG")}
    print()
    print(f"| run | validation HR@10 | validation NDCG@10 | test HR@10 | test NDCG@10 |  (seeds {args.seeds})")
    print("|---|---|---|---|---|")
    p = results["popularity"]
    cells = [p.get(f"{r}_{m}", "—") for r in ("validation", "test") for m in ("HR", "NDCG")]
    print("| item popularity | " + " | ".join(cells) + " |")
    for r in results["runs"]:
        cells = [
            r[f"{role}_{m}"]["text"] if f"{role}_{m}" in r else "—"
            for role in ("validation", "test")
            for m in ("HR", "NDCG")
        ]
        print(f"| {r['label']} | " + " | ".join(cells) + " |")
    target = args.json or (
        ROOT / "benchmarks/results" / f"quality-{args.data}.json" if not (args.grid or args.set) else None
    )
    if target:
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(json.dumps(results, indent=1) + "\n")
        print(f"written: {target}")


if __name__ == "__main__":
    main()
