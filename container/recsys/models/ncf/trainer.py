"""The NCF training loop: on-device sampling and batching, evaluation per epoch, best-epoch keeping, early stopping,
checkpoint/resume (exact, even mid-epoch), SIGTERM, mixed precision on GPUs and DistributedDataParallel.

Batches: each epoch the sampler builds the shuffled (user, item, label) tensors of the whole epoch on the device;
a batch is a slice (a view, no copy). One step = forward, BCE-with-logits, backward, optimizer step: a handful of
kernels and no host round trip (the loss is summed on the device and read once per epoch).

Distributed: one process per device. Rank 0 is always the calling process: it evaluates, reports, checkpoints and
owns SIGTERM; the other ranks (spawned, ``spawn`` start method, no /dev/shm tensors) train only. All ranks build the
same epoch tensors from the same seed and each takes its share of every global batch, so ``batch_size`` means the
same thing (samples per optimizer step) for any world size; DDP averages the gradients. Rank 0 broadcasts the
"stop now" flag every step and the "continue" decision every epoch. The process group arguments (backend, init
method, rank, world size) are explicit, so a multi-host launcher can call ``train_worker`` directly.
"""

from __future__ import annotations

import contextlib
import logging
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from recsys.models.ncf.net import NCFNet
from recsys.models.ncf.sampler import NegativeSampler, recency_weights
from recsys.platform.errors import TrainingStopped

log = logging.getLogger(__name__)

CHECKPOINT_FORMAT = 1
# Learning rate: linear decay from lr to LR_FLOOR × lr over the configured epochs of a stage (measured in
# benchmarks/ncf_movielens.py: see benchmarks/README.md).
LR_DECAY = True
LR_FLOOR = 0.0
# NeuMF after pretraining: the paper switches to plain SGD because Adam's moment estimates are not carried over;
# we keep the configured optimizer with a smaller learning rate (measured in benchmarks/ncf_movielens.py).
PRETRAINED_LR_SCALE = 0.1
# With batch_size at its default, at least this many steps per epoch (batches no smaller than MIN_AUTO_BATCH).
MIN_STEPS_PER_EPOCH = 64
MIN_AUTO_BATCH = 256


