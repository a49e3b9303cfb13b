"""NCF quality, time to quality, throughput and memory on MovieLens-100K (and Online Retail), through the real data
layer and the real ``NCFRecommender.fit``.

    .venv/bin/python benchmarks/ncf_movielens.py                  # NeuMF, GMF, MLP with the defaults; retail HR
    .venv/bin/python benchmarks/ncf_movielens.py --models neumf --set lr=0.005 --set factor_num=64
    .venv/bin/python benchmarks/ncf_movielens.py --seeds 0,1,2,3,4   # spread over training seeds
    .venv/bin/python benchmarks/ncf_movielens.py --throughput     # samples/s per batch size (training only)
    .venv/bin/python benchmarks/ncf_movielens.py --scoring        # score_all / top-10 latency (serving path)
    .venv/bin/python benchmarks/ncf_movielens.py --train          # a whole `python -m recsys.training`: wall, peak RSS
    .venv/bin/python benchmarks/ncf_movielens.py --profile        # torch.profiler table of training steps

Data: ``--ml100k DIR`` or ``RECSYS_ML100K_DIR`` (default ../shared/data/ml-100k), ``--retail FILE`` or
``RECSYS_RETAIL_CSV`` (default ../shared/data/online-retail/online_retail_sample.csv); each part is skipped, saying
so, when its file is absent. The whole file is the train channel and `train`'s own validation (each user's latest
interaction, carved out) is what HR@10 / NDCG@10 here measure: these are VALIDATION figures, the ones that select the
epoch, useful for speed and for comparing settings. Held-out test figures, over seeds, come from
``benchmarks/quality.py`` only. "Training seconds" below are the sum of the epochs' training loops (sampling,
batching, forward/backward/step), without evaluation, data loading and process start.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import ML100K, RETAIL, ROOT, load, opt_ml_with, peak_rss_mb

from recsys.models.base import FitContext
from recsys.models.ncf.model import THREADS_KEY, NCFRecommender
from recsys.platform.lifecycle import StopController
from recsys.platform.resources import ResourceConfig
from recsys.training.hyperparameters import parse

TARGET_HR, TARGET_SECONDS = 0.68, 15.0  # time to this validation HR@10 (a speed figure)
NCF_KEYS = (
    "model_type",
    "epochs",
    "lr",
    "batch_size",
    "factor_num",
    "num_layers",
    "num_negatives",
    "dropout",
    "weight_decay",
    "optimizer",
    "early_stopping_patience",
    "pretrain",
    "seed",
    "device",
)


def parse_set(values: list[str]) -> dict:
    out = {}
    for item in values:
        key, _, value = item.partition("=")
        out[key.strip()] = value.strip()
    return out


def fit_once(data_file: Path, hyperparameters: dict, label: str, threads: int | None, quiet: bool = False) -> dict:
    hp, data, evaluator = load(data_file, hyperparameters)
    model = NCFRecommender(hp, len(data.users), len(data.items))
    extra = {THREADS_KEY: threads} if threads else {}
    ctx = FitContext(evaluator=evaluator, stop=StopController(), resources=ResourceConfig(), extra=extra)
    started = time.perf_counter()
    result = model.fit(data, ctx)
    wall = time.perf_counter() - started
    reached = next((row for row in result.history if row["HR"] >= TARGET_HR and row["stage"] == hp.model_type), None)
    if hp.pretrain:  # time to quality counts the pretraining stages' seconds too
        cumulative, reached = 0.0, None
        for row in result.history:
            cumulative_row = cumulative + row["train_seconds"]
            if row["stage"] == "neumf" and row["HR"] >= TARGET_HR and reached is None:
                reached = {**row, "train_seconds": round(cumulative_row, 3)}
            if row is result.history[-1] or result.history[result.history.index(row) + 1]["stage"] != row["stage"]:
                cumulative = cumulative_row
    summary = {
        "run": label,
        "validation_HR@10": round(result.metrics["HR"], 4),
        "validation_NDCG@10": round(result.metrics["NDCG"], 4),
        "best_epoch": result.metrics["best_epoch"],
        "epochs_run": result.info["epochs_run"],
        "train_s": result.info["train_seconds"],
        "fit_wall_s": round(wall, 2),
        "samples_per_s": result.info["samples_per_second"],
        "time_to_hr_0.68_s": reached["train_seconds"] if reached else None,
        "threads": result.info["threads"],
        "device": result.info["device"],
        "peak_rss_mb": peak_rss_mb(),
    }
    if not quiet:
        print(f"  per epoch ({label}): stage epoch  train_s(cum)  Loss    HR      NDCG    samples/s")
        for row in result.history:
            print(
                f"    {row['stage']:>5} {row['epoch']:>5}  {row['train_seconds']:>11.2f}  {row['Loss']:.4f}  "
                f"{row['HR']:.4f}  {row['NDCG']:.4f}  {row['samples_per_second']:>9.0f}"
            )
    print(json.dumps(summary), flush=True)
    return summary


def settings(hyperparameters: dict) -> dict:
    hp = parse(hyperparameters)
    return {k: hp[k] for k in NCF_KEYS}


def quality(args) -> None:
    overrides = parse_set(args.set)
    ml_file = args.ml100k / "u.data"
    if ml_file.is_file():
        for model_type in args.models.split(","):
            hps = {"algorithm": "ncf", "preset": "movielens", "model_type": model_type, **overrides}
            print(f"ml-100k {model_type}: settings {json.dumps(settings(hps))}", flush=True)
            runs = []
            for seed in args.seeds.split(",") if args.seeds else [None]:
                hp_seed = {**hps, "seed": seed} if seed is not None else hps
                label = f"ml-100k {model_type}" + (f" seed={seed}" if seed is not None else "")
                runs.append(fit_once(ml_file, hp_seed, label, args.threads, quiet=bool(args.seeds)))
            for run in runs:
                ttq = run["time_to_hr_0.68_s"]
                ok_time = ttq is not None and ttq <= TARGET_SECONDS
                print(
                    f"  {run['run']}: time to validation HR>={TARGET_HR}: {ttq} s "
                    f"({'MEETS' if ok_time else 'MISSES'} <= {TARGET_SECONDS:.0f} s); quality over seeds on a held-out "
                    "test set: benchmarks/quality.py",
                    flush=True,
                )
            if len(runs) > 1:
                hrs = [r["validation_HR@10"] for r in runs]
                ndcgs = [r["validation_NDCG@10"] for r in runs]
                print(
                    f"  {model_type} over seeds {args.seeds}: HR mean {sum(hrs) / len(hrs):.4f} "
                    f"min {min(hrs):.4f} max {max(hrs):.4f}; NDCG mean {sum(ndcgs) / len(ndcgs):.4f}",
                    flush=True,
                )
    else:
        print(f"SKIP MovieLens: {ml_file} not found (set RECSYS_ML100K_DIR or --ml100k)")
    if args.retail.is_file() and not args.no_retail:
        hps = {"algorithm": "ncf", "preset": "online_retail", **overrides}
        print(f"online retail neumf: settings {json.dumps(settings(hps))}", flush=True)
        fit_once(args.retail, hps, "online-retail sample", args.threads)
    elif not args.no_retail:
        print(f"SKIP Online Retail: {args.retail} not found (set RECSYS_RETAIL_CSV or --retail)")


def throughput(args) -> None:
    """Training samples/s per batch size: a few epochs each, evaluation excluded from the timing."""
    ml_file = args.ml100k / "u.data"
    if not ml_file.is_file():
        print(f"SKIP throughput: {ml_file} not found")
        return
    overrides = parse_set(args.set)
    for batch in [int(b) for b in args.batch_sizes.split(",")]:
        hps = {
            "algorithm": "ncf",
            "preset": "movielens",
            "epochs": 3,
            "early_stopping_patience": 0,
            **overrides,
            "batch_size": batch,
        }
        hp, data, evaluator = load(ml_file, hps)
        model = NCFRecommender(hp, len(data.users), len(data.items))
        extra = {THREADS_KEY: args.threads} if args.threads else {}
        result = model.fit(
            data, FitContext(evaluator=evaluator, stop=StopController(), resources=ResourceConfig(), extra=extra)
        )
        per_epoch = [row["samples_per_second"] for row in result.history]
        print(
            json.dumps(
                {
                    "model_type": hp.model_type,
                    "batch_size": batch,
                    "threads": result.info["threads"],
                    "samples_per_s_per_epoch": per_epoch,
                    "best_samples_per_s": max(per_epoch),
                    "peak_rss_mb": peak_rss_mb(),
                }
            ),
            flush=True,
        )


def scoring(args) -> None:
    """The serving path: score_all + top-10 for 1,000 users at once, and single-user requests, on a fitted model."""
    import numpy as np
    import torch

    ml_file = args.ml100k / "u.data"
    if not ml_file.is_file():
        print(f"SKIP scoring: {ml_file} not found")
        return
    hps = {"algorithm": "ncf", "preset": "movielens", "epochs": 1, **parse_set(args.set)}
    hp, data, evaluator = load(ml_file, hps)
    model = NCFRecommender(hp, len(data.users), len(data.items), device="cpu")
    model.fit(data, FitContext(evaluator=evaluator, stop=StopController(), resources=ResourceConfig()))
    with tempfile.TemporaryDirectory() as tmp:
        model.save(Path(tmp))
        model = NCFRecommender.load(Path(tmp), hp, len(data.users), len(data.items), device="cpu")
    for threads in [int(t) for t in args.score_threads.split(",")]:
        torch.set_num_threads(threads)
        users = np.arange(1000) % model.n_users
        model.score_all(users[:10])  # build the per-item cache once (load time in serving)

        def top10(batch):
            scores = model.score_all(batch)
            top = np.argpartition(-scores, 9, axis=1)[:, :10]
            return np.take_along_axis(top, np.argsort(-np.take_along_axis(scores, top, 1), 1), 1)

        times = []
        for _ in range(7):
            started = time.perf_counter()
            top10(users)
            times.append(time.perf_counter() - started)
        singles = []
        for user in range(300):
            started = time.perf_counter()
            top10(np.array([user % model.n_users]))
            singles.append(time.perf_counter() - started)
        singles.sort()
        print(
            json.dumps(
                {
                    "model": f"{hp.model_type} factor_num={hp.factor_num} num_layers={hp.num_layers}",
                    "threads": threads,
                    "1000_users_top10_ms_min": round(min(times) * 1000, 1),
                    "1000_users_top10_ms_median": round(sorted(times)[len(times) // 2] * 1000, 1),
                    "single_user_top10_us_p50": round(singles[len(singles) // 2] * 1e6),
                    "single_user_top10_us_p99": round(singles[int(len(singles) * 0.99)] * 1e6),
                    "n_items": model.n_items,
                }
            ),
            flush=True,
        )


def profile(args) -> None:
    """torch.profiler over the training steps of one epoch (after a warm-up epoch)."""
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile

    ml_file = args.ml100k / "u.data"
    if not ml_file.is_file():
        print(f"SKIP profile: {ml_file} not found")
        return
    hps = {"algorithm": "ncf", "preset": "movielens", "epochs": 2, "early_stopping_patience": 0, **parse_set(args.set)}
    hp, data, evaluator = load(ml_file, hps)
    model = NCFRecommender(hp, len(data.users), len(data.items))
    profiler = torch_profile(activities=[ProfilerActivity.CPU])
    extra = {THREADS_KEY: args.threads} if args.threads else {}

    def evaluate_then_profile(net, ctx_):
        metrics = ctx_.evaluator.sampled(model)
        if not getattr(profiler, "_started", False):
            profiler.start()
            profiler._started = True
        return metrics

    model._evaluate = evaluate_then_profile  # start profiling after epoch 1 (its evaluation excluded)
    ctx = FitContext(evaluator=evaluator, stop=StopController(), resources=ResourceConfig(), extra=extra)
    model.fit(data, ctx)
    profiler.stop()
    print(profiler.key_averages().table(sort_by="self_cpu_time_total", row_limit=25))


def train_run(args) -> None:
    """A whole `python -m recsys.training` (algorithm=ncf, preset=movielens): wall time and peak memory."""
    ml_file = args.ml100k / "u.data"
    if not ml_file.is_file():
        print(f"SKIP train run: {ml_file} not found")
        return
    with tempfile.TemporaryDirectory() as tmp:
        hps = {"algorithm": "ncf", "preset": "movielens", **parse_set(args.set)}
        base = opt_ml_with(Path(tmp) / "opt_ml", ml_file, hps)
        env = {
            **os.environ,
            "SAGEMAKER_BASE_DIR": str(base),
            "PYTHONPATH": str(ROOT / "container") + os.pathsep + os.environ.get("PYTHONPATH", ""),
        }
        started = time.perf_counter()
        proc = subprocess.run([sys.executable, "-m", "recsys.training"], env=env, capture_output=True, text=True)
        wall = time.perf_counter() - started
        child_rss = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
        report_file = base / "output" / "data" / "evaluation.json"
        report = json.loads(report_file.read_text()) if report_file.is_file() else {}
        lines = [line for line in proc.stdout.splitlines() if "HR=" in line]
        print("\n".join(lines[-3:]))
        print(
            json.dumps(
                {
                    "command": "SAGEMAKER_BASE_DIR=<tmp opt_ml> python -m recsys.training",
                    "exit_code": proc.returncode,
                    "wall_s": round(wall, 2),
                    "peak_rss_mb (getrusage children)": round(child_rss, 1),
                    "peak_rss_mb (train's own report)": report.get("peak_rss_mb"),
                    "fit_seconds": report.get("fit_seconds"),
                    "total_seconds (train's own)": report.get("total_seconds"),
                    "phases": report.get("phases"),
                    "metrics": {
                        k: round(v, 4) if isinstance(v, float) else v for k, v in report.get("metrics", {}).items()
                    },
                }
            ),
            flush=True,
        )
        if proc.returncode:
            print(proc.stderr[-3000:])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ml100k", type=Path, default=ML100K)
    ap.add_argument("--retail", type=Path, default=RETAIL)
    ap.add_argument("--models", default="neumf,gmf,mlp", help="model types to train (comma-separated)")
    ap.add_argument("--set", action="append", default=[], help="hyperparameter override name=value (repeatable)")
    ap.add_argument("--seeds", default="", help="comma-separated seeds: one run each, summary of the spread")
    ap.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: all cores)")
    ap.add_argument("--no-retail", action="store_true")
    ap.add_argument("--throughput", action="store_true")
    ap.add_argument("--batch-sizes", default="256,1024,4096,16384")
    ap.add_argument("--scoring", action="store_true")
    ap.add_argument("--score-threads", default="1,2")
    ap.add_argument("--profile", action="store_true")
    ap.add_argument("--train", action="store_true")
    args = ap.parse_args()
    import torch

    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} intra-op threads by default, "
        f"cuda={torch.cuda.is_available()}, cpus={os.cpu_count()}",
        flush=True,
    )
    if args.throughput:
        throughput(args)
    elif args.scoring:
        scoring(args)
    elif args.profile:
        profile(args)
    elif args.train:
        train_run(args)
    else:
        quality(args)
    print(f"peak RSS of this process: {peak_rss_mb()} MB")


if __name__ == "__main__":
    main()
