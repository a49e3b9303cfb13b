"""The NCF training loop: on-device sampling and batching, evaluation per epoch, best-epoch keeping, early stopping,
checkpoint/resume (exact, even mid-epoch), SIGTERM, mixed precision on GPUs and DistributedDataParallel.

Batches: each epoch the sampler builds the shuffled (user, item, label) tensors of the whole epoch on the device;
a batch is a slice (a view, no copy). One step = forward, BCE-with-logits, backward, optimizer step: a handful of
kernels and no host round trip (the loss is summed on the device and read once per epoch).

Distributed: one process per device. Rank 0 is always the calling process: it evaluates, reports, checkpoints and
owns SIGTERM; the other ranks (spawned, ``spawn`` start method, no /dev/shm tensors) train only. All ranks build the
same epoch tensors from the same seed and each takes its share of every global batch, so ``batch_size`` means the
same thing (samples per optimizer step) for any world size; DDP averages the gradients. No step waits on the host:
rank 0 broadcasts the "continue" decision once per epoch, and "stop now" (SIGTERM) only at checks about
``STOP_CHECK_S`` apart, each check telling the ranks how many steps to go before the next one; one process checks its
stop flag (a Python bool) every step. The process group (one host or several) is ``recsys.models.ncf.ranks``'s.

Modules: ``config`` (what a fit is configured with, and the optimizer and learning-rate policies), ``state``
(``TrainState``: what a checkpoint holds), ``stage`` (``StageLoop``: one stage's epochs and steps), ``ranks`` (the
process group: rank 0 hands each fit to the others), ``hosts`` (the ranks of a multi-host job) and this one
(``Trainer``: the stages of a fit in order).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

import torch

from recsys.models.ncf.config import (
    PRETRAINED_LR_SCALE,
    DistInfo,
    Leader,
    TrainConfig,
    TrainInputs,
    amp_dtype,
    resolve_device,
)
from recsys.models.ncf.net import NCFNet
from recsys.models.ncf.sampler import NegativeSampler, recency_weights
from recsys.models.ncf.stage import StageLoop
from recsys.models.ncf.state import StageResult, TrainState, cpu_state, load_checkpoint

log = logging.getLogger(__name__)

# Several ranks: SIGTERM is agreed on about this often (a broadcast and a host read), so a stop still checkpoints
# and exits within seconds while steps in between never wait on the host.
STOP_CHECK_S = 1.0
MAX_STOP_CHECK_STEPS = 100_000


class Trainer:
    """Trains the stages of one fit (one stage, or GMF → MLP → NeuMF with pretraining) on one device / rank."""

    def __init__(
        self,
        cfg: TrainConfig,
        inputs: TrainInputs,
        dist: DistInfo | None = None,
        leader: Leader | None = None,
        on_net: Callable[[NCFNet], None] | None = None,
    ) -> None:
        self.cfg, self.n_users, self.n_items, self.device = cfg, inputs.n_users, inputs.n_items, inputs.device
        self.dist = dist or DistInfo()
        self.leader = leader if self.dist.rank == 0 else None
        self.on_net = on_net or (lambda net: None)
        row_weights = recency_weights(inputs.users, inputs.timestamps, cfg.recency_weight, cfg.recency_power)
        self.sampler = NegativeSampler(inputs.users, inputs.items, self.n_users, self.n_items, self.device, row_weights)
        self.neg_users = self.sampler.negative_users(cfg.num_negatives)
        self.amp = amp_dtype(self.device)
        self.samples_per_epoch = self.sampler.n_positives + len(self.neg_users)
        self.batch_size = cfg.effective_batch_size(self.samples_per_epoch)
        self._flag = torch.zeros(2, dtype=torch.int64, device=self.device) if self.dist.active else None
        self._until_check, self._steps, self._checked_at = 1, 0, time.perf_counter()

    # -- distributed helpers (no-ops on one device)
    def agree(self, value: bool) -> bool:
        """Rank 0's ``value`` on every rank (once per epoch)."""
        if not self.dist.active:
            return value
        self._flag[0] = int(value)
        torch.distributed.broadcast(self._flag, src=0)
        self._steps, self._checked_at = 0, time.perf_counter()  # rank 0's evaluation is no training time
        return bool(self._flag[0].item())

    def stop_agreed(self) -> bool:
        """Called before every step: whether to stop (rank 0's SIGTERM) here, on every rank alike. Several ranks
        communicate only at checks: rank 0 sends its flag and the number of steps to the next check, sized from its
        measured step rate to come ``STOP_CHECK_S`` later; in between this returns False at no cost."""
        if not self.dist.active:
            return self.stop_requested()
        self._steps += 1
        self._until_check -= 1
        if self._until_check > 0:
            return False
        if self.leader is not None:
            now = time.perf_counter()
            rate = self._steps / max(now - self._checked_at, 1e-6)
            steps = int(min(max(1.0, rate * STOP_CHECK_S), MAX_STOP_CHECK_STEPS))
            self._flag.copy_(torch.tensor([int(self.stop_requested()), steps]))
            self._steps, self._checked_at = 0, now
        torch.distributed.broadcast(self._flag, src=0)
        stop, self._until_check = self._flag.tolist()
        return bool(stop)

    def stop_requested(self) -> bool:
        return self.leader is not None and self.leader.stop.requested

    def new_net(self, model_type: str) -> NCFNet:
        cfg = self.cfg
        return NCFNet(self.n_users, self.n_items, cfg.factor_num, cfg.num_layers, cfg.dropout, model_type)

    # -- the whole fit
    def run(self, resume: TrainState | None = None) -> tuple[NCFNet, list[StageResult]]:
        stages = self.cfg.stages()
        done: dict[str, dict[str, torch.Tensor]] = dict(resume.pretrained) if resume else {}
        results: list[StageResult] = list(resume.earlier) if resume else []
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
            stage_resume = resume if resume and resume.stage == stage else None
            loop = StageLoop(self, net, stage, index, lr, done, results)
            if stage_resume is not None:
                loop.restore(stage_resume)
            result = loop.run()
            results.append(result)
            if result.best_state is not None:
                net.load_state_dict(result.best_state)
            done[stage] = cpu_state(net)
            resume = None
        self.on_net(net)
        return net, results


__all__ = [
    "DistInfo",
    "Leader",
    "StageResult",
    "TrainConfig",
    "TrainInputs",
    "TrainState",
    "Trainer",
    "amp_dtype",
    "load_checkpoint",
    "resolve_device",
]
