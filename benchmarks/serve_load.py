"""Load-test the real `serve` stack (nginx → gunicorn → Flask) with wrk, per algorithm, on MovieLens-100K models.

    .venv/bin/python benchmarks/serve_load.py [--algorithms ncf als] [--duration 15] [--connections 16]
                                              [--workers N] [--worker-class gthread|sync] [--threads 4]
                                              [--model-dir DIR]   # bench an existing model instead of training

For each algorithm: trains an ml-100k model with the real `train` (preset movielens) once and reuses it from
``$RECSYS_BENCH_DIR`` (default /tmp/recsys-bench), starts `.venv/bin/serve` on a free port, and reports
- start-up time: process start → first `GET /ping` 200;
- wrk (1 thread, Lua script, a random known user per request) on single-user top-10 requests: req/s, p50, p99;
- one 1,000-user top-10 request: median of 9 (client-measured, loopback);
- memory per gunicorn worker: RSS and PSS from /proc/<pid>/smaps_rollup.
Targets (2-core machine): ≥ 1,500 req/s with p99 ≤ 25 ms for both; 1,000-user request ≤ 150 ms.
Skips cleanly (exit 0) when ml-100k or wrk is missing.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import requests

ROOT = Path(__file__).resolve().parents[1]
VENV_BIN = Path(sys.executable).parent
ML100K = Path(os.environ.get("RECSYS_ML100K_DIR", ROOT.parent / "shared" / "data" / "ml-100k"))
BENCH_DIR = Path(os.environ.get("RECSYS_BENCH_DIR", "/tmp/recsys-bench"))

WRK_SCRIPT = """
local users = {%(users)s}
math.randomseed(%(seed)d)
request = function()
  local u = users[math.random(#users)]
  return wrk.format("POST", "/invocations", {["Content-Type"] = "application/json"},
                    '{"users":["' .. u .. '"],"k":10}')
end
done = function(summary, latency, requests)
  io.write(string.format('RESULT {"requests":%%d,"duration_us":%%d,"status_errors":%%d,"socket_errors":%%d,' ..
    '"p50_us":%%d,"p90_us":%%d,"p99_us":%%d,"max_us":%%d}\\n',
    summary.requests, summary.duration, summary.errors.status,
    summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max))
end
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def trained_model(algorithm: str) -> Path:
    """An ml-100k model for ``algorithm``, trained once with the real `train` and cached."""
    base = BENCH_DIR / algorithm
    model = base / "model"
    if (model / "manifest.json").is_file():
        return model
    shutil.rmtree(base, ignore_errors=True)
    (base / "input/data/train").mkdir(parents=True)
    (base / "input/config").mkdir(parents=True)
    shutil.copy(ML100K / "u.data", base / "input/data/train/u.data")
    (base / "input/config/hyperparameters.json").write_text(json.dumps({"algorithm": algorithm, "preset": "movielens"}))
    print(f"[{algorithm}] training on ml-100k (cached in {base}) ...", flush=True)
    started = time.perf_counter()
    env = dict(os.environ, SAGEMAKER_BASE_DIR=str(base))
    subprocess.run([sys.executable, "-m", "recsys.training"], env=env, check=True, stdout=subprocess.DEVNULL)
    print(f"[{algorithm}] trained in {time.perf_counter() - started:.0f} s", flush=True)
    return model


def start_serve(model_dir: Path, port: int, env_extra: dict[str, str]) -> tuple[subprocess.Popen, float]:
    env = dict(os.environ, SAGEMAKER_BIND_TO_PORT=str(port), RECSYS_MODEL_DIR=str(model_dir), **env_extra)
    log = open(BENCH_DIR / f"serve-{port}.log", "wb")  # noqa: SIM115 - lives as long as the server
    started = time.perf_counter()
    proc = subprocess.Popen([str(VENV_BIN / "serve")], env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/ping"
    while time.perf_counter() - started < 120:
        if proc.poll() is not None:
            raise RuntimeError(f"serve exited with {proc.returncode}; see {log.name}")
        try:
            if requests.get(url, timeout=1).status_code == 200:
                return proc, time.perf_counter() - started
        except requests.RequestException:
            pass
        time.sleep(0.02)
    proc.kill()
    raise RuntimeError("serve did not become healthy within 120 s")


def stop_serve(proc: subprocess.Popen) -> tuple[int, float]:
    started = time.perf_counter()
    proc.send_signal(signal.SIGTERM)
    code = proc.wait(30)
    return code, time.perf_counter() - started


def worker_memory(serve_pid: int) -> list[dict[str, float]]:
    """RSS/PSS (MB) of each gunicorn worker (grandchildren of `serve` under the gunicorn master)."""

    def children(pid: int) -> list[int]:
        try:
            text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
        except OSError:
            return []
        return [int(p) for p in text.split()]

    result = []
    for child in children(serve_pid):
        cmdline = Path(f"/proc/{child}/cmdline").read_bytes()
        if b"gunicorn" not in cmdline:
            continue
        for worker in children(child):
            fields = {}
            for line in Path(f"/proc/{worker}/smaps_rollup").read_text().splitlines()[1:]:
                name, value = line.split(":", 1)
                fields[name] = float(value.split()[0]) / 1024
            result.append({"pid": worker, "rss_mb": fields.get("Rss", 0.0), "pss_mb": fields.get("Pss", 0.0)})
    return result


def time_big_request(port: int, users: list[str], n: int = 1000, repeats: int = 9) -> float:
    url = f"http://127.0.0.1:{port}/invocations"
    rng = random.Random(1)
    times = []
    with requests.Session() as session:
        for _ in range(repeats):
            body = json.dumps(
                {
                    "users": rng.sample(users, min(n, len(users)))
                    if len(users) >= n
                    else [rng.choice(users) for _ in range(n)],
                    "k": 10,
                }
            )
            started = time.perf_counter()
            response = session.post(url, data=body, headers={"Content-Type": "application/json"}, timeout=60)
            times.append(time.perf_counter() - started)
            assert response.status_code == 200 and len(response.json()["predictions"]) == n, response.text[:300]
    return statistics.median(times)


def run_wrk(port: int, users: list[str], duration: int, connections: int, threads: int) -> dict:
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as fh:
        fh.write(WRK_SCRIPT % {"users": ",".join(f'"{u}"' for u in users), "seed": 7})
        script = fh.name
    try:
        cmd = ["wrk", f"-t{threads}", f"-c{connections}", f"-d{duration}s", "-s", script, f"http://127.0.0.1:{port}"]
        out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    finally:
        os.unlink(script)
    line = next(line for line in out.splitlines() if line.startswith("RESULT "))
    stats = json.loads(line[len("RESULT ") :])
    stats["rps"] = stats["requests"] / (stats["duration_us"] / 1e6)
    return stats


def bench(name: str, model_dir: Path, args: argparse.Namespace) -> dict:
    with np.load(model_dir / "ids.npz") as ids:
        users = ids["users"].tolist()
    env_extra = {"RECSYS_WORKER_CLASS": args.worker_class, "RECSYS_THREADS": str(args.threads)}
    if args.workers:
        env_extra["MODEL_SERVER_WORKERS"] = str(args.workers)
    if args.nginx_workers:
        env_extra["RECSYS_NGINX_WORKERS"] = args.nginx_workers
    port = free_port()
    proc, startup = start_serve(model_dir, port, env_extra)
    try:
        big = time_big_request(port, users)
        run_wrk(port, users, 2, args.connections, args.wrk_threads)  # warm-up
        runs = [run_wrk(port, users, args.duration, args.connections, args.wrk_threads) for _ in range(args.repeat)]
        load = sorted(runs, key=lambda r: r["rps"])[len(runs) // 2]  # the median run by req/s
        memory = worker_memory(proc.pid)
    finally:
        code, stop_s = stop_serve(proc)
    result = {
        "model": name,
        "startup_s": round(startup, 2),
        "rps": round(load["rps"]),
        "p50_ms": load["p50_us"] / 1000,
        "p90_ms": load["p90_us"] / 1000,
        "p99_ms": load["p99_us"] / 1000,
        "errors": load["status_errors"] + load["socket_errors"],
        "users1000_ms": round(big * 1000, 1),
        "worker_rss_mb": [round(m["rss_mb"]) for m in memory],
        "worker_pss_mb": [round(m["pss_mb"]) for m in memory],
        "stop_exit_code": code,
        "stop_s": round(stop_s, 2),
        "runs": [(round(r["rps"]), r["p99_us"] / 1000) for r in runs],
    }
    print(json.dumps(result), flush=True)
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--algorithms", nargs="+", default=["ncf", "als"])
    parser.add_argument("--model-dir", type=Path, help="bench this model directory instead of training")
    parser.add_argument("--duration", type=int, default=15)
    parser.add_argument("--repeat", type=int, default=3, help="wrk runs per model; the median run is reported")
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--wrk-threads", type=int, default=1)
    parser.add_argument("--workers", type=int, default=0, help="gunicorn workers (default: serve's, one per CPU)")
    parser.add_argument("--worker-class", default="gthread", choices=["gthread", "sync"])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--nginx-workers", default="")
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        print("SKIP: wrk is not installed (apt-get install wrk)")
        return 0
    BENCH_DIR.mkdir(parents=True, exist_ok=True)
    if args.model_dir:
        targets = [(args.model_dir.name, args.model_dir)]
    else:
        if not (ML100K / "u.data").is_file():
            print(f"SKIP: MovieLens-100K not found at {ML100K} (set RECSYS_ML100K_DIR)")
            return 0
        targets = [(a, trained_model(a)) for a in args.algorithms]
    print(
        f"wrk: {args.wrk_threads} thread(s), {args.connections} connections, {args.duration} s; "
        f"gunicorn {args.worker_class} workers={args.workers or 'per CPU'} threads={args.threads}",
        flush=True,
    )
    results = [bench(name, model_dir, args) for name, model_dir in targets]
    print()
    print("| model | req/s | p50 ms | p99 ms | errors | 1,000 users ms | worker RSS / PSS MB | start-up s |")
    print("|---|---|---|---|---|---|---|---|")
    for r in results:
        memory = ", ".join(f"{a}/{b}" for a, b in zip(r["worker_rss_mb"], r["worker_pss_mb"]))
        print(
            f"| {r['model']} | {r['rps']} | {r['p50_ms']:.2f} | {r['p99_ms']:.2f} | {r['errors']} | "
            f"{r['users1000_ms']} | {memory} | {r['startup_s']} |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
