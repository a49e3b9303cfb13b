"""`make demo`: the main job end to end on the built-in sample data, exactly as SageMaker runs it, minus Docker.

1. copy opt_ml_fixture (a ready /opt/ml tree with an Online Retail subset) to a temp dir;
2. `train` (NCF by default; `--algorithm als` for Spark ALS) with SAGEMAKER_BASE_DIR pointing there;
3. `serve` (nginx → gunicorn → Flask) on a free port;
4. ask for recommendations: top-K for two customers, ranking of given candidates, similar items;
5. stop the server with SIGTERM.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def post(port: int, body: dict) -> dict:
    req = urllib.request.Request(
        f"http://127.0.0.1:{port}/invocations",
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(req, timeout=30) as resp:
        return json.loads(resp.read())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--algorithm", choices=["ncf", "als"], default="ncf")
    parser.add_argument("--keep", action="store_true", help="keep the temp /opt/ml tree")
    args = parser.parse_args()

    base = Path(tempfile.mkdtemp(prefix="recsys-demo-")) / "opt_ml"
    shutil.copytree(ROOT / "opt_ml_fixture", base, ignore=shutil.ignore_patterns("README.md"))
    hp_file = base / "input/config/hyperparameters.json"
    hp = json.loads(hp_file.read_text())
    hp["algorithm"] = args.algorithm
    hp_file.write_text(json.dumps(hp))
    env = {**os.environ, "SAGEMAKER_BASE_DIR": str(base)}

    print(f"==> train ({args.algorithm}) on {base}", flush=True)
    started = time.time()
    code = subprocess.call([str(BIN / "train")], env=env)
    if code != 0:
        print(f"train failed ({code}): {(base / 'output/failure').read_text()}", file=sys.stderr)
        return code
    manifest = json.loads((base / "model/manifest.json").read_text())
    print(f"==> trained in {time.time() - started:.1f}s; metrics {json.dumps(manifest['metrics'])}", flush=True)

    port = free_port()
    print(f"==> serve on http://127.0.0.1:{port}", flush=True)
    server = subprocess.Popen(
        [str(BIN / "serve")], env={**env, "SAGEMAKER_BIND_TO_PORT": str(port), "MODEL_SERVER_WORKERS": "2"}
    )
    try:
        deadline = time.time() + 60
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/ping", timeout=2) as resp:
                    if resp.status == 200:
                        break
            except (urllib.error.URLError, ConnectionError):
                pass
            if time.time() > deadline or server.poll() is not None:
                print("server did not become healthy", file=sys.stderr)
                return 1
            time.sleep(0.2)
        print(f"==> /ping 200 after {time.time() - started:.1f}s", flush=True)
        users = manifest_users(base)
        requests = [
            {"users": users[:2], "k": 5},
            {"user": [users[0]] * 3, "item": item_sample(base, 3)},
            {"similar_to": item_sample(base, 1), "k": 5},
            {"users": ["a-customer-we-never-saw"], "k": 3},
        ]
        for body in requests:
            print(f"\nPOST /invocations {json.dumps(body)}")
            print(json.dumps(post(port, body), indent=1))
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=30)
        print(f"\n==> server stopped (exit {server.returncode})")
        if not args.keep:
            shutil.rmtree(base.parent, ignore_errors=True)
    return 0


def manifest_users(base: Path) -> list[str]:
    import numpy as np

    with np.load(base / "model/ids.npz") as ids:
        return ids["users"][:5].tolist()


def item_sample(base: Path, n: int) -> list[str]:
    import numpy as np

    with np.load(base / "model/ids.npz") as ids:
        return ids["items"][:n].tolist()


if __name__ == "__main__":
    sys.exit(main())
