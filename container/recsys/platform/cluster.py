"""Coordination between the hosts of one training job.

The leader (``sorted(hosts)[0]``) writes the model; every other host joins it and exits with its outcome. Waiting
matters: in SDK local mode the first container to exit stops all others (``--abort-on-container-exit``), and on
SageMaker a host that fails fast would fail the job.

The protocol is one TCP connection per worker to the leader's ``RECSYS_COORDINATION_PORT`` (default 7079), lines of
text, so that a worker that dies is seen at once (its connection closes):

- worker → leader: ``join {json}`` (host name and what it offers: cores, memory), then ``file {json}`` + that many
  bytes for each file of its shard of a ``ShardedByS3Key`` channel, then ``ready``; later, possibly
  ``failed: <reason>`` (a service it runs for the job died).
- leader → worker: ``ok`` or ``failed: <reason>`` when the job ends.

Addresses: ``network``; sharded channels and the leader's view of them: ``shards``.
How an algorithm uses the joined hosts is its own business (``HostServices``; ALS: a Spark standalone cluster).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any, Protocol

from recsys.platform.errors import UserError
from recsys.platform.lifecycle import StopController
from recsys.platform.paths import SageMakerPaths
from recsys.platform.resources import ResourceConfig
from recsys.platform.settings import TRAINING, TrainingSettings, declared
from recsys.platform.shards import sharded_channels

log = logging.getLogger(__name__)

DEFAULT_PORT = declared(TRAINING, "RECSYS_COORDINATION_PORT").default
JOIN_TIMEOUT_S = 600.0  # instances of one job start within minutes of each other (image pulls, data downloads)
VERDICT_WAIT_S = 60.0  # a worker that reported a failure waits this long for the leader to end the job
_CHUNK = 1 << 20


def coordination_port() -> int:
    """``RECSYS_COORDINATION_PORT``; a bad value is a UserError naming it."""
    return TrainingSettings.from_env().coordination_port


@dataclass
class Peer:
    """A worker host as the leader sees it."""

    host: str
    address: str  # the IP its connection came from: where its services listen
    offer: dict[str, Any] = field(default_factory=dict)
    ready: bool = False  # its join (and shard) arrived completely


class HostServices(Protocol):
    """What an algorithm that trains across hosts runs on each of them (``recsys.training.main`` drives it)."""

    def offer(self) -> dict[str, Any]:
        """What this host brings (cores, memory): sent in its ``join``."""

    def start_leader(self) -> None:
        """On the leader, before the workers are awaited."""

    def start_worker(self, leader_address: str) -> None:
        """On a worker, once it has joined the leader."""

    def await_cluster(self, peers: dict[str, Peer], stop: StopController) -> dict[str, Any]:
        """On the leader, every peer joined: wait for their services; return ``FitContext.extra`` entries."""

    def failure(self) -> str | None:
        """Why a service this host runs is gone (None while all are up)."""

    def close(self) -> None:
        """Stop this host's services; safe to call at any time, more than once."""


def _safe_relative(path: str) -> PurePosixPath:
    rel = PurePosixPath(path)
    if rel.is_absolute() or not rel.parts or any(part in ("", ".", "..") for part in rel.parts):
        raise ValueError(f"unsafe shard path {path!r}")
    return rel


class LeaderBeacon:
    """Run on the leader: accepts workers, records their joins (and shards), tells each the outcome at ``finish``.

    A joined worker that reports a failure or whose connection closes before the job ended sets ``failure`` (the
    first one counts): ``wait_for_peers`` then raises it, and ``on_failure(reason)``, when set (a leader whose
    training needs the workers), is called once from a beacon thread."""

    def __init__(self, port: int | None = None, shard_dir: Path | None = None):
        self.port = coordination_port() if port is None else port
        self.shard_dir = shard_dir  # where workers' shard files land: <shard_dir>/<channel>/<host>/...
        self.peers: dict[str, Peer] = {}
        self.failure: str | None = None
        self.on_failure: Callable[[str], None] | None = None
        self._server = socket.create_server(("", self.port), reuse_port=False, backlog=64)
        self._server.settimeout(0.5)
        self._conns: list[socket.socket] = []
        self._outcome: bytes | None = None
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
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
                    continue
                self._conns.append(conn)
            threading.Thread(target=self._serve, args=(conn, addr[0]), name="beacon-peer", daemon=True).start()

    def _serve(self, conn: socket.socket, address: str) -> None:
        peer: Peer | None = None
        reader = conn.makefile("rb")
        try:
            for raw in reader:
                line = raw.decode(errors="replace").rstrip("\n")
                if line.startswith("join "):
                    info = json.loads(line[5:])
                    peer = Peer(str(info["host"]), address, dict(info.get("offer") or {}))
                    with self._changed:
                        self.peers[peer.host] = peer
                        self._changed.notify_all()
                    log.info("host %s (%s) joined: %s", peer.host, address, json.dumps(peer.offer))
                elif line.startswith("file ") and peer is not None:
                    self._receive_file(reader, peer, json.loads(line[5:]))
                elif line == "ready" and peer is not None:
                    with self._changed:
                        peer.ready = True
                        self._changed.notify_all()
                elif line.startswith("failed: ") and peer is not None:
                    self._fail(f"host {peer.host} failed: {line[8:]}")
        except (OSError, ValueError, KeyError) as exc:
            if peer is not None:
                self._fail(f"host {peer.host}: bad message from it ({exc})")
        finally:
            reader.close()
        if peer is not None:
            self._fail(f"host {peer.host} left the job before it ended (its training process exited or was killed)")

    def _receive_file(self, reader, peer: Peer, meta: dict) -> None:
        size = int(meta["size"])
        channel = _safe_relative(str(meta["channel"]))
        rel = _safe_relative(str(meta["path"]))
        if self.shard_dir is None:
            raise ValueError("this leader accepts no shard files")
        target = self.shard_dir / channel / peer.host / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        with target.open("wb") as out:
            left = size
            while left:
                chunk = reader.read(min(left, _CHUNK))
                if not chunk:
                    raise ValueError(f"shard file {rel} ended after {size - left} of {size} bytes")
                out.write(chunk)
                left -= len(chunk)

    def _fail(self, reason: str) -> None:
        with self._changed:
            if self._outcome is not None or self.failure is not None:
                return
            self.failure = reason
            self._changed.notify_all()
        log.error("%s", reason)
        if self.on_failure is not None:
            self.on_failure(reason)

    def wait_for_peers(self, hosts: list[str], stop: StopController, timeout: float = JOIN_TIMEOUT_S) -> dict:
        """Block until every host in ``hosts`` has joined (shards included); UserError naming those that did not."""
        deadline = time.time() + timeout
        with self._changed:
            while True:
                missing = [h for h in hosts if not (h in self.peers and self.peers[h].ready)]
                if not missing or self.failure:
                    break
                if time.time() > deadline:
                    raise UserError(
                        f"host(s) {', '.join(missing)} never joined the leader (port {self.port}) within "
                        f"{timeout:.0f} s: did their containers start, and can they reach this host?"
                    )
                self._changed.wait(0.5)
                if stop.requested:
                    break
        stop.check()
        if self.failure:
            raise UserError(self.failure)
        return {h: self.peers[h] for h in hosts}

    @staticmethod
    def _send(conn: socket.socket, message: bytes) -> None:
        try:
            conn.sendall(message)
        except OSError:
            pass
        finally:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
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


