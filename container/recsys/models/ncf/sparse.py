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
from torch.optim.adam import adam

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
    count, as ``torch.optim.SparseAdam`` does.

    One step gathers the touched rows of each sparse parameter (weights and both moments), runs torch's fused Adam
    once over those rows and the dense parameters together, and writes the rows back: the arithmetic is one kernel
    per step instead of about ten small operations per tensor."""

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
        batch_rows = BatchRows()
        for group in self.param_groups:
            weights, grads, exp_avgs, exp_avg_sqs, steps = [], [], [], [], []
            write_back = []  # (rows, the full tensors, their gathered rows) of each sparse parameter
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self._state_of(p)
                full = (p, state["exp_avg"], state["exp_avg_sq"])
                if p.grad.is_sparse:
                    rows, grad = batch_rows.summed(p.grad)
                    touched = tuple(t.index_select(0, rows) for t in full)
                    write_back.append((rows, full, touched))
                else:
                    grad, touched = p.grad, full
                for parts, value in zip((weights, exp_avgs, exp_avg_sqs), touched, strict=True):
                    parts.append(value)
                grads.append(grad)
                steps.append(state["step"])
            if not weights:
                continue
            beta1, beta2 = group["betas"]
            adam(
                weights, grads, exp_avgs, exp_avg_sqs, [], steps, fused=True, decoupled_weight_decay=group["decoupled"],
                amsgrad=False, beta1=beta1, beta2=beta2, lr=group["lr"], weight_decay=group["weight_decay"],
                eps=group["eps"], maximize=False,
            )  # fmt: skip
            for rows, full, touched in write_back:
                for target, value in zip(full, touched, strict=True):
                    target.index_copy_(0, rows, value)
        return loss

    def _state_of(self, p: torch.Tensor) -> dict:
        """``p``'s moments and step count (a tensor, as torch's Adam keeps it; an int from older checkpoints)."""
        state = self.state[p]
        if not state:
            state["step"] = torch.tensor(0.0, device=p.device)
            state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
            state["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
        elif not torch.is_tensor(state["step"]):
            state["step"] = torch.tensor(float(state["step"]), device=p.device)
        return state


class BatchRows:
    """The distinct rows of sparse gradients within one optimizer step, and their summed values.

    An embedding's sparse gradient lists one row per lookup (a batch's popular items many times). Summing the
    duplicates with ``torch.unique`` + ``index_add_`` is several times cheaper than ``coalesce`` (which sorts the
    values along with the indices), and tables looked up with the same indices — a NeuMF's GMF and MLP user tables,
    its two item tables — share one ``unique``: the indices are compared, not assumed equal."""

    def __init__(self) -> None:
        self._seen: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = []

    def summed(self, grad: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(distinct rows, their summed gradient rows) of sparse ``grad``."""
        if grad.is_coalesced():
            return grad.indices()[0], grad.values()
        indices, values = grad._indices()[0], grad._values()
        rows, inverse = self._unique(indices)
        summed = values.new_zeros((len(rows), *values.shape[1:]))
        return rows, summed.index_add_(0, inverse, values)

    def _unique(self, indices: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        for seen, rows, inverse in self._seen:
            if seen.shape == indices.shape and torch.equal(seen, indices):
                return rows, inverse
        rows, inverse = torch.unique(indices, return_inverse=True)
        self._seen.append((indices, rows, inverse))
        return rows, inverse
