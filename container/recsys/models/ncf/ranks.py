"""The process group of one NCF fit: rank 0 (the ``train`` process) and the ranks that train with it.

The group lives for the whole fit. Rank 0 hands each training run to the others as a task (``send_task``): the
``TrainConfig``, the model's size, the checkpoint to resume from, and the interactions (broadcast as tensors), so
every rank trains on exactly rank 0's data: the train set carved for selection, then all of ``train`` for the refit,
including shards gathered from other hosts. The ranks then train in lockstep (``Trainer``); a ``None`` task ends
them. Rank 0 alone evaluates, reports, checkpoints and writes the model.

Ranks 1.. are spawned processes: on this host one per further GPU (``RankGroup.on_this_host``, a file store), and on
the other hosts of a multi-host job one per GPU or one per host on CPU (``recsys.models.ncf.hosts``, the leader's
TCP store). Gloo on CPU, NCCL on GPUs.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import shutil
import socket
import tempfile
import time
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist

from recsys.models.ncf.config import DistInfo, Leader, TrainConfig, TrainInputs
from recsys.models.ncf.state import TrainState
from recsys.models.ncf.trainer import Trainer
from recsys.platform.errors import TrainingStopped
from recsys.platform.lifecycle import exit_now

log = logging.getLogger(__name__)

# Collectives wait this long: the other ranks wait in one while rank 0 evaluates an epoch (full ranking included).
GROUP_TIMEOUT = timedelta(hours=1)
STORE_PREFIX = "ncf/group"
# A collective that fails on rank 0 (a rank on another host died): how long to wait for that host's report to reach
# the leader (it stops this process, and the job fails with that host's reason).
PEER_REPORT_WAIT_S = 15.0


@dataclass(frozen=True)
class Rendezvous:
    """How a rank finds the group (picklable: it travels to spawned ranks). ``file``: a file store on this host;
    else the leader's TCP store at ``address:port``."""

    backend: str
    world_size: int
    file: str | None = None
    address: str | None = None
    port: int | None = None

    def store(self) -> dist.Store:
        if self.file is not None:
            return dist.FileStore(self.file, self.world_size)
        return dist.TCPStore(self.address, self.port, is_master=False, timeout=GROUP_TIMEOUT)


def join_group(rendezvous: Rendezvous, rank: int, store: dist.Store | None = None) -> None:
    store = dist.PrefixStore(STORE_PREFIX, store if store is not None else rendezvous.store())
    dist.init_process_group(
        rendezvous.backend, store=store, rank=rank, world_size=rendezvous.world_size, timeout=GROUP_TIMEOUT
    )


def _comm_device(device: torch.device) -> torch.device:
    return device if dist.get_backend() == "nccl" else torch.device("cpu")


def send_task(device: torch.device, cfg: TrainConfig | None, inputs: TrainInputs | None, resume) -> None:
    """Rank 0: one training run (or ``None``: the end) to every other rank."""
    comm = _comm_device(device)
    if cfg is None:
        dist.broadcast_object_list([None], src=0, device=comm)
        return
    header = {
        "cfg": cfg,
        "n_users": inputs.n_users,
        "n_items": inputs.n_items,
        "n": len(inputs.users),
        "dtypes": (inputs.users.dtype.str, inputs.items.dtype.str),
        "timestamps": inputs.timestamps is not None,
        "resume": resume.to_checkpoint() if resume is not None else None,
    }
    dist.broadcast_object_list([header], src=0, device=comm)
    pairs = np.stack([inputs.users.astype(np.int64), inputs.items.astype(np.int64)])
    dist.broadcast(torch.from_numpy(pairs).to(comm), src=0)
    if inputs.timestamps is not None:
        dist.broadcast(torch.from_numpy(np.ascontiguousarray(inputs.timestamps, np.float64)).to(comm), src=0)


def receive_task(device: torch.device) -> tuple[TrainConfig, TrainInputs, TrainState | None] | None:
    """Ranks 1..: the next training run from rank 0, None at the end."""
    comm = _comm_device(device)
    box: list = [None]
    dist.broadcast_object_list(box, src=0, device=comm)
    header = box[0]
    if header is None:
        return None
    pairs = torch.empty((2, header["n"]), dtype=torch.int64, device=comm)
    dist.broadcast(pairs, src=0)
    pairs = pairs.cpu().numpy()
    timestamps = None
    if header["timestamps"]:
        received = torch.empty(header["n"], dtype=torch.float64, device=comm)
        dist.broadcast(received, src=0)
        timestamps = received.cpu().numpy()
    users, items = (pairs[k].astype(np.dtype(t)) for k, t in enumerate(header["dtypes"]))
    inputs = TrainInputs(users, items, header["n_users"], header["n_items"], device, timestamps)
    resume = TrainState.from_checkpoint(header["resume"]) if header["resume"] is not None else None
    return header["cfg"], inputs, resume


