"""A zero-downtime model swap on the real image, as SageMaker's blue/green UpdateEndpoint does it: under constant load
through a router, container B (model B) starts, becomes ready, takes the traffic, and container A gets SIGTERM and
drains — no request fails and the answers switch from model A's to model B's. The router is benchmarks/swap.py's
ProxyRouter: like SageMaker's front end it keeps the callers' connections across the switch (a reloaded nginx resets
some of them — a router artifact, measured there with --router nginx).

The machinery and the figures are benchmarks/swap.py's (one implementation); this test runs one swap with the
session's NCF (A) and ALS (B) models and asserts the contract. docs/model-updates.md explains the sequence.
"""

from __future__ import annotations

import importlib.util
import sys
import time

import pytest

from .container_helpers import NAME_PREFIX, ROOT

pytestmark = pytest.mark.container

MIN_REQUESTS = 5000  # sent between B's first /ping 200 and A's exit


def _swap_module():
    name = "recsys_benchmark_swap"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, ROOT / "benchmarks" / "swap.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module  # dataclasses resolve their annotations through sys.modules
        spec.loader.exec_module(module)
    return sys.modules[name]


def test_model_swap_under_load_fails_no_request(image: str, trained, tmp_path) -> None:
    swap = _swap_module()
    (run_a, base_a), (run_b, base_b) = trained("ncf"), trained("als")
    assert run_a.code == 0 and run_b.code == 0, "training failed; see test_train_writes_a_model"

    setup = swap.Setup(
        image,
        base_a / "model",
        base_b / "model",
        threads=6,
        min_requests=MIN_REQUESTS,
        bake_s=1.0,
        steady_s=1.0,
        name_prefix=f"{NAME_PREFIX}-swap",  # removed by the image fixture if this test dies half-way
        router="python",
    )
    started = time.monotonic()
    result = swap.run_swap(setup, tmp_path)
    report = result.render()
    print(f"\nswap run (A start → B serving alone) took {time.monotonic() - started:.1f} s\n{report}")

    failed = result.failures()
    assert not failed, f"{len(failed)} requests failed, e.g. {[result.label(r) for r in failed[:5]]}\n{report}"
    assert len(result.in_window()) >= MIN_REQUESTS, report
    t = result.timeline
    # Answered before the switch was signalled: A's. Sent after A was drained: B's. (A request sent just before the
    # switch may arrive just after it: either model may answer it, as with SageMaker's router.)
    assert all(result.label(r) == "A" for r in result.records if r.end < t.switch), report
    assert all(result.label(r) == "B" for r in result.records if r.start > t.drained), report
    assert result.a_exit_code == "0", report
    assert t.a_gone - t.a_sigterm < swap.STOP_GRACE_S, report
    assert result.probes_after_sigterm() >= 1, f"no request was in flight at A's SIGTERM (heavier probes)\n{report}"
    assert not result.problems(), "\n".join(result.problems()) + f"\n{report}"
