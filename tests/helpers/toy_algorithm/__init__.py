"""A test-only algorithm registered the way a derived image registers one: an entry point in the
``recsys.algorithms`` group naming ``toy_algorithm:ALGORITHM`` (tests/unit/test_registry.py writes the ``*.dist-info``).
This module must stay light: it is imported whenever hyperparameters are parsed."""

from recsys.models.registry import Algorithm
from recsys.training.params import Param

ALGORITHM = Algorithm(
    name="toy",
    recommender="toy_algorithm.model:ProjectionRecommender",
    description="Random projection of each item's buyers plus an item-popularity bias (numpy; tests only).",
    params=(Param("projection_dim", int, 16, "Toy: size of the random projection.", low=1, high=1024),),
    memory_params=("projection_dim",),
    fast={"projection_dim": 8},
)