class LeaderLink:
    """Run on a worker: the connection to the leader's beacon."""

    def __init__(self, resources: ResourceConfig, port: int | None = None):
        self.resources = resources
        self.port = coordination_port() if port is None else port
        self.conn: socket.socket | None = None
        self.leader_address: str | None = None

    def connect(self, stop: StopController, timeout: float = JOIN_TIMEOUT_S) -> LeaderLink:
        leader = self.resources.leader
        deadline = time.time() + timeout
        log.info("host %s waits for leader %s:%d", self.resources.current_host, leader, self.port)
        while True:
            stop.check()
            try:
                address = socket.gethostbyname(leader)
                self.conn = socket.create_connection((address, self.port), timeout=5)
                self.leader_address = address
                return self
            except OSError as exc:
                if time.time() > deadline:
                    raise UserError(
                        f"host {self.resources.current_host} could not reach the leader {leader}:{self.port}: {exc}"
                    ) from None
                time.sleep(1.0)

    def join(self, offer: dict[str, Any] | None = None, paths: SageMakerPaths | None = None) -> None:
        """Say who we are and send this host's shard of every ``ShardedByS3Key`` channel."""
        assert self.conn is not None
        self.conn.settimeout(None)
        hello = {"host": self.resources.current_host, "offer": offer or {}}
        self.conn.sendall(f"join {json.dumps(hello)}\n".encode())
        sent = 0
        for channel in sharded_channels(self.resources) if paths is not None else []:
            root = paths.channel(channel)
            for path in sorted(p for p in root.rglob("*") if p.is_file()) if root.is_dir() else []:
                meta = {"channel": channel, "path": path.relative_to(root).as_posix(), "size": path.stat().st_size}
                self.conn.sendall(f"file {json.dumps(meta)}\n".encode())
                with path.open("rb") as f:
                    self.conn.sendfile(f)
                sent += meta["size"]
        self.conn.sendall(b"ready\n")
        if sent:
            log.info("sent %d bytes of sharded channel data to the leader", sent)

    def report_failure(self, reason: str) -> None:
        with contextlib.suppress(OSError):
            self.conn.sendall(f"failed: {reason}\n".encode()[:900])

    def wait(self, stop: StopController, watch: Callable[[], str | None] = lambda: None) -> None:
        """Block until the leader reports; raise UserError if it failed or went away. ``watch()`` returns why a
        service of this host died: that is reported to the leader, which ends the job."""
        assert self.conn is not None
        leader = self.resources.leader
        self.conn.settimeout(1.0)
        data, own_failure, reported_at = b"", None, 0.0
        with self.conn:
            while not data.endswith(b"\n"):
                stop.check()
                if own_failure is None:
                    own_failure = watch()
                    if own_failure:
                        log.error("%s: telling the leader", own_failure)
                        self.report_failure(own_failure)
                        reported_at = time.time()
                elif time.time() - reported_at > VERDICT_WAIT_S:
                    raise UserError(f"{own_failure} (the leader {leader} did not answer)")
                try:
                    chunk = self.conn.recv(1024)
                except TimeoutError:
                    continue
                except OSError:
                    break
                if not chunk:
                    break
                data += chunk
        text = data.decode(errors="replace").strip()
        if text != "ok":
            raise UserError(own_failure or f"the leader host {leader} {text or 'exited without reporting'}")
        log.info("leader %s finished; host %s done", leader, self.resources.current_host)


def wait_for_leader(
    resources: ResourceConfig, stop: StopController, port: int | None = None, connect_timeout: float = 600.0
) -> None:
    """Run on a worker that takes no part in training: join, block until the leader reports; raise UserError if it
    failed or never answered."""
    link = LeaderLink(resources, port).connect(stop, connect_timeout)
    link.join()
    link.wait(stop)


def interrupt_training(stop: StopController) -> None:
    """Stop the training in this process as SIGTERM would (a fit blocked inside Spark raises at once); only for the
    ``train`` process, whose StopController handles SIGTERM."""
    stop.request()
    with contextlib.suppress(OSError):
        os.kill(os.getpid(), 15)
