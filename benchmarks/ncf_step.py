"""NCF optimizer steps per second at a given table size, in one process: the inner loop of an epoch, alone.

    .venv/bin/python benchmarks/ncf_step.py [--users 748052] [--items 99999] [--batch-size 4096] [--steps 300]
                                            [--sparse true,false] [--threads 2] [--profile]

Batches are drawn like an epoch's (users and items Zipf-like with exponent 1.1, seed 0; positives and negatives
mixed), the net is ``NCFNet`` (NeuMF, factor 32, one layer unless told) with the optimizer ``train`` would build
(``make_optimizer``), and each step is ``StageLoop._step``'s sequence: forward, BCE-with-logits sum, zero_grad,
backward, optimizer step, scheduler step. Prints samples/s per configuration (median of 5 blocks of ``--steps``
steps, after a warm-up block) and minor page faults per step. ``--profile`` also prints torch.profiler's top
operators for one block — on this project's 2-core VM its per-operator times were misleading (a 4096 × 64 ``cat``
shown at 2 ms that takes 25 µs alone): time phases or use py-spy before believing it.
The defaults are the 20M-row shape of ``benchmarks/scale.py`` (748K users × 100K items after cleaning).
"""

from __future__ import annotations

import argparse
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


def zipf_indices(rng: np.random.Generator, n: int, size: int, exponent: float = 1.1) -> np.ndarray:
    """Indices in [0, n) with P(k) ∝ (k+1)^-exponent, shuffled so that popular rows are spread over the table."""
    p = 1.0 / np.arange(1, n + 1) ** exponent
    p /= p.sum()
    return rng.permutation(n)[rng.choice(n, size=size, p=p)]


def batches(n_users: int, n_items: int, batch_size: int, count: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    users = zipf_indices(rng, n_users, batch_size * count)
    items = zipf_indices(rng, n_items, batch_size * count)
    labels = (rng.random(batch_size * count) < 1 / 9).astype(np.float32)  # 1 positive : 8 negatives
    for k in range(count):
        s = slice(k * batch_size, (k + 1) * batch_size)
        yield torch.from_numpy(users[s]), torch.from_numpy(items[s]), torch.from_numpy(labels[s])


def run(args, sparse: bool) -> tuple[float, list[float]]:
    torch.manual_seed(42)
    net = NCFNet(args.users, args.items, args.factor_num, args.num_layers, 0.0, args.model_type)
    set_sparse(net, sparse)
    optimizer = make_optimizer(args.optimizer, net.parameters(), 0.005, 1e-5, torch.device("cpu"), sparse)
    total = args.steps * 6
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda k: lr_factor(k, total))
    loss_sum = torch.zeros((), dtype=torch.float64)
    data = list(batches(args.users, args.items, args.batch_size, total))

    def block(start: int):
        for u, i, y in data[start : start + args.steps]:
            summed = F.binary_cross_entropy_with_logits(net(u, i).float(), y, reduction="sum")
            loss = summed / len(y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            loss_sum.add_(summed.detach())

    net.train()
    block(0)  # warm-up
    rates = []
    faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for k in range(1, 6):
        started = time.perf_counter()
        block(k * args.steps)
        rates.append(args.steps * args.batch_size / (time.perf_counter() - started))
    faults = (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults) / (5 * args.steps)
    print(f"  {faults:,.0f} minor page faults per step")
    if args.profile:
        from torch.profiler import ProfilerActivity, profile

        with profile(activities=[ProfilerActivity.CPU], record_shapes=True) as prof:
            block(0)
        table = prof.key_averages(group_by_input_shape=True).table(
            sort_by="self_cpu_time_total", row_limit=25, max_name_column_width=30, max_shapes_column_width=90
        )
        print(table)
    return statistics.median(rates), rates


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--users", type=int, default=748_052)
    ap.add_argument("--items", type=int, default=99_999)
    ap.add_argument("--batch-size", type=int, default=4096)
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--factor-num", type=int, default=32)
    ap.add_argument("--num-layers", type=int, default=1)
    ap.add_argument("--model-type", default="neumf")
    ap.add_argument("--optimizer", default="adam")
    ap.add_argument("--sparse", default="true", help="comma-separated: true, false")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--profile", action="store_true")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {args.users:,} users × {args.items:,} items, "
          f"{args.model_type} factor {args.factor_num} layers {args.num_layers}, batch {args.batch_size}")  # fmt: skip
    for flag in args.sparse.split(","):
        median, rates = run(args, flag == "true")
        shown = ", ".join(f"{r:,.0f}" for r in rates)
        print(f"sparse={flag}: {median:,.0f} samples/s median ({shown})")


if __name__ == "__main__":
    main()
