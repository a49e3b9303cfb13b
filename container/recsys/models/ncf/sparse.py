"""Sparse embedding updates for large tables.

With dense embeddings every optimizer step reads and writes every row of every table (Adam's moments and weight
decay included), so a step costs O(users + items) instead of O(batch): on a 5M-interaction log (500K users × 50K
items) most of an epoch went to Adam's dense update. With ``sparse_embeddings`` on, the tables produce sparse
gradients (``nn.Embedding(sparse=True)``) and ``RowSparseAdam`` updates only the rows a batch touched — "lazy"
Adam as in TorchRec's row-wise optimizers and ``torch.optim.SparseAdam``: an untouched row keeps its weights and
moments until it is seen again. The dense layers (MLP tower, predict layer) get plain Adam / AdamW.

Weight decay on the tables is applied to the touched rows only (L2 added to their gradient for ``adam``, decoupled
shrinkage of those rows for ``adamw``), so a rare user is not decayed towards zero on every step it is absent from.

``auto`` turns the sparse path on when the tables hold more rows than ``AUTO_ROWS_PER_BATCH`` × batch size (a dense
step then touches far more rows than a batch needs); MovieLens-100K and the bundled fixture stay on the dense path.
"""

from __future__ import annotations

import logging

import torch
from torch import nn

log = logging.getLogger(__name__)

SPARSE_CHOICES = ("auto", "true", "false")
SPARSE_OPTIMIZERS = ("adam", "adamw")
# auto: sparse when users + items > this × batch size (measured in benchmarks/scale.py: see benchmarks/README.md).
AUTO_ROWS_PER_BATCH = 8


def use_sparse(setting: str, n_rows: int, batch_size: int, optimizer: str, backend: str | None) -> bool:
    """Whether a stage trains with sparse embedding gradients. ``true`` with an optimizer or process-group backend
    that cannot take sparse gradients falls back to dense with a warning (NCCL has no sparse all-reduce)."""
    if setting == "false":
        return False
    possible = optimizer in SPARSE_OPTIMIZERS and backend != "nccl"
    if setting == "true":
        if not possible:
            log.warning(
                "sparse_embeddings=true needs optimizer adam or adamw and no NCCL process group; training dense"
            )
        return possible
    return possible and n_rows > AUTO_ROWS_PER_BATCH * batch_size


def set_sparse(net: nn.Module, sparse: bool) -> None:
    """Switches the net's embedding tables between sparse and dense gradients (weights unchanged)."""
    for module in net.modules():
        if isinstance(module, nn.Embedding):
            module.sparse = sparse


def embedding_rows(net: nn.Module) -> int:
    """Users + items: the rows of one user table and one item table."""
    tables = [m.num_embeddings for m in net.modules() if isinstance(m, nn.Embedding)]
    return sum(tables[:2])


class RowSparseAdam(torch.optim.Optimizer):
    """Adam (``decoupled=False``) or AdamW (``decoupled=True``) that updates sparse-gradient parameters row-wise
    (only the rows present in the gradient) and dense ones as usual. Bias correction uses the parameter's own step
    count, as ``torch.optim.SparseAdam`` does."""

    def __init__(self, params, lr: float, weight_decay: float = 0.0, decoupled: bool = False,
                 betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8) -> None:  # fmt: skip
        defaults = {"lr": lr, "weight_decay": weight_decay, "decoupled": decoupled, "betas": betas, "eps": eps}
        super().__init__(params, defaults)

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                if not state:
                    state["step"] = 0
                    state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                    state["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                state["step"] += 1
                if p.grad.is_sparse:
                    self._sparse_step(p, p.grad.coalesce(), state, group)
                else:
                    self._dense_step(p, p.grad, state, group)
        return loss

    @staticmethod
    def _dense_step(p: torch.Tensor, grad: torch.Tensor, state: dict, group: dict) -> None:
        lr, wd, (beta1, beta2), eps = group["lr"], group["weight_decay"], group["betas"], group["eps"]
        if wd and group["decoupled"]:
            p.mul_(1 - lr * wd)
        elif wd:
            grad = grad.add(p, alpha=wd)
        exp_avg, exp_avg_sq, t = state["exp_avg"], state["exp_avg_sq"], state["step"]
        exp_avg.lerp_(grad, 1 - beta1)
        exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
        denom = (exp_avg_sq / (1 - beta2**t)).sqrt_().add_(eps)
        p.addcdiv_(exp_avg, denom, value=-lr / (1 - beta1**t))

    @staticmethod
    def _sparse_step(p: torch.Tensor, grad: torch.Tensor, state: dict, group: dict) -> None:
        lr, wd, (beta1, beta2), eps = group["lr"], group["weight_decay"], group["betas"], group["eps"]
        rows, values = grad.indices()[0], grad.values()
        weights = p.index_select(0, rows)
        if wd and group["decoupled"]:
            weights.mul_(1 - lr * wd)
        elif wd:
            values = values.add(weights, alpha=wd)
        t = state["step"]
        exp_avg = state["exp_avg"].index_select(0, rows).lerp_(values, 1 - beta1)
        exp_avg_sq = state["exp_avg_sq"].index_select(0, rows).mul_(beta2).addcmul_(values, values, value=1 - beta2)
        state["exp_avg"].index_copy_(0, rows, exp_avg)
        state["exp_avg_sq"].index_copy_(0, rows, exp_avg_sq)
        denom = (exp_avg_sq / (1 - beta2**t)).sqrt_().add_(eps)
        p.index_copy_(0, rows, weights.addcdiv_(exp_avg, denom, value=-lr / (1 - beta1**t)))
