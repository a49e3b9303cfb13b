"""One stage of an NCF fit (GMF, MLP or NeuMF): its optimizer, loss scaler, learning-rate schedule and sampler
stream, the loop over its epochs and batches, and its checkpoints (``TrainState``)."""

from __future__ import annotations

import contextlib
import logging
import math
import time
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F

from recsys.models.ncf.config import better, choose_sparse, lr_factor, make_optimizer
from recsys.models.ncf.net import NCFNet
from recsys.models.ncf.state import StageResult, TrainState, cpu_state
from recsys.platform.errors import TrainingStopped
from recsys.platform.progress import Progress

if TYPE_CHECKING:
    from recsys.models.ncf.trainer import Trainer

log = logging.getLogger(__name__)


class StageLoop:
    """Trains one stage on one rank. ``restore`` continues from a checkpoint, ``run`` trains the remaining epochs."""

    def __init__(
        self,
        trainer: Trainer,
        net: NCFNet,
        stage: str,
        stage_index: int,
        lr: float,
        done: dict[str, dict[str, torch.Tensor]],
        earlier: list[StageResult],
    ) -> None:
        cfg, device = trainer.cfg, trainer.device
        self.trainer, self.cfg, self.device, self.dist = trainer, cfg, device, trainer.dist
        self.leader = trainer.leader
        self.net, self.stage, self.stage_index, self.lr = net, stage, stage_index, lr
        self.done, self.earlier = done, earlier  # earlier stages' final states and results, for checkpoints
        self.sparse = choose_sparse(cfg, net, trainer.batch_size, self.dist.backend)  # before DDP sees the net
        self.model: torch.nn.Module = net
        if self.dist.active:
            ids = [device.index] if device.type == "cuda" else None
            self.model = torch.nn.parallel.DistributedDataParallel(net, device_ids=ids)
        self.optimizer = make_optimizer(cfg.optimizer, net.parameters(), lr, cfg.weight_decay, device, self.sparse)
        # Only fp16 needs loss scaling; a disabled scaler passes the loss and the step straight through.
        self.scaler = torch.amp.GradScaler(device.type, enabled=trainer.amp is torch.float16)
        self.generator = torch.Generator(device=device)
        self.generator.manual_seed(cfg.seed * 1000 + stage_index)
        self.batch_size = trainer.batch_size
        self.steps_per_epoch = math.ceil(trainer.samples_per_epoch / self.batch_size)
        self.total_steps = self.steps_per_epoch * cfg.epochs
        self.epochs = cfg.epochs_of(stage)
        self.result = StageResult(stage=stage, best_state=None)
        self.bad_epochs, self.first_epoch, self.start_batch = 0, 1, 0
        self.loss_sum = torch.zeros((), device=device, dtype=torch.float64)
        self.replay_rng: torch.Tensor | None = None  # set when resuming mid-epoch

    def restore(self, state: TrainState) -> None:
        self.net.load_state_dict(state.model)
        self.optimizer.load_state_dict(state.optimizer)
        if state.scaler:
            self.scaler.load_state_dict(state.scaler)
        self.result = state.result
        self.bad_epochs = state.bad_epochs
        self.first_epoch, self.start_batch = state.resume_point(self.epochs)
        if state.finished:  # nothing left to draw
            pass
        elif state.batch is None:  # saved at the end of an epoch: the sampler stream goes on from there
            self.generator.set_state(state.rng["sampler"])
        else:  # saved mid-epoch (SIGTERM): rebuild that epoch's tensors, then continue at the saved batch
            self.replay_rng = state.rng["epoch_start"]
            self.loss_sum.fill_(state.loss_sum if self.dist.rank == 0 else 0.0)  # the saved sum is all ranks'
        torch.set_rng_state(state.rng["torch"])
        if self.device.type == "cuda" and state.rng.get("cuda") is not None:
            torch.cuda.set_rng_state(state.rng["cuda"], self.device)
        log.info("%s: resuming at epoch %d, batch %d", self.stage, self.first_epoch, self.start_batch)

    def run(self) -> StageResult:
        # Built here, after any restore, so that the schedule starts at the step training continues at.
        self.scheduler = self._schedule((self.first_epoch - 1) * self.steps_per_epoch + self.start_batch)
        self.trainer.on_net(self.net)
        for epoch in range(self.first_epoch, self.epochs + 1):
            started = time.perf_counter()
            n, weights = self._train_epoch(epoch)
            if self.dist.active:
                torch.distributed.all_reduce(self.loss_sum)
            mean_loss = float(self.loss_sum) / (float(weights.sum()) if weights is not None else n)  # weighted mean
            self.loss_sum.zero_()
            seconds = time.perf_counter() - started
            if not self.trainer.agree(self._end_epoch(epoch, mean_loss, n, seconds)):
                break
        return self.result

    def _schedule(self, next_step: int) -> torch.optim.lr_scheduler.LambdaLR:
        """The learning rate of optimizer step ``k`` is ``lr × lr_factor(k)`` (LambdaLR computes exactly that
        product); the scheduler is positioned so that the next step is ``next_step``."""
        for group in self.optimizer.param_groups:
            group["initial_lr"] = self.lr  # the base rate: a restored optimizer's "lr" is the decayed one
        total = self.total_steps
        # Constructing a scheduler takes one step, from last_epoch to last_epoch + 1 = next_step.
        return torch.optim.lr_scheduler.LambdaLR(self.optimizer, lambda k: lr_factor(k, total), next_step - 1)

    def _train_epoch(self, epoch: int) -> tuple[int, torch.Tensor | None]:
        """The batches of ``epoch`` from ``start_batch`` on; returns the epoch's sample count and weights."""
        if self.replay_rng is not None:  # resuming mid-epoch: replay this epoch's draws
            self.generator.set_state(self.replay_rng)
            self.replay_rng = None
        epoch_start_rng = self.generator.get_state()
        users, items, labels, weights = self.trainer.sampler.epoch(self.trainer.neg_users, self.generator)
        n, batch_size = len(users), self.batch_size
        share = math.ceil(batch_size / self.dist.world_size)
        self.net.train()
        progress = self._progress(epoch, n)
        for batch in range(self.start_batch, self.steps_per_epoch):
            if self.trainer.stop_agreed():
                if self.dist.active:  # the checkpoint holds the loss of every rank's rows so far
                    torch.distributed.all_reduce(self.loss_sum)
                if self.leader is not None:
                    self._checkpoint(epoch, batch, epoch_start_rng)
                    self.leader.stop.check()
                raise TrainingStopped("stopped by rank 0")
            first = batch * batch_size
            batch_rows = min(batch_size, n - first)  # rows of this global batch, all ranks together
            lo = min(first + self.dist.rank * share, first + batch_rows)
            hi = min(lo + share, first + batch_rows)
            w = weights[lo:hi] if weights is not None else None
            self._step(users[lo:hi], items[lo:hi], labels[lo:hi], w, batch_rows)
            if progress is not None and progress.due():
                self._show_progress(progress, first + batch_rows)
        self.start_batch = 0
        return n, weights

    def _progress(self, epoch: int, n: int) -> Progress | None:
        """Rank 0's progress lines for this epoch (samples from ``start_batch`` on)."""
        if self.leader is None:
            return None
        offset = min(n, self.start_batch * self.batch_size)
        mode = "sparse" if self.sparse else "dense"
        progress = Progress(f"ncf {self.stage} epoch {epoch}/{self.epochs} ({mode} embeddings)", n - offset, "samples")
        progress.offset = offset
        return progress

    def _show_progress(self, progress: Progress, rows: int) -> None:
        """A progress line after the epoch's first ``rows`` rows; the loss shown is this rank's running mean (a hint:
        not weight-normalized)."""
        loss = float(self.loss_sum) * self.dist.world_size / max(1, rows)
        progress.update(rows - progress.offset, note=f"mean loss {loss:.4f}")

    def _step(self, u: torch.Tensor, i: torch.Tensor, y: torch.Tensor, w: torch.Tensor | None, batch_rows: int) -> None:
        """One optimizer step on this rank's rows of a global batch of ``batch_rows`` rows."""
        amp = self.trainer.amp
        with torch.autocast(self.device.type, dtype=amp) if amp else contextlib.nullcontext():
            # Sum over this rank's rows / rows of the global batch × world size: DDP's gradient average
            # is then exactly the gradient of the global batch mean (and a rank with no rows adds 0).
            summed = F.binary_cross_entropy_with_logits(self.model(u, i).float(), y, weight=w, reduction="sum")
        loss = summed * (self.dist.world_size / batch_rows)
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.scheduler.step()
        self.loss_sum += summed.detach().double()

    def _end_epoch(self, epoch: int, mean_loss: float, n: int, seconds: float) -> bool:
        """Books the epoch; on rank 0 also evaluates (selection) or logs it (refit), keeps the best state, applies
        early stopping and checkpoints. Returns whether to go on (rank 0's answer is what every rank follows)."""
        result = self.result
        result.train_seconds += seconds
        result.samples += n
        result.epochs_run += 1
        keep_going = epoch < self.epochs
        if self.leader is None:
            return keep_going
        if self.leader.evaluate is None:  # refit: no validation to look at
            self._record_refit_epoch(epoch, mean_loss, n, seconds)
        elif self._evaluate(epoch, mean_loss, n, seconds):
            keep_going = False
        self._checkpoint(epoch, None, None, finished=not keep_going)
        return keep_going

    def _record_refit_epoch(self, epoch: int, mean_loss: float, n: int, seconds: float) -> None:
        """Refit keeps the last state, so the last epoch is the "best" one."""
        self.result.best = {"Loss": mean_loss, "epoch": epoch}
        self.result.history.append(
            {
                "stage": self.stage,
                "phase": self.cfg.phase,
                "epoch": epoch,
                "Loss": mean_loss,
                "batch_size": self.batch_size,
            }
        )
        stage, epochs = self.stage, self.epochs
        log.info("refit %s epoch %d/%d: loss %.4f, %.0f samples/s", stage, epoch, epochs, mean_loss, n / seconds)

    def _evaluate(self, epoch: int, mean_loss: float, n: int, seconds: float) -> bool:
        """Evaluates, reports the metric line and keeps the best epoch; True when patience has run out."""
        started = time.perf_counter()
        self.net.eval()
        metrics = self.leader.evaluate(self.net)
        eval_seconds = time.perf_counter() - started
        result, stage = self.result, self.stage
        result.history.append(
            {
                "stage": stage,
                "epoch": epoch,
                "Loss": mean_loss,
                "HR": metrics["HR"],
                "NDCG": metrics["NDCG"],
                "train_seconds": round(result.train_seconds, 3),
                "eval_seconds": round(eval_seconds, 3),
                "samples_per_second": round(n / seconds, 1),
                "batch_size": self.batch_size,
            }
        )
        prefix = {"epoch": epoch} if not self.cfg.pretrain else {"stage": stage, "epoch": epoch}
        self.leader.report({"Loss": mean_loss, "HR": metrics["HR"], "NDCG": metrics["NDCG"]}, **prefix)
        if better(metrics, result.best):
            result.best = {"HR": metrics["HR"], "NDCG": metrics["NDCG"], "Loss": mean_loss, "epoch": epoch}
            result.best_state = cpu_state(self.net)
            self.bad_epochs = 0
            return False
        self.bad_epochs += 1
        if self.cfg.patience and self.bad_epochs >= self.cfg.patience:
            log.info("%s: no better HR for %d epochs, stopping after epoch %d", stage, self.bad_epochs, epoch)
            return True
        return False

    def _checkpoint(self, epoch: int, batch: int | None, epoch_start: torch.Tensor | None, finished=False) -> None:
        if self.leader is None or self.leader.checkpoints is None:
            return
        cfg, device = self.cfg, self.device
        state = TrainState(
            phase=cfg.phase,
            stage=self.stage,
            stage_index=self.stage_index,
            epoch=epoch,
            batch=batch,
            finished=finished,
            model=cpu_state(self.net),
            optimizer=self.optimizer.state_dict(),
            scaler=self.scaler.state_dict() if self.scaler.is_enabled() else None,
            result=self.result,
            bad_epochs=self.bad_epochs,
            loss_sum=float(self.loss_sum),
            rng={
                "sampler": self.generator.get_state(),
                "epoch_start": epoch_start,
                "torch": torch.get_rng_state(),
                "cuda": torch.cuda.get_rng_state(device) if device.type == "cuda" else None,
            },
            earlier=self.earlier,
            pretrained=self.done,
            extra=self.leader.checkpoint_extra,
        )
        payload = state.to_checkpoint()
        step = cfg.checkpoint_step(self.stage_index, epoch)
        info = {"phase": cfg.phase, "stage": self.stage, "epoch": epoch, "batch": batch}
        self.leader.checkpoints.save(step, lambda path: torch.save(payload, path), info)
