"""What one NCF fit is configured with: hyperparameters (``TrainConfig``), the data and device it trains on
(``TrainInputs``), its place in a process group (``DistInfo``) and rank 0's duties (``Leader``); plus the small
policies the training loop applies (device, mixed precision, optimizer, learning-rate schedule, what "better" is)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from recsys.models.ncf.net import NCFNet

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
# With batch_size at its default, large data sets get larger batches (doubling up to MAX_AUTO_BATCH) as long as an
# epoch keeps at least LARGE_STEPS_PER_EPOCH steps: per-step costs (the sparse optimizer's row gathers, Python) are
# then shared by more samples, with the same validation HR (measured in benchmarks/scale.py: benchmarks/README.md).
MAX_AUTO_BATCH = 16384
LARGE_STEPS_PER_EPOCH = 512


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
    sparse_embeddings: str = "false"  # "auto" | "true" | "false" (``recsys.models.ncf.sparse``)

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
            sparse_embeddings=hp.sparse_embeddings,
        )

    def effective_batch_size(self, samples_per_epoch: int) -> int:
        """``batch_size`` as set; at its default, small data sets get smaller batches so that an epoch still has
        ``MIN_STEPS_PER_EPOCH`` optimizer steps (a 3,000-interaction data set would otherwise train in 4 steps per
        epoch), never below ``MIN_AUTO_BATCH``, and large ones larger: doubled while the epoch keeps at least
        ``LARGE_STEPS_PER_EPOCH`` steps, up to ``MAX_AUTO_BATCH``."""
        if not self.auto_batch:
            return self.batch_size
        batch = max(1, min(self.batch_size, max(MIN_AUTO_BATCH, samples_per_epoch // MIN_STEPS_PER_EPOCH)))
        while batch * 2 <= MAX_AUTO_BATCH and samples_per_epoch // (batch * 2) >= LARGE_STEPS_PER_EPOCH:
            batch *= 2
        return batch

    def stages(self) -> list[str]:
        return ["gmf", "mlp", "neumf"] if self.pretrain else [self.model_type]

    def epochs_of(self, stage: str) -> int:
        return self.stage_epochs[stage] if self.stage_epochs is not None else self.epochs

    def checkpoint_step(self, stage_index: int, epoch: int) -> int:
        """Checkpoint numbering: every selection epoch of every stage, then every refit epoch, in order."""
        offset = len(self.stages()) if self.phase == "refit" else 0
        return (offset + stage_index) * self.epochs + epoch


@dataclass
class TrainInputs:
    """The interactions one fit trains on (parallel arrays of indices) and the device this process trains on."""

    users: np.ndarray
    items: np.ndarray
    n_users: int
    n_items: int
    device: torch.device
    timestamps: np.ndarray | None = None

    @classmethod
    def of(cls, data: Any, n_users: int, n_items: int, device: torch.device) -> TrainInputs:
        """From a data role (anything with ``users``, ``items`` and ``timestamps``)."""
        return cls(data.users, data.items, n_users, n_items, device, data.timestamps)


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


def make_optimizer(name: str, params, lr: float, weight_decay: float, device: torch.device, sparse: bool = False):
    """``sparse``: the net's embedding tables give sparse gradients; Adam/AdamW then update their rows lazily."""
    if sparse:
        from recsys.models.ncf.sparse import SPARSE_OPTIMIZERS, RowSparseAdam

        if name not in SPARSE_OPTIMIZERS:
            raise ValueError(f"sparse embeddings need one of {SPARSE_OPTIMIZERS}, not {name!r}")
        return RowSparseAdam(params, lr=lr, weight_decay=weight_decay, decoupled=name == "adamw")
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


def choose_sparse(cfg: TrainConfig, net: NCFNet, batch_size: int, backend: str | None) -> bool:
    """Decides ``cfg.sparse_embeddings`` for ``net`` and switches its tables accordingly (before DDP wraps it)."""
    from recsys.models.ncf.sparse import embedding_rows, set_sparse, use_sparse

    sparse = use_sparse(cfg.sparse_embeddings, embedding_rows(net), batch_size, cfg.optimizer, backend)
    set_sparse(net, sparse)
    return sparse


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
