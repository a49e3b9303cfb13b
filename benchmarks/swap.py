"""Zero-downtime model swap on the real image: SageMaker's blue/green UpdateEndpoint, played locally.

    .venv/bin/python benchmarks/swap.py [--image recsys-test:cpu] [--model-a DIR --model-b DIR]
                                        [--threads 6] [--min-requests 5000] [--bake 2] [--runs 1]
                                        [--router python|nginx]

Container A (`docker run IMAGE serve` on model A) sits behind a router that plays SageMaker's role. Under a constant
stream of single-user /invocations requests on keep-alive connections:

    start B (model B) → B's /ping 200 → switch the router to B → A has no router request in flight any more
    → bake → `docker stop -t 30 A` (SIGTERM; SageMaker SIGKILLs 30 s later) → A exits.

Routers: ``python`` (default, ProxyRouter) keeps the callers' connections across the switch and routes each request
to the upstream current when it arrives, as SageMaker's front end does; ``nginx`` is the host's nginx, switched by
rewriting an included upstream file and SIGHUP (what `nginx -s reload` sends: new workers take the new upstream, old
workers finish their requests and exit — and close their idle keep-alive client connections, which races callers).

The bake lasts at least --bake seconds and until --min-requests requests were sent since B became ready, so the swap
window (B ready → A gone) always holds that many. Drain probes — heavy requests sent straight to A just before its
SIGTERM — must still be answered: they are in flight when the signal lands.

Prints, per phase (A only · B starting · swap · after): requests, failures, which model answered, p50/p99/max; then
the swap length (B ready → A gone), A's stop time and exit code, the probes. Without --model-a/--model-b it trains
NCF (A) and ALS (B) on opt_ml_fixture with the image's `train` (cached in $RECSYS_BENCH_DIR/swap). Exits 1 when a
request failed, an answer came from the wrong model, or A did not exit 0.
"""

from __future__ import annotations

import argparse
import asyncio
import http.client
import json
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FIXTURE = ROOT / "opt_ml_fixture"
BENCH_DIR = Path(os.environ.get("RECSYS_BENCH_DIR", "/tmp/recsys-bench")) / "swap"
STOP_GRACE_S = 30  # SageMaker hosting: SIGKILL 30 s after SIGTERM
READY_LIMIT_S = 120
PHASES = ("A only", "B starting", "swap", "after")
# serve logs this line (recsys.platform.logs format, the container's clock in UTC) when the SIGTERM reaches it
SIGTERM_LOGGED = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) INFO recsys\.serve: received SIGTERM", re.M)
WALL_OFFSET = time.time() - time.monotonic()  # monotonic → wall clock, to compare with the container's log
JSON = {"Content-Type": "application/json", "Accept": "application/json"}

