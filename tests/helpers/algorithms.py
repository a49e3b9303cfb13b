"""Every registered algorithm (tests parametrize over ``ALGORITHMS``) and the small settings each trains with on
opt_ml_fixture, taken from its registration."""

from __future__ import annotations

from recsys.models import registry


def fast_hyperparameters(algorithm: str) -> dict:
    """Small, fast settings for training ``algorithm`` on the fixture: its registration's, on the retail preset."""
    return {"algorithm": algorithm, "preset": "online_retail", **registry.get(algorithm).fast}


ALGORITHMS = registry.names()
FAST = {name: fast_hyperparameters(name) for name in ALGORITHMS}
