"""NCF across the hosts of one training job on torch.distributed (``HostServices`` in recsys.platform).

The leader's ``train`` process is rank 0 and hosts the group's TCP store on ``RECSYS_DISTRIBUTED_PORT`` (29500).
When its fit starts (``cluster_group``) it decides the layout from every host's offer and the fit's device, one rank
per GPU (NCCL) or, on CPU, one rank per host taking all its cores (gloo), ranks numbered host by host in the
leader's order, and writes it to the store. Each other host's agent (``start_worker``) reads the layout there and
spawns its ranks, which serve rank 0's tasks (``recsys.models.ncf.ranks``). A rank that dies is this host's
``failure``: the leader is told and the job fails, naming the host.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.distributed as dist

from recsys.models.ncf.ranks import GROUP_TIMEOUT, RankGroup, Rendezvous, device_of, join_group, prepare, spawn_ranks
from recsys.platform.cluster import Peer
from recsys.platform.errors import UserError
from recsys.platform.lifecycle import StopController
from recsys.platform.network import host_address, interface_address
from recsys.platform.resources import ResourceConfig, usable_cpus
from recsys.platform.settings import TrainingSettings

log = logging.getLogger(__name__)

CLUSTER_KEY = "ncf_cluster"  # FitContext.extra key: the hosts of a multi-host job (``TorchCluster``)
LAYOUT_KEY = "ncf/layout"


@dataclass
class TorchCluster:
    """What rank 0 needs to form the group: the store it serves and every host's offer (leader first)."""

    store: Any  # torch.distributed.TCPStore, the master side
    address: str
    port: int
    offers: dict[str, dict[str, Any]] = field(default_factory=dict)  # host → {"address", "cpus", "gpus"}


def layout(offers: dict[str, dict[str, Any]], device: torch.device) -> dict[str, Any]:
    """Ranks per host, numbered host by host in ``offers``' order: one per GPU, or one per host on CPU."""
    hosts, first = {}, 0
    for host, offer in offers.items():
        count = int(offer.get("gpus") or 0) if device.type == "cuda" else 1
        if count < 1:
            raise UserError(f"device {device} was asked for, but host {host} has no GPU")
        hosts[host] = {"first": first, "count": count, "cpus": int(offer.get("cpus") or 1)}
        first += count
    return {"world_size": first, "backend": "nccl" if device.type == "cuda" else "gloo", "hosts": hosts}


def cluster_group(cluster: TorchCluster, device: torch.device, threads: int | None, host: str) -> RankGroup:
    """Rank 0's group over every host (its own further GPUs included): the layout goes to the store, the other
    hosts' agents start their ranks, and rank 0 joins."""
    plan = layout(cluster.offers, device)
    rendezvous = Rendezvous(plan["backend"], plan["world_size"], address=cluster.address, port=cluster.port)
    mine = plan["hosts"][host]
    local_threads = threads if device.type == "cpu" else None
    devices = [str(device_of(device, r)) for r in range(1, mine["count"])]
    local = spawn_ranks(rendezvous, list(range(1, mine["count"])), devices, local_threads, host)
    cluster.store.set(LAYOUT_KEY, json.dumps(plan))
    log.info("NCF on %d hosts, %d ranks (%s): %s", len(plan["hosts"]), plan["world_size"], plan["backend"], plan)
    group = RankGroup(rendezvous, device_of(device, 0), local, host)
    prepare(group.device, local_threads)
    join_group(rendezvous, 0, cluster.store)
    return group


def _bind_interface(resources: ResourceConfig) -> None:
    """Gloo and NCCL pick their interface from the host name unless told; the job's interface is the one to use."""
    name = resources.network_interface
    if name and interface_address(name):
        os.environ.setdefault("GLOO_SOCKET_IFNAME", name)
        os.environ.setdefault("NCCL_SOCKET_IFNAME", name)


class TorchDistributed:
    """``HostServices`` for NCF: the store on the leader, the ranks on every other host."""

    def __init__(self, resources: ResourceConfig, stop: StopController):
        self.resources, self.stop = resources, stop
        self.address = host_address(resources, stop)
        self.port = TrainingSettings.from_env().distributed_port
        self.store: dist.TCPStore | None = None
        self.ranks: list = []
        self.error: str | None = None
        self._closed = threading.Event()
        _bind_interface(resources)

    def offer(self) -> dict[str, Any]:
        return {"address": self.address, "cpus": usable_cpus(), "gpus": torch.cuda.device_count()}

    def start_leader(self) -> None:
        try:
            self.store = dist.TCPStore(
                self.address, self.port, is_master=True, wait_for_workers=False, timeout=GROUP_TIMEOUT
            )
        except (RuntimeError, OSError) as exc:
            raise UserError(f"could not listen on port {self.port} (RECSYS_DISTRIBUTED_PORT): {exc}") from None

    def start_worker(self, leader_address: str) -> None:
        threading.Thread(target=self._agent, args=(leader_address,), name="ncf-agent", daemon=True).start()

    def _agent(self, leader_address: str) -> None:
        """Waits for rank 0's layout, then starts this host's ranks."""
        host = self.resources.current_host
        try:
            store = dist.TCPStore(leader_address, self.port, is_master=False, timeout=GROUP_TIMEOUT)
            plan = json.loads(store.get(LAYOUT_KEY))
            if self._closed.is_set():
                return
            mine = plan["hosts"][host]
            backend = plan["backend"]
            rendezvous = Rendezvous(backend, plan["world_size"], address=leader_address, port=self.port)
            ranks = list(range(mine["first"], mine["first"] + mine["count"]))
            devices = ["cpu"] * len(ranks) if backend == "gloo" else [f"cuda:{i}" for i in range(len(ranks))]
            threads = mine["cpus"] if backend == "gloo" else None
            log.info("host %s runs NCF rank(s) %s of %d (%s)", host, ranks, plan["world_size"], backend)
            self.ranks = spawn_ranks(rendezvous, ranks, devices, threads, host)
        except Exception as exc:  # reported through failure(): the leader ends the job
            if not self._closed.is_set():
                self.error = f"NCF on host {host} could not join rank 0 at {leader_address}:{self.port}: {exc}"

    def await_cluster(self, peers: dict[str, Peer], stop: StopController) -> dict[str, Any]:
        offers = {self.resources.current_host: self.offer()}
        for name, peer in peers.items():
            offers[name] = {**peer.offer, "address": peer.offer.get("address") or peer.address}
        return {CLUSTER_KEY: TorchCluster(self.store, self.address, self.port, offers)}

    def failure(self) -> str | None:
        if self.error:
            return self.error
        for proc in self.ranks:
            code = proc.exitcode
            if code is not None and code != 0:
                how = f"was killed by signal {-code}" if code < 0 else f"exited with code {code}"
                return f"NCF {proc.name.replace('ncf-rank-', 'rank ')} on host {self.resources.current_host} {how}"
        return None

    def close(self) -> None:
        self._closed.set()
        for proc in self.ranks:
            if proc.is_alive():
                proc.terminate()
        for proc in self.ranks:
            proc.join(timeout=30)
        self.ranks = []
        self.store = None
