"""Recommenders. Which algorithms exist is ``recsys.models.registry``; each algorithm's recommender is imported only
when used, so serving an ALS model never imports pyspark and serving never starts a JVM."""

from __future__ import annotations

import functools
import importlib
from typing import Any

from recsys.models.base import Recommender


@functools.cache
def _modules() -> dict[str, tuple[str, str]]:
    """name → (module, class) of every registered algorithm, read from the registry once. A mutable cache: a test
    may add a throwaway recommender to it (``recsys.models._MODULES``)."""
    from recsys.models import registry

    return {name: spec.class_path() for name, spec in registry.algorithms().items()}


def recommender_class(algorithm: str) -> type[Recommender]:
    try:
        module, name = _modules()[algorithm]
    except KeyError:
        raise ValueError(f"unknown algorithm {algorithm!r}; choose one of {', '.join(_modules())}") from None
    return getattr(importlib.import_module(module), name)


def __getattr__(name: str) -> Any:
    if name == "_MODULES":
        return _modules()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["Recommender", "recommender_class"]