def log_rank(rank: int, world_size: int, host: str, trainer: Trainer) -> None:
    """The line that shows a rank's share of the work (tests look for it on every host)."""
    cfg, device = trainer.cfg, trainer.device
    where = f"{device}, {torch.get_num_threads()} threads" if device.type == "cpu" else str(device)
    log.info(
        "rank %d/%d on host %s (%s): %d samples/epoch, batches of %d (%d per rank), phase %s",
        rank,
        world_size,
        host,
        where,
        trainer.samples_per_epoch,
        trainer.batch_size,
        -(-trainer.batch_size // world_size),
        cfg.phase,
    )


def prepare(device: torch.device, threads: int | None) -> None:
    if threads:
        torch.set_num_threads(threads)
        torch.set_flush_denormal(True)  # as rank 0 does on CPU (recsys.models.ncf.model)
    if device.type == "cuda":
        torch.cuda.set_device(device)


def serve(rendezvous: Rendezvous, rank: int, device: str, threads: int | None, host: str) -> None:
    """A rank other than 0 (a spawned process): join the group, train every task rank 0 sends, and end the process
    (exit code 0) at the end or when rank 0 stops the job."""
    from recsys.platform.logs import configure_logging

    configure_logging()
    local = torch.device(device)
    prepare(local, threads)
    join_group(rendezvous, rank)
    stopped = False
    try:
        while (task := receive_task(local)) is not None:
            cfg, inputs, resume = task
            trainer = Trainer(cfg, inputs, DistInfo(rank, rendezvous.world_size, rendezvous.backend))
            log_rank(rank, rendezvous.world_size, host, trainer)
            try:
                trainer.run(resume)
            except TrainingStopped:
                stopped = True
                break
        if not stopped:
            dist.barrier()  # rank 0's closing barrier (RankGroup.close): no rank tears down with work in flight
        log.info("rank %d on host %s: %s", rank, host, "stopped with rank 0" if stopped else "done")
    finally:
        with contextlib.suppress(Exception):
            dist.destroy_process_group()
    exit_now(0)  # no interpreter finalization: see exit_now


def spawn_ranks(rendezvous: Rendezvous, ranks: list[int], devices: list[str], threads: int | None, host: str):
    """Starts ``serve`` for each of ``ranks`` (spawn: CUDA-safe, no /dev/shm tensors)."""
    context = multiprocessing.get_context("spawn")
    procs = []
    for rank, device in zip(ranks, devices, strict=True):
        args = (rendezvous, rank, device, threads, host)
        procs.append(context.Process(target=serve, args=args, name=f"ncf-rank-{rank}", daemon=True))
    for proc in procs:
        proc.start()
    return procs


def device_of(device: torch.device, local_rank: int) -> torch.device:
    """A rank's device: its own GPU on this host, or the CPU."""
    return torch.device(f"cuda:{local_rank}" if device.type == "cuda" else "cpu")


class RankGroup:
    """Rank 0's side of the group: created at the start of a fit, ``train`` for each run, ``close`` at the end."""

    def __init__(self, rendezvous: Rendezvous, device: torch.device, local: list, host: str, cleanup=None):
        self.rendezvous, self.device, self.local, self.host = rendezvous, device, local, host
        self._cleanup = cleanup
        self.stop = None

    @property
    def world_size(self) -> int:
        return self.rendezvous.world_size

    @classmethod
    def on_this_host(cls, world_size: int, device: torch.device, threads: int | None) -> RankGroup:
        """One process per device of this host; a file store, so there is no port to pick."""
        backend = "nccl" if device.type == "cuda" else "gloo"
        directory = Path(tempfile.mkdtemp(prefix="recsys-ddp-"))
        rendezvous = Rendezvous(backend, world_size, file=str(directory / "store"))
        host = socket.gethostname()
        devices = [str(device_of(device, r)) for r in range(1, world_size)]
        local = spawn_ranks(rendezvous, list(range(1, world_size)), devices, threads, host)
        group = cls(rendezvous, device_of(device, 0), local, host, lambda: shutil.rmtree(directory, True))
        prepare(group.device, threads)
        join_group(rendezvous, 0)
        return group

    def train(self, cfg: TrainConfig, inputs: TrainInputs, leader: Leader, resume, on_net):
        """One training run on every rank; rank 0's (net, results)."""
        self.stop = leader.stop
        try:
            send_task(self.device, cfg, inputs, resume)
            trainer = Trainer(cfg, inputs, DistInfo(0, self.world_size, self.rendezvous.backend), leader, on_net)
            log_rank(0, self.world_size, self.host, trainer)
            return trainer.run(resume)
        except (TrainingStopped, RuntimeError) as exc:
            self._why_a_collective_failed(exc)
            raise

    def _why_a_collective_failed(self, exc: BaseException) -> None:
        """A collective fails on rank 0 when another rank died: name it when it is local; when it is on another
        host, wait for that host's report, which stops this process (the job then fails with the host's reason)."""
        if isinstance(exc, TrainingStopped):
            return
        failed = [p for p in self.local if p.join(timeout=2) is None and p.exitcode not in (None, 0)]
        if failed:
            codes = ", ".join(f"{p.name} exited with code {p.exitcode}" for p in failed)
            raise RuntimeError(f"distributed training: {codes}") from exc
        if self.rendezvous.file is None and self.stop is not None:
            deadline = time.monotonic() + PEER_REPORT_WAIT_S
            while time.monotonic() < deadline and not self.stop.requested:
                time.sleep(0.2)
            self.stop.check()

    def close(self, outcome: str) -> None:
        """The end of the fit: ``ok``, ``stopped`` (every rank left its task) or ``failed``. After a failure, ranks
        on other hosts are left waiting in a collective: they learn of it from the leader's verdict
        (``recsys.platform.cluster``), which then ends them, rather than from a broken group."""
        ok = outcome == "ok"
        try:
            if ok:
                send_task(self.device, None, None, None)
                with contextlib.suppress(RuntimeError):  # a rank that died is reported from its exit code below
                    dist.barrier()  # every rank has its last task's answer before anyone destroys the group
            if outcome != "failed" or self.rendezvous.file is not None:
                with contextlib.suppress(Exception):
                    dist.destroy_process_group()
        finally:
            for proc in self.local:
                if not ok and proc.is_alive():
                    proc.terminate()  # blocked in a collective rank 0 will never join
                proc.join(timeout=60)
            if self._cleanup is not None:
                self._cleanup()
        failed = [f"{p.name} exited with code {p.exitcode}" for p in self.local if p.exitcode != 0]
        if ok and failed:
            raise RuntimeError(f"distributed training: {', '.join(failed)}")