ROUTER_CONF = """
{user}
worker_processes 1;
daemon off;
pid {runtime}/nginx.pid;
error_log {runtime}/error.log warn;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    client_body_temp_path {runtime}/body;
    proxy_temp_path {runtime}/proxy;
    fastcgi_temp_path {runtime}/fastcgi;
    uwsgi_temp_path {runtime}/uwsgi;
    scgi_temp_path {runtime}/scgi;
    include {runtime}/upstream.conf;
    server {{
        listen 127.0.0.1:{port} backlog=1024;
        keepalive_requests 100000;
        location / {{
            proxy_pass http://model;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_read_timeout 60s;
        }}
    }}
}}
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def docker(*args: str, timeout: float = 120, check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run(["docker", *args], capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise RuntimeError(f"docker {' '.join(args)} failed ({proc.returncode}): {proc.stderr.strip()[-2000:]}")
    return proc


def find_nginx() -> str | None:
    return shutil.which("nginx") or next((p for p in ("/usr/sbin/nginx",) if os.access(p, os.X_OK)), None)


class NginxRouter:
    """The host's nginx in front of one model container; ``switch`` moves it to another, gracefully."""

    def __init__(self, runtime: Path, port: int, nginx: str):
        self.runtime, self.port, self.nginx = runtime, port, nginx
        self.process: subprocess.Popen | None = None

    def start(self, upstream_port: int) -> None:
        self.runtime.mkdir(parents=True, exist_ok=True)
        self._write_upstream(upstream_port)
        user = "user root;" if os.geteuid() == 0 else ""  # as root, workers would otherwise drop to nobody
        conf = self.runtime / "nginx.conf"
        conf.write_text(ROUTER_CONF.format(user=user, runtime=self.runtime, port=self.port))
        self.process = subprocess.Popen([self.nginx, "-p", str(self.runtime), "-c", str(conf), "-e", "stderr"])
        deadline = time.monotonic() + 10
        while not self.workers():
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"router nginx did not start: {self.error_log()}")
            time.sleep(0.02)

    def _write_upstream(self, port: int) -> None:
        tmp = self.runtime / "upstream.conf.tmp"
        tmp.write_text(f"upstream model {{ server 127.0.0.1:{port}; keepalive 32; }}\n")
        tmp.replace(self.runtime / "upstream.conf")  # a reload never reads a half-written file

    def workers(self) -> set[int]:
        """The master's child processes (its workers), read from /proc."""
        if self.process is None:
            return set()
        found = set()
        for stat in Path("/proc").glob("[0-9]*/stat"):
            try:
                fields = stat.read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == self.process.pid:
                found.add(int(stat.parent.name))
        return found

    def switch(self, upstream_port: int, limit_s: float = 30) -> tuple[float, float, float]:
        """(signalled, new workers up, old workers gone) as monotonic times."""
        old = self.workers()
        self._write_upstream(upstream_port)
        signalled = time.monotonic()
        self.process.send_signal(signal.SIGHUP)
        up = gone = None
        while gone is None:
            now = self.workers()
            if up is None and now - old:
                up = time.monotonic()
            if up is not None and not now & old:
                gone = time.monotonic()
            if time.monotonic() - signalled > limit_s:
                raise RuntimeError(f"router reload did not finish in {limit_s} s: {self.error_log()}")
            time.sleep(0.005)
        return signalled, up, gone

    def error_log(self) -> str:
        path = self.runtime / "error.log"
        return path.read_text()[-2000:] if path.exists() else "(no error log)"

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGQUIT)
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


class ProxyRouter:
    """SageMaker's front end in miniature, in a child process (``swap.py _router``, so it shares no GIL with the
    load): the caller's keep-alive connections stay open across a switch — each request goes to the upstream that is
    current when it arrives, over pooled keep-alive connections — and the old upstream is "drained" once its last
    in-flight request has been answered; then its pooled connections are closed. A reloaded nginx cannot do that:
    its old workers close their idle keep-alive client connections, racing a client that is sending on one."""

    def __init__(self, port: int):
        self.port = port
        self.process: subprocess.Popen | None = None

    def start(self, upstream_port: int) -> None:
        cmd = [sys.executable, str(Path(__file__).resolve()), "_router", str(self.port), str(upstream_port)]
        self.process = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        if self.process.stdout.readline().strip() != "ready":
            raise RuntimeError(f"the router did not start (exit code {self.process.poll()})")

    def switch(self, upstream_port: int) -> tuple[float, float, float]:
        """(asked, new upstream current, old upstream drained) as monotonic times (CLOCK_MONOTONIC: one clock for
        every process of the machine)."""
        asked = time.monotonic()
        self.process.stdin.write(f"{upstream_port}\n")
        self.process.stdin.flush()
        reply = self.process.stdout.readline().split()
        if len(reply) != 2:
            raise RuntimeError(f"the router did not switch (exit code {self.process.poll()})")
        return asked, float(reply[0]), float(reply[1])

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.stdin.close()  # end of the control channel: the router exits
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


class _Upstream:
    def __init__(self, port: int):
        self.port = port
        self.idle: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []
        self.in_flight = 0
        self.drained: asyncio.Event | None = None  # set once retired and idle


def _content_length(head: bytes) -> tuple[int, bool]:
    """(body length, keep-alive) of an HTTP/1.1 message head; chunked bodies are not needed here and refused."""
    length, keep = 0, True
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        name, value = name.strip().lower(), value.strip().lower()
        if name == b"content-length":
            length = int(value)
        elif name == b"transfer-encoding":
            raise ValueError("chunked messages are not supported by this router")
        elif name == b"connection" and value == b"close":
            keep = False
    return length, keep


