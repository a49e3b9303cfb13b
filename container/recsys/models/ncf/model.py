"""Neural Collaborative Filtering (He et al., WWW 2017) on PyTorch: GMF, MLP and NeuMF behind ``Recommender``.

- Network and the fast inference path: ``recsys.models.ncf.net`` (``NCFNet``, ``FastScorer``).
- Negative sampling, on the device and exact: ``recsys.models.ncf.sampler``.
- Training loop, checkpoints, SIGTERM, mixed precision, DistributedDataParallel: ``recsys.models.ncf.trainer``;
  the process group: ``recsys.models.ncf.ranks``; across the hosts of a job: ``recsys.models.ncf.hosts``.

Device: ``device=auto`` takes CUDA when present (mixed precision there: bf16 autocast, or fp16 with a GradScaler on
GPUs without bf16), else the CPU with one intra-op thread per available core. Several GPUs: one process per GPU
under DistributedDataParallel (NCCL); several hosts: those of every host, or one process per host on CPU (gloo). This
process is rank 0 and does everything but training alone.

Scoring (``score``/``score_all``) runs on precomputed per-item tensors that never require gradients (``FastScorer``),
rebuilt whenever a parameter's version counter changes (an optimizer step, ``load_state_dict``), so it is always
current. One user on the CPU — the common endpoint request — takes ``FastScorer.score_user``'s numpy path, and
serving's single-user top-K one compiled call (``top_k_one``, ``recsys.models.kernels``).
"""

from __future__ import annotations

import logging
import time
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from recsys.models.base import FitContext, FitResult, Recommender, RetrievalSpace
from recsys.models.ncf.net import FastScorer, NCFNet
from recsys.models.ncf.ranks import RankGroup
from recsys.models.ncf.trainer import (
    DistInfo,
    Leader,
    TrainConfig,
    Trainer,
    TrainInputs,
    amp_dtype,
    load_checkpoint,
    resolve_device,
)
from recsys.platform.errors import TrainingStopped
from recsys.platform.resources import usable_cpus

if TYPE_CHECKING:
    from recsys.platform.cluster import HostServices
    from recsys.platform.lifecycle import StopController
    from recsys.platform.resources import ResourceConfig
    from recsys.training.hyperparameters import Hyperparameters
    from recsys.training.roles import TrainingData

log = logging.getLogger(__name__)

WEIGHTS_FILE = "ncf.pt"
FORMAT = 1
# FitContext.extra keys: force a world size (e.g. 2 CPU processes over gloo, for tests), or the torch threads.
WORLD_SIZE_KEY = "ncf_world_size"
THREADS_KEY = "ncf_threads"


