"""Coordination between the hosts of one training job.

Multi-host training (Spark standalone for ALS, torch.distributed for NCF) is a later step; today the leader
(``sorted(hosts)[0]``) trains and writes the model, and every other host waits for the leader's outcome and exits
with it. Waiting matters: in SDK local mode the first container to exit stops all others
(``--abort-on-container-exit``), and on SageMaker a worker that fails fast would fail the job.

The protocol is one TCP connection per worker to the leader's ``RECSYS_COORDINATION_PORT`` (default 7079): the
leader answers ``ok`` or ``failed: <reason>`` when its job ends. Host names are resolved with retries (SageMaker says
DNS may not be ready at start).
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time

from recsys.platform.errors import UserError
from recsys.platform.lifecycle import StopController
from recsys.platform.resources import ResourceConfig

log = logging.getLogger(__name__)

DEFAULT_PORT = 7079


def coordination_port() -> int:
    return int(os.environ.get("RECSYS_COORDINATION_PORT", DEFAULT_PORT))


class LeaderBeacon:
    """Run on the leader: accepts workers and, at ``finish``, tells each the outcome."""

    def __init__(self, port: int | None = None):
        self.port = coordination_port() if port is None else port
        self._server = socket.create_server(("", self.port), reuse_port=False, backlog=64)
        self._server.settimeout(0.5)
        self._conns: list[socket.socket] = []
        self._outcome: bytes | None = None
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._accept, name="leader-beacon", daemon=True)
        self._thread.start()

    def _accept(self) -> None:
        while True:
            try:
                conn, addr = self._server.accept()
            except TimeoutError:
                continue
            except OSError:  # the server socket was closed by finish()
                return
            log.info("worker %s connected", addr[0])
            with self._lock:
                if self._outcome is not None:
                    self._send(conn, self._outcome)
                else:
                    self._conns.append(conn)

    @staticmethod
    def _send(conn: socket.socket, message: bytes) -> None:
        try:
            conn.sendall(message)
        except OSError:
            pass
        finally:
            conn.close()

    def finish(self, ok: bool, reason: str = "", linger: float = 2.0) -> None:
        message = b"ok\n" if ok else f"failed: {reason}\n".encode()[:900]
        with self._lock:
            self._outcome = message
            conns, self._conns = self._conns, []
        for conn in conns:
            self._send(conn, message)
        deadline = time.time() + linger  # answer workers that connect right now too
        while time.time() < deadline and self._thread.is_alive():
            time.sleep(0.1)
        self._server.close()


def wait_for_leader(
    resources: ResourceConfig, stop: StopController, port: int | None = None, connect_timeout: float = 600.0
) -> None:
    """Run on a worker: block until the leader reports; raise UserError if it failed or never answered."""
    port = coordination_port() if port is None else port
    leader = resources.leader
    deadline = time.time() + connect_timeout
    log.info("host %s waits for leader %s:%d", resources.current_host, leader, port)
    while True:
        stop.check()
        try:
            address = socket.gethostbyname(leader)
            conn = socket.create_connection((address, port), timeout=5)
            break
        except OSError as exc:
            if time.time() > deadline:
                raise UserError(
                    f"host {resources.current_host} could not reach the leader {leader}:{port}: {exc}"
                ) from None
            time.sleep(1.0)
    conn.settimeout(1.0)
    data = b""
    with conn:
        while not data.endswith(b"\n"):
            stop.check()
            try:
                chunk = conn.recv(1024)
            except TimeoutError:
                continue
            if not chunk:
                break
            data += chunk
    text = data.decode(errors="replace").strip()
    if text != "ok":
        raise UserError(f"the leader host {leader} {text or 'exited without reporting'}")
    log.info("leader %s finished; host %s done", leader, resources.current_host)