async def _forward(up: _Upstream, head: bytes, body: bytes) -> tuple[bytes, bool]:
    """One request over one of ``up``'s keep-alive connections: (response bytes, whether the upstream keeps it)."""
    reader, writer = up.idle.pop() if up.idle else await asyncio.open_connection("127.0.0.1", up.port)
    try:
        writer.write(head + body)
        await writer.drain()
        response = await reader.readuntil(b"\r\n\r\n")
        length, keep = _content_length(response)
        response += await reader.readexactly(length)
    except BaseException:
        writer.close()
        raise
    if keep and up.drained is None:
        up.idle.append((reader, writer))
    else:
        writer.close()
    return response, keep


class _Proxy:
    def __init__(self, upstream_port: int):
        self.current = _Upstream(upstream_port)

    async def client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                except (asyncio.IncompleteReadError, ConnectionError):
                    return  # the caller closed its connection
                length, keep = _content_length(head)
                body = await reader.readexactly(length)
                up = self.current  # the routing decision, once per request
                up.in_flight += 1
                try:
                    response, _ = await _forward(up, head, body)
                except (OSError, asyncio.IncompleteReadError, ValueError) as err:
                    message = f"router: upstream {up.port} failed: {type(err).__name__}".encode()
                    response = b"HTTP/1.1 502 Bad Gateway\r\nConnection: close\r\nContent-Length: %d\r\n\r\n%s" % (
                        len(message),
                        message,
                    )
                    keep = False
                finally:
                    up.in_flight -= 1
                    if up.drained is not None and up.in_flight == 0:
                        up.drained.set()
                writer.write(response)
                await writer.drain()
                if not keep:
                    return
        finally:
            writer.close()

    async def switch(self, port: int) -> tuple[float, float]:
        old, self.current = self.current, _Upstream(port)
        switched = time.monotonic()
        old.drained = asyncio.Event()
        if old.in_flight == 0:
            old.drained.set()
        await old.drained.wait()
        drained = time.monotonic()
        for _, writer in old.idle:
            writer.close()
        old.idle.clear()
        return switched, drained


async def _router_main(port: int, upstream_port: int) -> None:
    proxy = _Proxy(upstream_port)
    server = await asyncio.start_server(proxy.client, "127.0.0.1", port, backlog=1024)
    loop = asyncio.get_running_loop()
    control = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(control), sys.stdin)
    print("ready", flush=True)
    while line := await control.readline():
        switched, drained = await proxy.switch(int(line))
        print(f"{switched} {drained}", flush=True)
    server.close()


@dataclass
class Record:
    start: float
    end: float
    status: int  # 0: no HTTP answer (connection refused/reset, timeout)
    body: bytes  # the answer, or the exception's name


class Load:
    """A constant stream of the same request on ``threads`` keep-alive connections, each sending its next request
    as soon as the previous one is answered; no retries, so every failure is counted."""

    def __init__(self, port: int, body: bytes, threads: int):
        self.port, self.body, self.threads = port, body, threads
        self.records: list[Record] = []
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, daemon=True) for _ in range(threads)]

    def start(self) -> None:
        for t in self._threads:
            t.start()

    def stop(self) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(30)

    def sent_since(self, t: float) -> int:
        return sum(1 for r in self.records[-200_000:] if r.start >= t)

    def _run(self) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        while not self._stop.is_set():
            start = time.monotonic()
            try:
                conn.request("POST", "/invocations", self.body, JSON)
                resp = conn.getresponse()
                status, body = resp.status, resp.read()
            except (OSError, http.client.HTTPException) as err:
                status, body = 0, type(err).__name__.encode()
                conn.close()  # http.client reconnects on the next request
            self.records.append(Record(start, time.monotonic(), status, body))
        conn.close()


def canonical(body: bytes) -> str:
    """An answer's content, independent of float noise between workers: items and scores to 4 decimals."""
    predictions = json.loads(body)["predictions"]
    return json.dumps([[p.get("user"), p["items"], [round(s, 4) for s in p["scores"]]] for p in predictions])


def ask(port: int, body: bytes, timeout: float = 30) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("POST", "/invocations", body, JSON)
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


def ping(port: int) -> int:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
    try:
        conn.request("GET", "/ping")
        return conn.getresponse().status
    except (OSError, http.client.HTTPException):
        return 0
    finally:
        conn.close()