@dataclass
class TrainConfig:
    model_type: str
    factor_num: int
    num_layers: int
    dropout: float
    epochs: int
    lr: float
    batch_size: int
    num_negatives: int
    weight_decay: float
    optimizer: str
    patience: int
    seed: int
    pretrain: bool = False
    recency_weight: float = 0.0
    recency_power: float = 1.0
    auto_batch: bool = False  # batch_size left at its default: may shrink for small data (see MIN_STEPS_PER_EPOCH)
    # "select": evaluate every epoch on validation, keep the best, stop early. "refit": train each stage for exactly
    # ``stage_epochs[stage]`` epochs (the selected ones), no evaluation, keep the last state. The learning-rate
    # schedule spans ``epochs`` in both, so a refit epoch sees the learning rate its selected twin saw.
    phase: str = "select"
    stage_epochs: dict[str, int] | None = None

    @classmethod
    def from_hp(cls, hp: Any) -> TrainConfig:
        return cls(
            model_type=hp.model_type,
            factor_num=hp.factor_num,
            num_layers=hp.num_layers,
            dropout=hp.dropout,
            epochs=hp.epochs,
            lr=hp.lr,
            batch_size=hp.batch_size,
            num_negatives=hp.num_negatives,
            weight_decay=hp.weight_decay,
            optimizer=hp.optimizer,
            patience=hp.early_stopping_patience,
            seed=hp.seed,
            pretrain=bool(hp.pretrain) and hp.model_type == "neumf",
            recency_weight=hp.recency_weight,
            recency_power=hp.recency_power,
            auto_batch="batch_size" not in getattr(hp, "explicit", ()),
        )

    def effective_batch_size(self, samples_per_epoch: int) -> int:
        """``batch_size`` as set; at its default, small data sets get smaller batches so that an epoch still has
        ``MIN_STEPS_PER_EPOCH`` optimizer steps (a 3,000-interaction data set would otherwise train in 4 steps per
        epoch). Never below ``MIN_AUTO_BATCH``."""
        if not self.auto_batch:
            return self.batch_size
        return max(1, min(self.batch_size, max(MIN_AUTO_BATCH, samples_per_epoch // MIN_STEPS_PER_EPOCH)))

    def stages(self) -> list[str]:
        return ["gmf", "mlp", "neumf"] if self.pretrain else [self.model_type]

    def epochs_of(self, stage: str) -> int:
        return self.stage_epochs[stage] if self.stage_epochs is not None else self.epochs

    def checkpoint_step(self, stage_index: int, epoch: int) -> int:
        """Checkpoint numbering: every selection epoch of every stage, then every refit epoch, in order."""
        offset = len(self.stages()) if self.phase == "refit" else 0
        return (offset + stage_index) * self.epochs + epoch


@dataclass
class DistInfo:
    """Where this process sits in the process group (world_size 1: no group at all)."""

    rank: int = 0
    world_size: int = 1
    backend: str | None = None  # nccl on GPUs, gloo on CPU

    @property
    def active(self) -> bool:
        return self.world_size > 1


@dataclass
class Leader:
    """What only rank 0 does: evaluate, report, checkpoint, notice SIGTERM, and show the recommender each net."""

    evaluate: Callable[[NCFNet], dict[str, float]] | None  # None in the refit phase
    report: Callable[..., None]
    stop: Any  # StopController
    checkpoints: Any = None  # Checkpointer | None
    checkpoint_extra: dict[str, Any] = field(default_factory=dict)  # saved with every checkpoint (refit: selection)


@dataclass
class StageResult:
    stage: str
    best_state: dict[str, torch.Tensor] | None
    best: dict[str, float] = field(default_factory=dict)
    history: list[dict[str, Any]] = field(default_factory=list)
    samples: int = 0
    train_seconds: float = 0.0
    epochs_run: int = 0


def resolve_device(requested: str | None) -> torch.device:
    """``auto``/None → CUDA when available, else CPU. ``cuda`` without a GPU is the caller's error."""
    from recsys.platform.errors import UserError

    if requested in (None, "", "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(requested)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UserError("hyperparameter device=cuda, but no CUDA GPU is visible; use device=auto or cpu")
    return device


def amp_dtype(device: torch.device) -> torch.dtype | None:
    """Mixed precision on GPUs: bf16 where supported (no loss scaling needed), else fp16 with a GradScaler."""
    if device.type != "cuda":
        return None
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


def make_optimizer(name: str, params, lr: float, weight_decay: float, device: torch.device):
    fused = {"fused": True} if device.type == "cuda" else {}
    if name == "adam":
        return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay, **fused)
    if name == "adamw":
        return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay, **fused)
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=0.9, weight_decay=weight_decay)
    if name == "adagrad":
        return torch.optim.Adagrad(params, lr=lr, weight_decay=weight_decay)
    raise ValueError(f"unknown optimizer {name!r}")


def lr_factor(step: int, total_steps: int) -> float:
    """Learning-rate multiplier at optimizer step ``step`` of ``total_steps`` (all configured epochs of a stage):
    linear decay from 1 to ``LR_FLOOR`` when ``LR_DECAY``, else constant."""
    if not LR_DECAY or total_steps <= 0:
        return 1.0
    return max(LR_FLOOR, 1.0 - (1.0 - LR_FLOOR) * step / total_steps)


def better(metrics: dict[str, float], best: dict[str, float]) -> bool:
    """Higher HR wins; equal HR → higher NDCG."""
    if not best:
        return True
    return (metrics["HR"], metrics["NDCG"]) > (best["HR"], best["NDCG"])


def cpu_state(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().to("cpu", copy=True) for k, v in module.state_dict().items()}


class Trainer:
    """Trains the stages of one fit (one stage, or GMF → MLP → NeuMF with pretraining) on one device / rank."""

    def __init__(
        self,
        cfg: TrainConfig,
        users: np.ndarray,
        items: np.ndarray,
        n_users: int,
        n_items: int,
        device: torch.device,
        dist: DistInfo | None = None,
        leader: Leader | None = None,
        on_net: Callable[[NCFNet], None] | None = None,
        timestamps: np.ndarray | None = None,
    ) -> None:
        self.cfg, self.n_users, self.n_items, self.device = cfg, n_users, n_items, device
        self.dist = dist or DistInfo()
        self.leader = leader if self.dist.rank == 0 else None
        self.on_net = on_net or (lambda net: None)
        row_weights = recency_weights(users, timestamps, cfg.recency_weight, cfg.recency_power)
        self.sampler = NegativeSampler(users, items, n_users, n_items, device, row_weights)
        self.neg_users = self.sampler.negative_users(cfg.num_negatives)
        self.amp = amp_dtype(device)
        self.samples_per_epoch = self.sampler.n_positives + len(self.neg_users)
        self.batch_size = cfg.effective_batch_size(self.samples_per_epoch)
        self._flag = torch.zeros(1, device=device) if self.dist.active else None

    # -- distributed helpers (no-ops on one device)
    def _agree(self, value: bool) -> bool:
        """Rank 0's ``value`` on every rank."""
        if not self.dist.active:
            return value
        self._flag.fill_(1.0 if value else 0.0)
        torch.distributed.broadcast(self._flag, src=0)
        return bool(self._flag.item())

    def _stop_requested(self) -> bool:
        return self.leader is not None and self.leader.stop.requested

    def new_net(self, model_type: str) -> NCFNet:
        cfg = self.cfg
        return NCFNet(self.n_users, self.n_items, cfg.factor_num, cfg.num_layers, cfg.dropout, model_type)

    # -- the whole fit
    def run(self, resume: dict[str, Any] | None = None) -> tuple[NCFNet, list[StageResult]]:
        stages = self.cfg.stages()
        done: dict[str, dict[str, torch.Tensor]] = dict(resume.get("pretrained", {})) if resume else {}
        results: list[StageResult] = [StageResult(**r) for r in resume.get("results", [])] if resume else []
        net = None
        for index, stage in enumerate(stages):
            if stage in done and stage != stages[-1]:
                continue
            torch.manual_seed(self.cfg.seed + index)  # same initial weights on every rank, and for every rerun
            net = self.new_net(stage).to(self.device)
            lr = self.cfg.lr
            if stage == "neumf" and self.cfg.pretrain:
                gmf, mlp = self.new_net("gmf"), self.new_net("mlp")
                gmf.load_state_dict(done["gmf"])
                mlp.load_state_dict(done["mlp"])
                net.load_pretrained(gmf.to(self.device), mlp.to(self.device))
                lr = self.cfg.lr * PRETRAINED_LR_SCALE
            stage_resume = resume if resume and resume.get("stage") == stage else None
            result = self.train_stage(net, stage, index, lr, done, results, stage_resume)
            results.append(result)
            if result.best_state is not None:
                net.load_state_dict(result.best_state)
            done[stage] = cpu_state(net)
            resume = None
        self.on_net(net)
        return net, results

    # -- one stage
    def train_stage(
        self,
        net: NCFNet,
        stage: str,
        stage_index: int,
        lr: float,
        done: dict[str, dict[str, torch.Tensor]],
        earlier: list[StageResult],
        resume: dict[str, Any] | None,
    ) -> StageResult:
        cfg, device, batch_size = self.cfg, self.device, self.batch_size
        model: torch.nn.Module = net
        if self.dist.active:
            ids = [device.index] if device.type == "cuda" else None
            model = torch.nn.parallel.DistributedDataParallel(net, device_ids=ids)
        optimizer = make_optimizer(cfg.optimizer, net.parameters(), lr, cfg.weight_decay, device)
        scaler = torch.amp.GradScaler("cuda") if self.amp is torch.float16 else None
        generator = torch.Generator(device=device)
        generator.manual_seed(cfg.seed * 1000 + stage_index)
        steps_per_epoch = math.ceil(self.samples_per_epoch / batch_size)
        total_steps = steps_per_epoch * cfg.epochs
        epochs = cfg.epochs_of(stage)
        evaluate = self.leader.evaluate if self.leader is not None else None
        result = StageResult(stage=stage, best_state=None)
        bad_epochs, first_epoch, start_batch = 0, 1, 0
        loss_sum = torch.zeros((), device=device, dtype=torch.float64)
        restore_rng = None
        if resume is not None:
            net.load_state_dict(resume["model"])
            optimizer.load_state_dict(resume["optimizer"])
            if scaler is not None and resume.get("scaler"):
                scaler.load_state_dict(resume["scaler"])
            saved = resume["result"]
            result = StageResult(**saved)
            bad_epochs = resume["bad_epochs"]
            if resume.get("finished"):  # the stage had ended (last epoch or early stop)
                first_epoch = epochs + 1
            elif resume["batch"] is None:  # saved at the end of an epoch
                first_epoch = resume["epoch"] + 1
                generator.set_state(resume["rng"]["sampler"])
            else:  # saved mid-epoch (SIGTERM): rebuild that epoch's tensors and continue at the saved batch
                first_epoch, start_batch = resume["epoch"], resume["batch"]
                restore_rng = resume["rng"]["epoch_start"]
                loss_sum.fill_(resume["loss_sum"])
            torch.set_rng_state(resume["rng"]["torch"])
            if device.type == "cuda" and resume["rng"].get("cuda") is not None:
                torch.cuda.set_rng_state(resume["rng"]["cuda"], device)
            log.info("%s: resuming at epoch %d, batch %d", stage, first_epoch, start_batch)
        self.on_net(net)

        def checkpoint(epoch: int, batch: int | None, epoch_start: torch.Tensor | None, finished: bool = False) -> None:
            if self.leader is None or self.leader.checkpoints is None:
                return
            payload = {
                "format": CHECKPOINT_FORMAT,
                "phase": cfg.phase,
                **self.leader.checkpoint_extra,
                "stage": stage,
                "stage_index": stage_index,
                "epoch": epoch,
                "batch": batch,
                "finished": finished,
                "model": cpu_state(net),
                "optimizer": optimizer.state_dict(),
                "scaler": scaler.state_dict() if scaler is not None else None,
                "result": asdict(result),
                "results": [{**asdict(r), "best_state": None} for r in earlier],
                "bad_epochs": bad_epochs,
                "loss_sum": float(loss_sum),
                "pretrained": done,
                "rng": {
                    "sampler": generator.get_state(),
                    "epoch_start": epoch_start,
                    "torch": torch.get_rng_state(),
                    "cuda": torch.cuda.get_rng_state(device) if device.type == "cuda" else None,
                },
            }
            step = cfg.checkpoint_step(stage_index, epoch)
            info = {"phase": cfg.phase, "stage": stage, "epoch": epoch, "batch": batch}
            self.leader.checkpoints.save(step, lambda path: torch.save(payload, path), info)

        epoch = first_epoch
        for epoch in range(first_epoch, epochs + 1):
            started = time.perf_counter()
            if restore_rng is not None:  # resuming mid-epoch: replay this epoch's draws
                generator.set_state(restore_rng)
                restore_rng = None
            epoch_start_rng = generator.get_state()
            users, items, labels, weights = self.sampler.epoch(self.neg_users, generator)
            n = len(users)
            share = math.ceil(batch_size / self.dist.world_size)
            net.train()
            step = (epoch - 1) * steps_per_epoch + start_batch
            for batch in range(start_batch, steps_per_epoch):
                if self._agree(self._stop_requested()):
                    if self.leader is not None:
                        checkpoint(epoch, batch, epoch_start_rng)
                        self.leader.stop.check()
                    raise TrainingStopped("stopped by rank 0")
                first = batch * batch_size
                batch_rows = min(batch_size, n - first)  # rows of this global batch, all ranks together
                lo = min(first + self.dist.rank * share, first + batch_rows)
                hi = min(lo + share, first + batch_rows)
                u, i, y = users[lo:hi], items[lo:hi], labels[lo:hi]
                w = weights[lo:hi] if weights is not None else None
                factor = lr_factor(step, total_steps)
                if factor != 1.0:
                    for group in optimizer.param_groups:
                        group["lr"] = lr * factor
                with torch.autocast(device.type, dtype=self.amp) if self.amp else contextlib.nullcontext():
                    # Sum over this rank's rows / rows of the global batch × world size: DDP's gradient average
                    # is then exactly the gradient of the global batch mean (and a rank with no rows adds 0).
                    summed = F.binary_cross_entropy_with_logits(model(u, i).float(), y, weight=w, reduction="sum")
                loss = summed * (self.dist.world_size / batch_rows)
                optimizer.zero_grad(set_to_none=True)
                if scaler is not None:
                    scaler.scale(loss).backward()
                    scaler.step(optimizer)
                    scaler.update()
                else:
                    loss.backward()
                    optimizer.step()
                loss_sum += summed.detach().double()
                step += 1
            start_batch = 0
            if self.dist.active:
                torch.distributed.all_reduce(loss_sum)
            mean_loss = float(loss_sum) / (float(weights.sum()) if weights is not None else n)  # weighted mean
            loss_sum.zero_()
            seconds = time.perf_counter() - started
            result.train_seconds += seconds
            result.samples += n
            result.epochs_run += 1
            keep_going = epoch < epochs
            if self.leader is not None and evaluate is None:  # refit: no validation to look at
                result.best = {"Loss": mean_loss, "epoch": epoch}
                result.history.append(
                    {"stage": stage, "phase": cfg.phase, "epoch": epoch, "Loss": mean_loss, "batch_size": batch_size}
                )
                log.info(
                    "refit %s epoch %d/%d: loss %.4f, %.0f samples/s", stage, epoch, epochs, mean_loss, n / seconds
                )
                checkpoint(epoch, None, None, finished=not keep_going)
            elif self.leader is not None:
                eval_started = time.perf_counter()
                net.eval()
                metrics = evaluate(net)
                eval_seconds = time.perf_counter() - eval_started
                row = {
                    "stage": stage,
                    "epoch": epoch,
                    "Loss": mean_loss,
                    "HR": metrics["HR"],
                    "NDCG": metrics["NDCG"],
                    "train_seconds": round(result.train_seconds, 3),
                    "eval_seconds": round(eval_seconds, 3),
                    "samples_per_second": round(n / seconds, 1),
                    "batch_size": batch_size,
                }
                result.history.append(row)
                prefix = {"epoch": epoch} if not cfg.pretrain else {"stage": stage, "epoch": epoch}
                self.leader.report({"Loss": mean_loss, "HR": metrics["HR"], "NDCG": metrics["NDCG"]}, **prefix)
                if better(metrics, result.best):
                    result.best = {"HR": metrics["HR"], "NDCG": metrics["NDCG"], "Loss": mean_loss, "epoch": epoch}
                    result.best_state = cpu_state(net)
                    bad_epochs = 0
                else:
                    bad_epochs += 1
                    if cfg.patience and bad_epochs >= cfg.patience:
                        log.info("%s: no better HR for %d epochs, stopping after epoch %d", stage, bad_epochs, epoch)
                        keep_going = False
                checkpoint(epoch, None, None, finished=not keep_going)
            if not self._agree(keep_going):
                break
        return result


def train_worker(
    rank: int,
    world_size: int,
    backend: str,
    init_method: str,
    device: str,
    cfg: TrainConfig,
    users: np.ndarray,
    items: np.ndarray,
    n_users: int,
    n_items: int,
    resume_path: str | None,
    threads: int | None = None,
    timestamps: np.ndarray | None = None,
) -> None:
    """A non-leader rank: joins the process group, trains in lockstep with rank 0, returns when rank 0 stops."""
    if threads:
        torch.set_num_threads(threads)
    dev = torch.device(device)
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
    torch.distributed.init_process_group(backend, init_method=init_method, rank=rank, world_size=world_size)
    try:
        resume = load_checkpoint(Path(resume_path)) if resume_path else None
        trainer = Trainer(
            cfg, users, items, n_users, n_items, dev, DistInfo(rank, world_size, backend), timestamps=timestamps
        )
        with contextlib.suppress(TrainingStopped):
            trainer.run(resume)
    finally:
        torch.distributed.destroy_process_group()


def load_checkpoint(path: Path) -> dict[str, Any]:
    payload = torch.load(path, map_location="cpu", weights_only=True)
    if payload.get("format") != CHECKPOINT_FORMAT:
        from recsys.platform.errors import UserError

        raise UserError(
            f"checkpoint {path.name} has format {payload.get('format')!r}; this image reads {CHECKPOINT_FORMAT}"
        )
    return payload


__all__ = [
    "DistInfo",
    "Leader",
    "StageResult",
    "TrainConfig",
    "Trainer",
    "amp_dtype",
    "load_checkpoint",
    "resolve_device",
    "train_worker",
]
