"""NCF optimizer steps per second at a given table size, in one process: the inner loop of an epoch, alone.

    .venv/bin/python benchmarks/ncf_step.py [--users 748052] [--items 99999] [--batch-size 4096] [--steps 300]
                                            [--sparse true,false] [--baseline OLD_SPARSE_PY] [--threads 2] [--profile]
                                            [--zipf-negatives]

Batches are drawn like an epoch's (users and positives' items Zipf-like with exponent 1.1, negatives' items uniform
as the sampler draws them — ``--zipf-negatives`` draws them Zipf-like too, as this script did before 2026-12-04,
which touches far fewer distinct item rows per batch; seed 0; positives and negatives mixed), the net is ``NCFNet``
(NeuMF, factor 32, one layer unless told) with the optimizer ``train`` would build
(``make_optimizer``), and each step is ``StageLoop._step``'s sequence: forward, BCE-with-logits sum, zero_grad,
backward, optimizer step, scheduler step. Configurations — sparse and/or dense tables, and with ``--baseline`` the
row-wise optimizer of another revision — take turns block by block in one process (on a noisy machine the only fair
comparison), and each prints its samples/s (median of ``--blocks`` blocks of ``--steps`` steps, after a warm-up
block); then minor page faults per step. ``--profile`` also prints torch.profiler's top
operators for one block — on this project's 2-core VM its per-operator times were misleading (a 4096 × 64 ``cat``
shown at 2 ms that takes 25 µs alone): time phases or use py-spy before believing it.
The defaults are the 20M-row shape of ``benchmarks/scale.py`` (748K users × 100K items after cleaning).
"""

from __future__ import annotations

import argparse
import importlib.util
import resource
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "container"))

from recsys.models.ncf.config import lr_factor, make_optimizer  # noqa: E402
from recsys.models.ncf.net import NCFNet  # noqa: E402
from recsys.models.ncf.sparse import set_sparse  # noqa: E402

CPU = torch.device("cpu")


def zipf_indices(rng: np.random.Generator, n: int, size: int, exponent: float = 1.1) -> np.ndarray:
    """Indices in [0, n) with P(k) ∝ (k+1)^-exponent, shuffled so that popular rows are spread over the table."""
    p = 1.0 / np.arange(1, n + 1) ** exponent
    p /= p.sum()
    return rng.permutation(n)[rng.choice(n, size=size, p=p)]


def batches(n_users: int, n_items: int, batch_size: int, count: int, seed: int = 0, uniform_negatives=True):
    rng = np.random.default_rng(seed)
    users = zipf_indices(rng, n_users, batch_size * count)
    labels = (rng.random(batch_size * count) < 1 / 9).astype(np.float32)  # 1 positive : 8 negatives
    items = zipf_indices(rng, n_items, batch_size * count)
    if uniform_negatives:  # as the sampler draws them: uniform over the catalog, so most item rows are distinct
        negatives = labels == 0
        items[negatives] = rng.integers(0, n_items, int(negatives.sum()))
    for k in range(count):
        s = slice(k * batch_size, (k + 1) * batch_size)
        yield torch.from_numpy(users[s]), torch.from_numpy(items[s]), torch.from_numpy(labels[s])


class Setup:
    """One configuration: its own net (same seed), optimizer and batches; ``block`` times ``steps`` steps."""

    def __init__(self, args, name: str, sparse: bool, optimizer_class=None) -> None:
        torch.manual_seed(42)
        self.name, self.args = name, args
        self.net = NCFNet(args.users, args.items, args.factor_num, args.num_layers, 0.0, args.model_type)
        set_sparse(self.net, sparse)
        if optimizer_class is None:
            self.optimizer = make_optimizer(args.optimizer, self.net.parameters(), 0.005, 1e-5, CPU, sparse)
        else:
            self.optimizer = optimizer_class(self.net.parameters(), lr=0.005, weight_decay=1e-5)
        total = args.steps * (args.blocks + 1)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, lambda k: lr_factor(k, total))
        self.loss_sum = torch.zeros((), dtype=torch.float64)
        self.data = list(batches(args.users, args.items, args.batch_size, total, 0, not args.zipf_negatives))
        self.rates: list[float] = []
        self.net.train()

    def block(self, k: int) -> None:
        started = time.perf_counter()
        for u, i, y in self.data[k * self.args.steps : (k + 1) * self.args.steps]:
            summed = F.binary_cross_entropy_with_logits(self.net(u, i).float(), y, reduction="sum")
            loss = summed / len(y)
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.optimizer.step()
            self.scheduler.step()
            self.loss_sum.add_(summed.detach())
        if k:  # block 0 is the warm-up
            self.rates.append(self.args.steps * self.args.batch_size / (time.perf_counter() - started))


def baseline_optimizer(path: Path):
    """``RowSparseAdam`` from another revision's ``sparse.py`` (e.g. ``git show REV:container/recsys/models/ncf/
    sparse.py > /tmp/sparse_before.py``)."""
    spec = importlib.util.spec_from_file_location("baseline_sparse", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.RowSparseAdam


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--users", type=int, default=748_052)
    ap.add_argument("--items", type=int, default=99_999)
    ap.add_argument("--batch-size", type=int, default=4096)
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--blocks", type=int, default=5)
    ap.add_argument("--factor-num", type=int, default=32)
    ap.add_argument("--num-layers", type=int, default=1)
    ap.add_argument("--model-type", default="neumf")
    ap.add_argument("--optimizer", default="adam")
    ap.add_argument("--sparse", default="true", help="comma-separated: true, false")
    ap.add_argument("--baseline", type=Path, help="also time RowSparseAdam from this sparse.py (sparse tables)")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--profile", action="store_true")
    ap.add_argument("--zipf-negatives", action="store_true", help="negatives' items Zipf-like, not uniform")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {args.users:,} users × {args.items:,} items, "
          f"{args.model_type} factor {args.factor_num} layers {args.num_layers}, batch {args.batch_size}")  # fmt: skip
    setups = [Setup(args, f"sparse={flag}", flag == "true") for flag in args.sparse.split(",")]
    if args.baseline:
        setups.append(Setup(args, f"baseline {args.baseline.name}", True, baseline_optimizer(args.baseline)))
    faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for k in range(args.blocks + 1):  # the configurations take turns, block by block
        for setup in setups:
            setup.block(k)
    faults = (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults) / (
        len(setups) * (args.blocks + 1) * args.steps
    )
    for setup in setups:
        shown = ", ".join(f"{r:,.0f}" for r in setup.rates)
        print(f"{setup.name}: {statistics.median(setup.rates):,.0f} samples/s median ({shown})")
    print(f"{faults:,.1f} minor page faults per step")
    if args.profile:
        from torch.profiler import ProfilerActivity, profile

        with profile(activities=[ProfilerActivity.CPU], record_shapes=True) as prof:
            setups[0].block(0)
        table = prof.key_averages(group_by_input_shape=True).table(
            sort_by="self_cpu_time_total", row_limit=25, max_name_column_width=30, max_shapes_column_width=90
        )
        print(table)


if __name__ == "__main__":
    main()
