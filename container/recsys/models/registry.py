"""The algorithms ``train`` and serving know: the one list everything else derives from (the ``algorithm``
hyperparameter's choices, the hyperparameter declarations, checkpoint fingerprints, the out-of-memory advice, the
recommender class a manifest names, and the tests' parametrization).

Built-in algorithms are listed in ``BUILTIN``. A derived image adds one by installing a distribution with an entry
point in the ``recsys.algorithms`` group whose value names an ``Algorithm`` object (``mypkg.params:ALGORITHM``);
the entry point's name must be the algorithm's name. Declarations are imported when first asked for, and a spec's
recommender class only when a model is built or loaded: reading hyperparameters never imports torch or pyspark.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from importlib.metadata import EntryPoint, entry_points
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from recsys.training.hyperparameters import Hyperparameters
    from recsys.training.params import Param

GROUP = "recsys.algorithms"

# name → "module:attribute" of its Algorithm; the order is the order of choices, README rows and tests.
BUILTIN = {
    "ncf": "recsys.models.ncf.params:ALGORITHM",
    "als": "recsys.models.als.params:ALGORITHM",
}


class RegistryError(Exception):
    """An algorithm declaration that cannot be used (a packaging mistake, not a user's)."""


@dataclass(frozen=True)
class Algorithm:
    name: str
    recommender: str  # "module:Class" of its Recommender, imported only when a model is built or loaded
    description: str  # one line
    params: tuple[Param, ...] = ()  # its own hyperparameters; the common ones are declared in recsys.training
    # Hyperparameters that never change the trained weights (a device, a stopping rule): a checkpoint written under
    # other values of these may still be resumed.
    fingerprint_exclude: tuple[str, ...] = ()
    memory_params: tuple[str, ...] = ()  # what to reduce when training runs out of memory
    fast: Mapping[str, Any] = field(default_factory=dict)  # small settings tests train with on opt_ml_fixture
    check: Callable[[Hyperparameters], None] | None = None  # rules across its hyperparameters; raises UserError

    def class_path(self) -> tuple[str, str]:
        module, _, attribute = self.recommender.partition(":")
        if not module or not attribute:
            raise RegistryError(
                f"algorithm {self.name!r}: recommender must be 'module:Class', got {self.recommender!r}"
            )
        return module, attribute


def _load(name: str, value: str, origin: str) -> Algorithm:
    try:
        spec = EntryPoint(name, value, GROUP).load()
    except Exception as exc:
        raise RegistryError(f"algorithm {name!r} ({origin} {value}) could not be imported: {exc}") from exc
    if not isinstance(spec, Algorithm):
        raise RegistryError(f"algorithm {name!r} ({origin} {value}) is not an Algorithm object: {spec!r:.100}")
    if spec.name != name:
        raise RegistryError(f"{origin} {name!r} names an Algorithm called {spec.name!r}; the two names must match")
    return spec


@functools.cache
def algorithms() -> dict[str, Algorithm]:
    """Every registered algorithm by name: the built-in ones, then entry points sorted by name."""
    found = {name: _load(name, value, "built-in") for name, value in BUILTIN.items()}
    for ep in sorted(entry_points(group=GROUP), key=lambda ep: ep.name):
        if ep.name in found:
            raise RegistryError(f"entry point {ep.value} registers algorithm {ep.name!r}, which is already registered")
        found[ep.name] = _load(ep.name, ep.value, "entry point")
    return found


def names() -> tuple[str, ...]:
    return tuple(algorithms())


def get(name: str) -> Algorithm:
    try:
        return algorithms()[name]
    except KeyError:
        raise ValueError(f"unknown algorithm {name!r}; choose one of {', '.join(algorithms())}") from None


def memory_hint() -> str:
    """The out-of-memory advice, naming what to reduce in every algorithm."""
    reducible = [p for spec in algorithms().values() for p in spec.memory_params]
    return "use a larger instance type" + (f" or reduce {' / '.join(reducible)}" if reducible else "")