def start_server(image: str, model_dir: Path, name: str) -> int:
    """`docker run -d IMAGE serve` on ``model_dir``; returns the host port."""
    port = free_port()
    docker("run", "-d", "--name", name, "-p", f"127.0.0.1:{port}:8080", "-v", f"{model_dir}:/opt/ml/model:ro",
           image, "serve")  # fmt: skip
    return port


def wait_ready(port: int, name: str, limit_s: float = READY_LIMIT_S) -> float:
    """Monotonic time of the first /ping 200."""
    deadline = time.monotonic() + limit_s
    while (status := ping(port)) != 200:
        running = docker("inspect", "-f", "{{.State.Running}}", name, check=False).stdout.strip() == "true"
        if not running or time.monotonic() > deadline:
            logs = docker("logs", name, check=False)
            raise RuntimeError(f"{name}: /ping never answered 200 (last {status}):\n{logs.stderr[-3000:]}")
        time.sleep(0.05)
    return time.monotonic()


def model_users(model_dir: Path) -> list[str]:
    import numpy as np

    with np.load(model_dir / "ids.npz", allow_pickle=False) as ids:
        return [str(u) for u in ids["users"]]


class Probes:
    """Heavy requests sent straight to a container just before it is stopped: each is written to its socket before
    ``start`` returns, so it is in the server's hands when the SIGTERM lands and must still be answered."""

    def __init__(self, port: int, body: bytes, count: int):
        self.port, self.body = port, body
        self.records: list[Record] = []
        self._sent = threading.Semaphore(0)
        self._threads = [threading.Thread(target=self._run, daemon=True) for _ in range(count)]

    def start(self) -> None:
        for t in self._threads:
            t.start()
        for _ in self._threads:
            self._sent.acquire(timeout=10)
        time.sleep(0.05)  # past the server's accept(): a connection still in the listen queue would be dropped

    def join(self) -> list[Record]:
        for t in self._threads:
            t.join(STOP_GRACE_S + 10)
        return self.records

    def _run(self) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=STOP_GRACE_S + 5)
        start = time.monotonic()
        try:
            conn.request("POST", "/invocations", self.body, JSON)
            self._sent.release()
            resp = conn.getresponse()
            status, body = resp.status, resp.read()
        except (OSError, http.client.HTTPException) as err:
            self._sent.release()
            status, body = 0, type(err).__name__.encode()
        finally:
            conn.close()
        self.records.append(Record(start, time.monotonic(), status, body))


@dataclass
class Timeline:
    load_start: float = 0.0
    b_start: float = 0.0
    b_ready: float = 0.0
    switch: float = 0.0  # router reload signalled
    switched: float = 0.0  # the router's new workers (upstream B) are up
    drained: float = 0.0  # the router's old workers (upstream A) are gone
    a_sigterm: float = 0.0
    a_gone: float = 0.0
    end: float = 0.0


