"""Recommenders. Each algorithm lives in its own module and is imported only when used, so serving an ALS model
never imports pyspark and serving never starts a JVM."""

from __future__ import annotations

import importlib

from recsys.models.base import Recommender

_MODULES = {"ncf": ("recsys.models.ncf.model", "NCFRecommender"), "als": ("recsys.models.als.model", "ALSRecommender")}


def recommender_class(algorithm: str) -> type[Recommender]:
    try:
        module, name = _MODULES[algorithm]
    except KeyError:
        raise ValueError(f"unknown algorithm {algorithm!r}; choose one of {', '.join(_MODULES)}") from None
    return getattr(importlib.import_module(module), name)


__all__ = ["Recommender", "recommender_class"]
