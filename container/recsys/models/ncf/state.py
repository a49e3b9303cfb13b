"""What a stage has produced (``StageResult``) and what a checkpoint holds (``TrainState``), in the file format
``torch.save`` writes (plain dicts, lists, tensors and numbers, so ``weights_only`` loading reads it)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

CHECKPOINT_FORMAT = 1


@dataclass
class StageResult:
    stage: str
    best_state: dict[str, torch.Tensor] | None
    best: dict[str, float] = field(default_factory=dict)
    history: list[dict[str, Any]] = field(default_factory=list)
    samples: int = 0
    train_seconds: float = 0.0
    epochs_run: int = 0


def cpu_state(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().to("cpu", copy=True) for k, v in module.state_dict().items()}


# Checkpoint keys that TrainState names; any other key is the leader's ``checkpoint_extra`` (refit: ``selection``).
_KEYS = frozenset(
    {"format", "phase", "stage", "stage_index", "epoch", "batch", "finished", "model", "optimizer", "scaler"}
    | {"result", "results", "bad_epochs", "loss_sum", "pretrained", "rng"}
)


@dataclass
class TrainState:
    """One checkpoint: where a fit stands and everything needed to continue it bit-exactly.

    ``epoch``/``batch``: saved mid-epoch (SIGTERM), ``batch`` is the next batch of ``epoch``; at the end of an epoch
    ``batch`` is None; ``finished`` when the stage had ended (last epoch or early stop). The optimizer step within
    the stage, which the learning-rate schedule follows, is derived from them and not stored. ``rng`` holds the
    sampler generator's state, its state at the start of ``epoch`` (mid-epoch only: the epoch's tensors are rebuilt
    from it), and the torch and CUDA global states.
    """

    phase: str
    stage: str
    stage_index: int
    epoch: int
    batch: int | None
    finished: bool
    model: dict[str, torch.Tensor]
    optimizer: dict[str, Any]
    scaler: dict[str, Any] | None
    result: StageResult  # this stage so far: best metrics and epoch, best state, history
    bad_epochs: int  # epochs since the best one
    loss_sum: float  # loss summed over the batches of ``epoch`` done so far (mid-epoch)
    rng: dict[str, Any]
    earlier: list[StageResult] = field(default_factory=list)  # the stages before, without their states
    pretrained: dict[str, dict[str, torch.Tensor]] = field(default_factory=dict)  # final states of earlier stages
    extra: dict[str, Any] = field(default_factory=dict)

    def resume_point(self, epochs: int) -> tuple[int, int]:
        """(epoch, batch) training continues at, for a stage of ``epochs`` epochs."""
        if self.finished:
            return epochs + 1, 0
        if self.batch is None:
            return self.epoch + 1, 0
        return self.epoch, self.batch

    def to_checkpoint(self) -> dict[str, Any]:
        return {
            "format": CHECKPOINT_FORMAT,
            "phase": self.phase,
            **self.extra,
            "stage": self.stage,
            "stage_index": self.stage_index,
            "epoch": self.epoch,
            "batch": self.batch,
            "finished": self.finished,
            "model": self.model,
            "optimizer": self.optimizer,
            "scaler": self.scaler,
            "result": asdict(self.result),
            "results": [{**asdict(r), "best_state": None} for r in self.earlier],
            "bad_epochs": self.bad_epochs,
            "loss_sum": self.loss_sum,
            "pretrained": self.pretrained,
            "rng": self.rng,
        }

    @classmethod
    def from_checkpoint(cls, payload: dict[str, Any]) -> TrainState:
        return cls(
            phase=payload.get("phase", "select"),
            stage=payload.get("stage"),
            stage_index=payload.get("stage_index", 0),
            epoch=payload["epoch"],
            batch=payload["batch"],
            finished=bool(payload.get("finished")),
            model=payload["model"],
            optimizer=payload["optimizer"],
            scaler=payload.get("scaler"),
            result=StageResult(**payload["result"]),
            bad_epochs=payload["bad_epochs"],
            loss_sum=payload["loss_sum"],
            rng=payload["rng"],
            earlier=[StageResult(**r) for r in payload.get("results", [])],
            pretrained=dict(payload.get("pretrained", {})),
            extra={k: v for k, v in payload.items() if k not in _KEYS},
        )


def load_checkpoint(path: Path) -> TrainState:
    payload = torch.load(path, map_location="cpu", weights_only=True)
    if payload.get("format") != CHECKPOINT_FORMAT:
        from recsys.platform.errors import UserError

        raise UserError(
            f"checkpoint {path.name} has format {payload.get('format')!r}; this image reads {CHECKPOINT_FORMAT}"
        )
    return TrainState.from_checkpoint(payload)