@dataclass
class Swap:
    """Everything one swap measured; ``problems`` lists what broke the zero-downtime contract."""

    timeline: Timeline
    records: list[Record]
    answers: dict[str, str]  # canonical answer → "A" / "B"
    probes: list[Record] = field(default_factory=list)
    probe_users: int = 0
    a_exit_code: str = ""
    a_sigterm_logged: float | None = None  # monotonic time A logged the SIGTERM, from its log
    min_requests: int = 0

    def probes_after_sigterm(self) -> int:
        """Drain probes answered after A had received its SIGTERM: the requests it drained."""
        seen = self.a_sigterm_logged
        return 0 if seen is None else sum(1 for r in self.probes if r.status == 200 and r.end > seen)

    def label(self, r: Record) -> str:
        if r.status == 0:
            return f"error {r.body.decode()}"
        if r.status != 200:
            return f"HTTP {r.status}"
        try:
            return self.answers.get(canonical(r.body), "wrong answer")
        except (ValueError, KeyError, TypeError):
            return "wrong answer"

    def phase(self, r: Record) -> str:
        t = self.timeline
        if r.start < t.b_start:
            return PHASES[0]
        if r.start < t.b_ready:
            return PHASES[1]
        return PHASES[2] if r.start <= t.a_gone else PHASES[3]

    def failures(self) -> list[Record]:
        return [r for r in self.records if self.label(r) not in ("A", "B")]

    def in_window(self) -> list[Record]:
        return [r for r in self.records if self.phase(r) == "swap"]

    def problems(self) -> list[str]:
        t, found = self.timeline, []
        failed = Counter(self.label(r) for r in self.failures())
        if failed:
            found.append(f"{sum(failed.values())} of {len(self.records)} requests failed: {dict(failed)}")
        if len(set(self.answers.values())) != 2:
            found.append("models A and B give the same answer: the test cannot tell them apart")
        # A request sent just before the switch may reach the router just after it, and then B answers it, as
        # SageMaker's router would: only requests answered before the switch was signalled must be A's.
        early_b = sum(1 for r in self.records if r.end < t.switch and self.label(r) == "B")
        late_a = sum(1 for r in self.records if r.start > t.drained and self.label(r) == "A")
        if early_b or late_a:
            found.append(f"answers did not switch cleanly: {early_b} B before the switch, {late_a} A after it")
        if len(self.in_window()) < self.min_requests:
            found.append(f"only {len(self.in_window())} requests sent during the swap (< {self.min_requests})")
        if self.a_exit_code != "0":
            found.append(f"A exited {self.a_exit_code} after SIGTERM (expected 0)")
        if t.a_gone - t.a_sigterm >= STOP_GRACE_S:
            found.append(f"A took {t.a_gone - t.a_sigterm:.1f} s to stop: SageMaker would have SIGKILLed it")
        bad = [r for r in self.probes if r.status != 200 or len(json.loads(r.body)["predictions"]) != self.probe_users]
        if bad:
            found.append(f"{len(bad)} of {len(self.probes)} in-flight requests to A were not answered in full")
        if self.a_sigterm_logged is None:
            found.append("A never logged that it received SIGTERM")
        elif self.probes and not self.probes_after_sigterm():
            found.append("every drain probe was answered before A received SIGTERM: nothing was drained (heavier)")
        return found

    def render(self) -> str:
        t = self.timeline
        lines = [f"{'phase':<11} {'requests':>8} {'failed':>6} {'from A':>7} {'from B':>7} {'p50 ms':>7} "
                 f"{'p99 ms':>7} {'max ms':>7}"]  # fmt: skip
        for phase in PHASES:
            rows = [r for r in self.records if self.phase(r) == phase]
            labels = Counter(self.label(r) for r in rows)
            ms = sorted((r.end - r.start) * 1000 for r in rows) or [float("nan")]
            p99 = ms[min(len(ms) - 1, int(len(ms) * 0.99))]
            failed = len(rows) - labels["A"] - labels["B"]
            lines.append(f"{phase:<11} {len(rows):>8} {failed:>6} {labels['A']:>7} {labels['B']:>7} "
                         f"{statistics.median(ms):>7.1f} {p99:>7.1f} {ms[-1]:>7.1f}")  # fmt: skip
        reload = [self.label(r) for r in self.records if t.switch <= r.start <= t.drained]
        window_s = t.end - t.load_start
        lines += [
            f"total {len(self.records)} requests in {window_s:.1f} s ({len(self.records) / window_s:.0f} req/s), "
            f"{len(self.failures())} failed",
            f"B start-up (docker run → /ping 200): {t.b_ready - t.b_start:.2f} s",
            f"router switch: B current {1000 * (t.switched - t.switch):.0f} ms, A drained "
            f"{1000 * (t.drained - t.switch):.0f} ms after it was asked; requests sent meanwhile: "
            f"{reload.count('A')} from A, {reload.count('B')} from B",
            f"A: SIGTERM → exited {t.a_gone - t.a_sigterm:.2f} s, exit code {self.a_exit_code}",
            f"swap (B ready → A gone): {t.a_gone - t.b_ready:.2f} s, {len(self.in_window())} requests sent",
        ]
        for r in self.failures()[:10]:
            lines.append(f"failed: {self.label(r)}, sent {1000 * (r.start - t.switch):+.0f} ms from the switch, "
                         f"{1000 * (r.start - t.a_sigterm):+.0f} ms from A's SIGTERM")  # fmt: skip
        if self.probes:
            ok = sum(1 for r in self.probes if r.status == 200)
            after = [1000 * (r.end - t.a_sigterm) for r in self.probes]
            lines.append(f"drain probes ({self.probe_users} users each, sent before SIGTERM): {ok}/{len(self.probes)} "
                         f"answered, {self.probes_after_sigterm()} after A logged the SIGTERM, "
                         f"{min(after):.0f}-{max(after):.0f} ms after `docker stop` was issued")  # fmt: skip
        return "\n".join(lines)


