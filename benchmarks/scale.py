"""Cost vs size: the real ``train`` (NCF, 1 epoch; Spark ALS, a few iterations) on synthetic power-law logs.

    .venv/bin/python benchmarks/scale.py [--sizes 100k,1m,5m,20m] [--formats parquet,csv] [--algorithms ncf,als]
                                         [--als-iterations 3] [--ncf k=v,...] [--checkout DIR] [--out PATH]

Per size, ``benchmarks/synthetic.py``'s generator writes a log (power-law user activity and item popularity;
users = rows / 20 up to 1M, items = rows / 200 up to 100K; seed 0) as Parquet and CSV; each run is
``python -m recsys.training`` in its own process on a temporary ``/opt/ml`` tree, and its figures come from the
report it writes (``output/data/evaluation.json``): load + clean seconds, NCF samples/s and seconds per epoch (the
selection epoch), Spark ALS seconds per iteration (fit seconds / iterations), peak RSS, and wall time of the whole
``train`` (selection, refit, evaluation). Prints a table, writes ``<out>.json`` and ``<out>.png`` (cost vs size).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

ROOT = Path(__file__).resolve().parents[1]
SIZES = {"100k": 100_000, "1m": 1_000_000, "5m": 5_000_000, "20m": 20_000_000}
COLUMNS = {"user_col": "user_id", "item_col": "item_id", "rating_col": "quantity", "timestamp_col": "timestamp"}


def zipf_codes(rng: np.random.Generator, n: int, size: int, exponent: float) -> np.ndarray:
    """``size`` draws from ``n`` ids with P(rank r) ∝ r^-exponent; popular ids scattered over the id space."""
    cdf = np.cumsum(1.0 / np.arange(1, n + 1) ** exponent)
    ranks = np.minimum(np.searchsorted(cdf / cdf[-1], rng.random(size), side="right"), n - 1)
    return rng.permutation(n).astype(np.int32)[ranks]


def synthetic_table(rows: int, seed: int = 0, exponent: float = 1.1) -> pa.Table:
    """The same distribution as ``synthetic.power_law_interactions``, built columnar (ids as strings)."""
    rng = np.random.default_rng(seed)
    n_users, n_items = min(1_000_000, max(100, rows // 20)), min(100_000, max(50, rows // 200))
    user_names = pa.array(np.char.add("u", np.arange(n_users).astype(str)))
    item_names = pa.array(np.char.add("sku-", np.arange(n_items).astype(str)))
    return pa.table(
        {
            "user_id": user_names.take(pa.array(zipf_codes(rng, n_users, rows, exponent))),
            "item_id": item_names.take(pa.array(zipf_codes(rng, n_items, rows, exponent))),
            "quantity": pa.array(rng.integers(1, 6, rows, dtype=np.int32)),
            "timestamp": pa.array(1_600_000_000 + rng.integers(0, 86_400 * 365, rows)),
        }
    )


def write(table: pa.Table, directory: Path, fmt: str) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"part-0.{fmt}"
    if not path.exists():
        pq.write_table(table, path) if fmt == "parquet" else pacsv.write_csv(table, path)
    return path


def train(data_file: Path, hyperparameters: dict, log_file: Path, checkout: Path = ROOT) -> dict:
    """One ``train`` in its own process → its report, plus the wall time seen from outside."""
    with tempfile.TemporaryDirectory() as tmp:
        channel = Path(tmp) / "input" / "data" / "train"
        channel.mkdir(parents=True)
        (channel / data_file.name).symlink_to(data_file.resolve())
        config = Path(tmp) / "input" / "config"
        config.mkdir(parents=True)
        (config / "hyperparameters.json").write_text(json.dumps({k: str(v) for k, v in hyperparameters.items()}))
        env = {**os.environ, "SAGEMAKER_BASE_DIR": tmp, "PYTHONPATH": str(checkout / "container")}
        started = time.perf_counter()
        with log_file.open("w") as log:
            rc = subprocess.run([sys.executable, "-m", "recsys.training"], env=env, stdout=log, stderr=log).returncode
        wall = time.perf_counter() - started
        report_path = Path(tmp) / "output" / "data" / "evaluation.json"
        if rc != 0 or not report_path.exists():
            return {"rc": rc, "wall_seconds": round(wall, 1), "log": str(log_file)}
        return {"rc": rc, "wall_seconds": round(wall, 1), "report": json.loads(report_path.read_text())}


def figures(algorithm: str, rows: int, fmt: str, run: dict, iterations: int) -> dict:
    out = {"algorithm": algorithm, "rows": rows, "format": fmt, "wall_seconds": run["wall_seconds"]}
    report = run.get("report")
    if report is None:
        return {**out, "failed": f"rc {run['rc']}, see {run['log']}"}
    data, info = report["data"], report.get("info", {})
    out.update(
        users=data["n_users"],
        items=data["n_items"],
        interactions=data["train"]["interactions"],
        load_seconds=report["phases"]["load_seconds"],
        peak_rss_mb=report["peak_rss_mb"],
        HR=round(report["metrics"]["validation"]["HR"], 4),
    )
    if algorithm == "ncf":
        epoch = report["history"][0]
        out.update(
            epoch_seconds=epoch["train_seconds"],
            samples_per_second=epoch["samples_per_second"],
            eval_seconds=epoch["eval_seconds"],
            batch_size=info.get("batch_size"),
        )
    else:
        fits = max(1, info.get("fits", 2))  # selection + refit share the timings
        out["iteration_seconds"] = round(info.get("fit_seconds", float("nan")) / (fits * iterations), 2)
    return out


def table(rows: list[dict]) -> str:
    head = "| algorithm | format | interactions (rows) | users × items | load s | epoch / iter s | samples/s | "
    head += "peak RSS GiB | train wall s | HR@10 |\n|---|---|---|---|---|---|---|---|---|---|"
    lines = [head]
    for r in rows:
        if "failed" in r:
            lines.append(f"| {r['algorithm']} | {r['format']} | ({r['rows']:,}) | failed: {r['failed']} |")
            continue
        per = r.get("epoch_seconds", r.get("iteration_seconds"))
        rate = f"{r['samples_per_second']:,.0f}" if "samples_per_second" in r else "–"
        lines.append(
            f"| {r['algorithm']} | {r['format']} | {r['interactions']:,} ({r['rows']:,}) | {r['users']:,} × "
            f"{r['items']:,} | {r['load_seconds']:.1f} | {per:.2f} | {rate} | {r['peak_rss_mb'] / 1024:.2f} | "
            f"{r['wall_seconds']:.0f} | {r['HR']:.3f} |"
        )
    return "\n".join(lines)


def plot(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    ok = [r for r in rows if "failed" not in r]
    for (algorithm, fmt), key, label in [
        (("ncf", "parquet"), "epoch_seconds", "NCF s/epoch"),
        (("als", "parquet"), "iteration_seconds", "ALS s/iteration"),
        (("ncf", "parquet"), "load_seconds", "load+clean s (Parquet)"),
        (("ncf", "csv"), "load_seconds", "load+clean s (CSV)"),
        (("ncf", "parquet"), "wall_seconds", "NCF whole train s"),
    ]:
        pts = sorted((r["rows"], r[key]) for r in ok if (r["algorithm"], r["format"]) == (algorithm, fmt))
        if pts:
            axes[0].plot(*zip(*pts), marker="o", label=label)
    for algorithm in ("ncf", "als"):
        pts = sorted(
            (r["rows"], r["peak_rss_mb"] / 1024) for r in ok if (r["algorithm"], r["format"]) == (algorithm, "parquet")
        )
        if pts:
            axes[1].plot(*zip(*pts), marker="o", label=f"{algorithm} (Parquet; ALS: Python only)")
    axes[1].legend(fontsize=7)
    xs = np.array([min(SIZES.values()), max(SIZES.values())])
    axes[0].plot(xs, xs / xs[0], "k:", label="linear (from 1 s)")
    for ax, title in zip(axes, ("seconds", "peak RSS GiB")):
        ax.set(xscale="log", yscale="log", xlabel="interactions (rows)", title=title)
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", default="100k,1m,5m")
    ap.add_argument("--formats", default="parquet,csv")
    ap.add_argument("--algorithms", default="ncf,als")
    ap.add_argument("--als-iterations", type=int, default=3)
    ap.add_argument("--data-dir", type=Path, default=Path(tempfile.gettempdir()) / "recsys-scale")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "scale")
    ap.add_argument("--ncf", default="", help="extra NCF hyperparameters, k=v,k=v")
    ap.add_argument("--checkout", type=Path, default=ROOT, help="the checkout whose container/ trains (before/after)")
    args = ap.parse_args()
    extra = dict(kv.split("=", 1) for kv in args.ncf.split(",") if kv)
    previous = json.loads(args.out.with_suffix(".json").read_text()) if args.out.with_suffix(".json").exists() else []
    results = []
    for size in args.sizes.split(","):
        rows = SIZES[size]
        generated = None
        for fmt in args.formats.split(","):
            path = args.data_dir / size / f"part-0.{fmt}"
            if not path.exists():
                generated = generated or synthetic_table(rows)
                write(generated, path.parent, fmt)
            for algorithm in args.algorithms.split(","):
                if algorithm == "als" and fmt != "parquet":
                    continue  # loading is the same for both algorithms: ALS once, on Parquet
                hp = {"algorithm": algorithm, **COLUMNS, "seed": 42}
                hp.update({"epochs": 1, **extra} if algorithm == "ncf" else {"max_iter": args.als_iterations})
                log_file = args.data_dir / f"train-{algorithm}-{size}-{fmt}.log"
                run = train(path, hp, log_file, args.checkout)
                results.append(figures(algorithm, rows, fmt, run, args.als_iterations))
                print(json.dumps(results[-1]), flush=True)
    keyed = {(r["algorithm"], r["rows"], r["format"]): r for r in previous + results}
    merged = sorted(keyed.values(), key=lambda r: (r["algorithm"], r["format"], r["rows"]))
    args.out.with_suffix(".json").write_text(json.dumps(merged, indent=1) + "\n")
    print(table(merged))
    plot(merged, args.out.with_suffix(".png"))
    print(f"wrote {args.out.with_suffix('.json')} and {args.out.with_suffix('.png')}")


if __name__ == "__main__":
    main()