class NCFRecommender(Recommender):
    algorithm = "ncf"

    @classmethod
    def host_services(cls, resources: ResourceConfig, stop: StopController) -> HostServices:
        """How a job on several hosts trains NCF (``recsys.training.main``): torch.distributed, rank 0 on the leader
        and the ranks of every other host training with it."""
        from recsys.models.ncf.hosts import TorchDistributed

        return TorchDistributed(resources, stop)

    def __init__(self, hp: Hyperparameters, n_users: int, n_items: int, device: str | None = None):
        super().__init__(hp, n_users, n_items)
        self.device = resolve_device(hp.device if device is None else device)
        self.net = NCFNet(n_users, n_items, hp.factor_num, hp.num_layers, hp.dropout, hp.model_type).to(self.device)
        self.net.eval()
        self._scorer: FastScorer | None = None
        self._scorer_key: tuple | None = None

    # -- inference
    def _fast(self) -> FastScorer:
        """The scorer for the current weights: rebuilt when ``net`` is replaced or a parameter changed in place.

        The parameters are listed once per scorer (walking the module tree on every call cost ~10 µs of a ~100 µs
        single-user request); their ``_version`` counters tell in-place updates (optimizer steps, loads)."""
        net, scorer, key = self.net, self._scorer, self._scorer_key
        if scorer is not None and key is not None and key[0] is net and [p._version for p in key[1]] == key[2]:
            return scorer
        params = tuple(net.parameters())
        with torch.inference_mode(False), torch.no_grad():
            self._scorer = FastScorer(net)
        self._scorer_key = (net, params, [p._version for p in params])
        return self._scorer

    def set_net(self, net: NCFNet) -> None:
        self.net = net
        self._scorer = None

    def _tensor(self, array: np.ndarray) -> torch.Tensor:
        tensor = torch.from_numpy(np.ascontiguousarray(array, dtype=np.int64))
        return tensor if self.device.type == "cpu" else tensor.to(self.device, non_blocking=True)

    def _numpy(self, scores: torch.Tensor) -> np.ndarray:
        if scores.dtype != torch.float32:
            scores = scores.float()
        return scores.numpy() if scores.device.type == "cpu" else scores.cpu().numpy()

    def score(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        users, items = np.asarray(users), np.asarray(items)
        if items.ndim != 2 or len(users) != items.shape[0]:
            raise ValueError(f"score: users (n,) and items (n, m) expected, got {users.shape} and {items.shape}")
        if users.size == 0 or items.size == 0:
            return np.zeros(items.shape, dtype=np.float32)
        # The scorer's tensors never require gradients, so no autograd graph is recorded (no inference_mode needed).
        return self._numpy(self._fast().score(self._tensor(users), self._tensor(items)))

    def score_all(self, users: np.ndarray) -> np.ndarray:
        users = np.asarray(users)
        if users.size == 0:
            return np.zeros((0, self.n_items), dtype=np.float32)
        scorer = self._fast()
        if len(users) == 1 and self.device.type == "cpu":
            return scorer.score_user(int(users[0]))[None]  # the common single-user request (see score_user)
        return self._numpy(scorer.score_all(self._tensor(users)))

    def top_k_one(self, user: int, k: int, banned: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
        """The compiled single-user path (``FastScorer.top_k_one``) on a float32 CPU model; None elsewhere."""
        scorer = self._fast()
        if self.device.type != "cpu" or scorer.bias.dtype != torch.float32:
            return None
        return scorer.top_k_one(user, k, banned)

    def forward_scores(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        """The plain network forward over (n, m) pairs: the reference the fast path is tested against."""
        users, items = np.asarray(users), np.asarray(items)
        self.net.eval()
        with torch.inference_mode():
            u = self._tensor(np.broadcast_to(users[:, None], items.shape).reshape(-1))
            out = self.net(u, self._tensor(items.reshape(-1)))
            return out.float().cpu().numpy().reshape(items.shape)

    def retrieval_space(self) -> RetrievalSpace:
        """GMF: exact; MLP and NeuMF: an approximation whose candidates serving rescores (``ncf.retrieval``)."""
        from recsys.models.ncf.retrieval import retrieval_space

        return retrieval_space(self._fast())

    def item_vectors(self) -> np.ndarray:
        with torch.no_grad():
            return self.net.item_vectors().float().cpu().numpy().astype(np.float32, copy=False)

    # -- persistence
    def save(self, directory: Path) -> list[str]:
        payload = {
            "format": FORMAT,
            "arch": self.net.arch(),
            "state_dict": {k: v.detach().cpu() for k, v in self.net.state_dict().items()},
        }
        torch.save(payload, Path(directory) / WEIGHTS_FILE)
        return [WEIGHTS_FILE]

    @classmethod
    def load(
        cls, directory: Path, hp: Hyperparameters, n_users: int, n_items: int, device: str | None = None
    ) -> NCFRecommender:
        payload = torch.load(Path(directory) / WEIGHTS_FILE, map_location="cpu", weights_only=True)
        if payload.get("format") != FORMAT:
            raise ValueError(f"{WEIGHTS_FILE} has format {payload.get('format')!r}; this image reads {FORMAT}")
        arch = payload["arch"]
        if (arch["n_users"], arch["n_items"]) != (n_users, n_items):
            raise ValueError(
                f"{WEIGHTS_FILE} was trained for {arch['n_users']} users × {arch['n_items']} items, "
                f"the artifact lists {n_users} × {n_items}"
            )
        model = cls.__new__(cls)
        Recommender.__init__(model, hp, n_users, n_items)
        model.device = resolve_device("auto" if device is None else device)
        net = NCFNet(n_users, n_items, arch["factor_num"], arch["num_layers"], arch["dropout"], arch["model_type"])
        net.load_state_dict(payload["state_dict"])
        model.net = net.to(model.device).eval()
        model._scorer = model._scorer_key = None
        return model

    # -- training
    def fit(self, data: TrainingData, ctx: FitContext) -> FitResult:
        threads = ctx.extra.get(THREADS_KEY) or usable_cpus()
        if self.device.type == "cpu":
            torch.set_num_threads(int(threads))
            # Adam's second-moment estimates of rarely seen embedding rows decay into subnormal floats, which the
            # CPU handles ~100× slower; flushing them to zero changes nothing measurable in the results.
            torch.set_flush_denormal(True)
        group = self._group(ctx, int(threads))
        outcome = "failed"
        try:
            result = self._fit(data, ctx, group)
            outcome = "ok"
            return result
        except TrainingStopped:
            outcome = "stopped"
            raise
        finally:
            if group is not None:
                group.close(outcome)

    def _group(self, ctx: FitContext, threads: int) -> RankGroup | None:
        """The process group of this fit: every host's ranks in a multi-host job, else one rank per GPU of this
        host (or ``WORLD_SIZE_KEY`` CPU processes); None for one process."""
        from recsys.models.ncf.hosts import CLUSTER_KEY, cluster_group

        device = self.device
        cluster = ctx.extra.get(CLUSTER_KEY)
        if cluster is not None:
            group = cluster_group(cluster, device, threads, ctx.resources.current_host)
        else:
            world_size = int(ctx.extra.get(WORLD_SIZE_KEY) or 0)
            if not world_size:
                world_size = torch.cuda.device_count() if device.type == "cuda" else 1
            if world_size > 1 and device.type == "cuda" and device.index not in (None, 0):
                world_size = 1  # a specific GPU was asked for
            if world_size <= 1:
                return None
            per_rank = max(1, threads // world_size) if device.type == "cpu" else None
            group = RankGroup.on_this_host(world_size, device, per_rank)
        self.device = group.device
        return group

    def _fit(self, data: TrainingData, ctx: FitContext, group: RankGroup | None) -> FitResult:
        cfg = TrainConfig.from_hp(self.hp)
        resume_path, resume = None, None
        if ctx.checkpoints is not None:
            found = ctx.checkpoints.latest()  # UserError for a checkpoint of another configuration
            if found is not None:
                resume_path, _meta = found
                resume = load_checkpoint(resume_path)
        started = time.perf_counter()
        if resume is not None and resume.phase == "refit":
            selection = resume.extra["selection"]  # selection had finished before the job stopped
            log.info("selection finished in an earlier run (best epochs %s): resuming the refit", selection["epochs"])
        else:
            leader = Leader(
                evaluate=lambda net: self._evaluate(net, ctx),
                report=ctx.report_metrics,
                stop=ctx.stop,
                checkpoints=ctx.checkpoints,
            )
            net, results = self._train(cfg, data.train, group, leader, resume)
            self.set_net(net.eval())
            selection = self._selection(results, group.world_size if group else 1, resume_path)
            selection["metrics"] = self.selected_metrics(ctx, selection["metrics"])
            resume = resume_path = None
        select_seconds = time.perf_counter() - started
        refit = None
        if ctx.refit:
            refit = self._refit(cfg, data, ctx, selection, group, resume, resume_path)
        info = {**selection["info"], "phases": {"select_seconds": round(select_seconds, 3)}}
        if refit is not None:
            info["phases"]["refit_seconds"] = refit["seconds"]
        return FitResult(metrics=selection["metrics"], history=selection["history"], info=info, refit=refit)

    def _train(self, cfg, train, group: RankGroup | None, leader, resume):
        inputs = TrainInputs.of(train, self.n_users, self.n_items, self.device)
        if group is not None:
            return group.train(cfg, inputs, leader, resume, on_net=self.set_net)
        return self._trainer(cfg, inputs, DistInfo(), leader).run(resume)

    def _selection(self, results, world_size: int, resume_path) -> dict[str, Any]:
        """What selection chose and measured (plain values: it travels in refit checkpoints)."""
        final = results[-1]
        history = [row for r in results for row in r.history]
        device = self.device
        metrics: dict[str, Any] = {k: final.best[k] for k in ("HR", "NDCG", "Loss") if k in final.best}
        metrics["best_epoch"] = final.best.get("epoch", 0)
        info = {
            "device": str(device) if world_size == 1 else f"{world_size} × {device.type}",
            "world_size": world_size,
            "mixed_precision": str(amp_dtype(device)) if amp_dtype(device) else None,
            "threads": torch.get_num_threads(),
            "batch_size": history[-1]["batch_size"] if history else None,
            **_throughput(results),
            "epochs_run": sum(r.epochs_run for r in results),
            "stages": {r.stage: {**r.best, "epochs_run": r.epochs_run} for r in results},
            "resumed_from": str(resume_path.name) if resume_path else None,
        }
        epochs = {r.stage: int(r.best.get("epoch") or r.epochs_run or 1) for r in results}
        return {"metrics": metrics, "history": history, "info": info, "epochs": epochs}

    def _refit(self, cfg, data, ctx, selection, group, resume, resume_path) -> dict[str, Any]:
        """Retrain on all of ``train`` for each stage's selected number of epochs; the last state is the model."""
        refit_cfg = replace(cfg, phase="refit", stage_epochs=dict(selection["epochs"]), patience=0)
        leader = Leader(
            evaluate=None,
            report=ctx.report_metrics,
            stop=ctx.stop,
            checkpoints=ctx.checkpoints,
            checkpoint_extra={"selection": selection},
        )
        log.info("refit on all %d interactions of train: epochs %s", len(data.all), refit_cfg.stage_epochs)
        started = time.perf_counter()
        net, results = self._train(refit_cfg, data.all, group, leader, resume)
        self.set_net(net.eval())
        return {
            "epochs": refit_cfg.stage_epochs,
            "interactions": len(data.all),
            **_throughput(results),
            "final_loss": results[-1].best.get("Loss"),
            "resumed_from": str(resume_path.name) if resume_path else None,
            "seconds": round(time.perf_counter() - started, 3),
        }

    def _trainer(self, cfg: TrainConfig, inputs: TrainInputs, dist: DistInfo, leader: Leader) -> Trainer:
        """Rank 0's trainer (this process): it evaluates, reports and checkpoints through ``leader``."""
        return Trainer(cfg, inputs, dist, leader, on_net=self.set_net)

    def _evaluate(self, net: NCFNet, ctx: FitContext) -> dict[str, float]:
        self.set_net(net)
        return ctx.evaluator.sampled(self)


def _throughput(results) -> dict[str, float | None]:
    """Training seconds and samples/s over the stages of one phase (selection or refit)."""
    seconds = sum(r.train_seconds for r in results)
    samples = sum(r.samples for r in results)
    return {
        "samples_per_second": round(samples / seconds, 1) if seconds else None,
        "train_seconds": round(seconds, 3),
    }


__all__ = ["NCFRecommender"]