@dataclass
class Setup:
    image: str
    model_a: Path
    model_b: Path
    threads: int = 6
    min_requests: int = 5000
    bake_s: float = 2.0
    steady_s: float = 2.0  # load before B starts and after A is gone
    probes: int = 4
    name_prefix: str = "recsys-swap"
    router: str = "python"  # "python": ProxyRouter; "nginx": the host's nginx, switched by a reload
    nginx: str | None = None


def run_swap(setup: Setup, runtime: Path) -> Swap:
    """One swap A → B under load (see the module docstring); containers and the router are removed afterwards."""
    tag = uuid.uuid4().hex[:8]
    name_a, name_b = f"{setup.name_prefix}-a-{tag}", f"{setup.name_prefix}-b-{tag}"
    if setup.router == "nginx":
        nginx = setup.nginx or find_nginx()
        if nginx is None:
            raise RuntimeError("nginx is not installed on this host (scripts/system-deps.sh installs it)")
        router = NginxRouter(runtime / f"router-{tag}", free_port(), nginx)
    elif setup.router == "python":
        router = ProxyRouter(free_port())
    else:
        raise ValueError(f"router must be 'python' or 'nginx', got {setup.router!r}")
    try:
        port_a = start_server(setup.image, setup.model_a, name_a)
        wait_ready(port_a, name_a)
        users = model_users(setup.model_a)
        body = json.dumps({"users": [users[0]], "k": 10}).encode()
        router.start(port_a)
        return _swap_under_load(setup, router, body, users, (name_a, port_a), name_b)
    finally:
        router.stop()
        docker("rm", "-f", name_a, name_b, check=False)


def _known_answer(port: int, body: bytes, who: str) -> str:
    status, answer = ask(port, body)
    if status != 200:
        raise RuntimeError(f"model {who} answered {status}: {answer[:500]!r}")
    return canonical(answer)


