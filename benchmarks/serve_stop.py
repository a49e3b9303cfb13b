"""How long `serve` takes from SIGTERM to exit, on the host, for a model trained on the fixture (nothing in flight).

    .venv/bin/python benchmarks/serve_stop.py                    # ncf, 3 runs
    .venv/bin/python benchmarks/serve_stop.py --algorithm als --runs 5

Trains once with the real `train` (1 epoch / 2 iterations), then per run: start `.venv/bin/serve`, wait for the first
`/ping` 200, send SIGTERM, time until the process exits, print the seconds and the exit code.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from common import ROOT

sys.path.insert(0, str(ROOT / "tests"))
from helpers.net import free_port  # noqa: E402
from helpers.opt_ml import make_opt_ml, train_in  # noqa: E402

FAST = {"ncf": {"epochs": 1}, "als": {"max_iter": 2}}


def wait_ready(port: int, deadline_s: float = 120) -> None:
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/ping", timeout=1) as answer:
                if answer.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"serve did not answer /ping 200 within {deadline_s:.0f} s")


def one_stop(model_dir: Path) -> tuple[float, int]:
    port = free_port()
    env = dict(os.environ, RECSYS_MODEL_DIR=str(model_dir), SAGEMAKER_BIND_TO_PORT=str(port))
    serve = ROOT / ".venv/bin/serve"
    proc = subprocess.Popen([str(serve)], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_ready(port)
        started = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(60)
        return time.monotonic() - started, code
    finally:
        if proc.poll() is None:
            proc.kill()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--algorithm", choices=sorted(FAST), default="ncf")
    ap.add_argument("--runs", type=int, default=3)
    args = ap.parse_args()
    base = make_opt_ml(Path(tempfile.mkdtemp(prefix="recsys-stop-")) / "opt_ml")
    hyperparameters = {"algorithm": args.algorithm, "preset": "online_retail", **FAST[args.algorithm]}
    if train_in(base, hyperparameters) != 0:
        print((base / "output/failure").read_text(), file=sys.stderr)
        return 1
    for run in range(1, args.runs + 1):
        seconds, code = one_stop(base / "model")
        print(f"{args.algorithm} run {run}: SIGTERM → exit {seconds:.2f} s, exit code {code}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
