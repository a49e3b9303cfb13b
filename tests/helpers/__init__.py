"""Plain helpers the tests import (``from helpers.opt_ml import make_opt_ml``); fixtures live in conftest.py files.

- ``opt_ml``: the repository's paths, /opt/ml trees from the fixture, the in-process `train`, MovieLens location.
- ``algorithms``: every registered algorithm and its fast settings (tests parametrize over them).
- ``net``: free ports.
- ``serving``: a small real Recommender, model builders and a real `serve` process for the serving tests.
- ``movielens``: the ml-100k train/test channel split of the quality gates.
"""