def _swap_under_load(
    setup: Setup, router: NginxRouter | ProxyRouter, body: bytes, users: list[str], a: tuple[str, int], name_b: str
) -> Swap:
    name_a, port_a = a
    t = Timeline()
    answers = {_known_answer(port_a, body, "A"): "A"}
    load = Load(router.port, body, setup.threads)
    t.load_start = time.monotonic()
    load.start()
    try:
        time.sleep(setup.steady_s)
        t.b_start = time.monotonic()
        port_b = start_server(setup.image, setup.model_b, name_b)
        t.b_ready = wait_ready(port_b, name_b)
        answers.setdefault(_known_answer(port_b, body, "B"), "B")
        t.switch, t.switched, t.drained = router.switch(port_b)
        # SageMaker's baking period: both fleets up, traffic on the new one; here also long enough for the target
        deadline = time.monotonic() + 120
        while time.monotonic() < t.drained + setup.bake_s or load.sent_since(t.b_ready) < setup.min_requests:
            if time.monotonic() > deadline:
                break
            time.sleep(0.05)
        probe_users = (users * (10_000 // len(users) + 1))[:10_000]
        probes = Probes(port_a, json.dumps({"users": probe_users, "k": 10}).encode(), setup.probes)
        probes.start()
        t.a_sigterm = time.monotonic()
        docker("stop", "-t", str(STOP_GRACE_S), name_a, timeout=STOP_GRACE_S + 30)
        t.a_gone = time.monotonic()
        inspected = docker("inspect", "-f", "{{.State.ExitCode}}", name_a, check=False)
        code = inspected.stdout.strip() or f"unknown ({inspected.stderr.strip()[:200]})"
        logged = sigterm_logged(name_a)
        time.sleep(setup.steady_s)
    finally:
        load.stop()
    t.end = time.monotonic()
    return Swap(t, load.records, answers, probes.join(), len(probe_users), code, logged, setup.min_requests)


def sigterm_logged(name: str) -> float | None:
    """When the container's `serve` logged the SIGTERM, as a monotonic time of this process; None if it did not."""
    logs = docker("logs", name, check=False)
    found = SIGTERM_LOGGED.search(logs.stdout + logs.stderr)
    if found is None:
        return None
    wall = datetime.strptime(found.group(1), "%Y-%m-%d %H:%M:%S,%f").replace(tzinfo=UTC).timestamp()
    return wall - WALL_OFFSET


FAST = {
    "A": {"algorithm": "ncf", "preset": "online_retail", "epochs": "2"},
    "B": {"algorithm": "als", "preset": "online_retail", "max_iter": "3"},
}


def trained_model(image: str, which: str) -> Path:
    """Model A (NCF) or B (ALS) trained on opt_ml_fixture by the image's `train`, cached in BENCH_DIR."""
    base = BENCH_DIR / which
    if (base / "model/manifest.json").is_file():
        return base / "model"
    shutil.rmtree(base, ignore_errors=True)
    shutil.copytree(FIXTURE, base, ignore=shutil.ignore_patterns("README.md"))
    (base / "input/config/hyperparameters.json").write_text(json.dumps(FAST[which]))
    print(f"training model {which} ({FAST[which]['algorithm']}) in {image} ...", flush=True)
    name = f"recsys-swap-train-{uuid.uuid4().hex[:8]}"
    try:
        proc = docker("run", "--name", name, "-v", f"{base}:/opt/ml", image, "train", timeout=900, check=False)
        code = docker("inspect", "-f", "{{.State.ExitCode}}", name, check=False).stdout.strip()
    finally:
        docker("rm", "-f", name, check=False)
    if proc.returncode != 0 or code != "0":
        raise RuntimeError(f"train failed ({code}):\n{proc.stderr[-3000:]}")
    return base / "model"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--image", default=os.environ.get("RECSYS_TEST_IMAGE", "recsys-test:cpu"))
    parser.add_argument("--model-a", type=Path, help="model directory A serves (default: NCF on the fixture)")
    parser.add_argument("--model-b", type=Path, help="model directory B serves (default: ALS on the fixture)")
    parser.add_argument("--threads", type=int, default=6, help="keep-alive connections of the load")
    parser.add_argument("--min-requests", type=int, default=5000, help="requests sent during the swap, at least")
    parser.add_argument("--bake", type=float, default=2.0, help="seconds between the switch and A's SIGTERM, at least")
    parser.add_argument("--runs", type=int, default=1)
    parser.add_argument("--router", choices=("python", "nginx"), default="python",
                        help="python: keeps callers' connections across the switch, as SageMaker's front end does; "
                        "nginx: the host's nginx switched by a reload")  # fmt: skip
    args = parser.parse_args(argv)
    if args.threads < 1 or args.runs < 1 or args.min_requests < 0 or args.bake < 0:
        parser.error("--threads and --runs must be at least 1, --min-requests and --bake at least 0")
    for path in (args.model_a, args.model_b):
        if path is not None and not (path / "manifest.json").is_file():
            parser.error(f"{path} is not a model directory (no manifest.json)")
    setup = Setup(
        args.image,
        args.model_a or trained_model(args.image, "A"),
        args.model_b or trained_model(args.image, "B"),
        threads=args.threads,
        min_requests=args.min_requests,
        bake_s=args.bake,
        router=args.router,
    )
    problems = 0
    with tempfile.TemporaryDirectory(prefix="recsys-swap-") as tmp:
        for run in range(1, args.runs + 1):
            swap = run_swap(setup, Path(tmp))
            print(f"\n== swap {run}/{args.runs}, {args.router} router: {setup.model_a} → {setup.model_b}")
            print(swap.render())
            for problem in swap.problems():
                print(f"PROBLEM: {problem}")
                problems += 1
    return 1 if problems else 0


if __name__ == "__main__":
    if sys.argv[1:2] == ["_router"]:  # ProxyRouter's child process: _router PORT UPSTREAM_PORT
        asyncio.run(_router_main(int(sys.argv[2]), int(sys.argv[3])))
        sys.exit(0)
    sys.exit(main())
