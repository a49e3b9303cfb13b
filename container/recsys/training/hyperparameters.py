"""Every hyperparameter, declared once: name, type, default, allowed range, help. The common ones are declared
here; each algorithm declares its own in its registration (``recsys.models.registry``).

The declarations drive parsing (``parse``), validation, the README table (``markdown_table``) and the
``metric_definitions`` notebooks use. SageMaker delivers every value as a string, quoted differently per client:
SDK v2 ``Estimator`` sends ``str(v)`` ("True", "[64, 32]"), its framework estimators send ``json.dumps(v)`` (strings
gain quotes: '"abc"'), SDK v3 sends "true". So each value is read as JSON first, then as the raw string.
"""

from __future__ import annotations

import difflib
import functools
import json
import math
from collections.abc import Mapping
from typing import Any

from recsys.models import registry
from recsys.platform.errors import UserError
from recsys.training.params import Param

# Keys SageMaker or its SDKs add on their own; never an error.
_PLATFORM_PREFIXES = ("sagemaker_", "_")  # sagemaker_program, _tuning_objective_metric, ...

COMMON = "all"  # the README's algorithm column for a hyperparameter every algorithm reads


def _common_params() -> tuple[Param, ...]:
    """What every algorithm reads: which one, the input layout, the evaluation protocol, the seed, refit."""
    return (
        # -- what to train, on what
        Param("algorithm", str, "ncf", "Which recommender to train.", choices=registry.names()),
        Param(
            "preset",
            str,
            "none",
            "Input layout: `movielens` (u.data / ratings.dat), `online_retail` (UCI Online Retail transactions), "
            "or `none` (use the *_col hyperparameters).",
            choices=("movielens", "online_retail", "none"),
        ),
        Param(
            "user_col", str, None, "User id column (name, or 0-based index for files without a header).", column=True
        ),
        Param("item_col", str, None, "Item id column (name or 0-based index).", column=True),
        Param(
            "rating_col",
            str,
            None,
            "Rating / weight column (name or index). Absent: every interaction weighs 1.",
            column=True,
        ),
        Param(
            "timestamp_col",
            str,
            None,
            "Timestamp column (name or index): the validation interaction carved from `train` is each user's latest. "
            "Absent: a seeded random one.",
            column=True,
        ),
        # -- evaluation (every algorithm, same protocol)
        Param("top_k", int, 10, "K of HR@K / NDCG@K / Recall@K.", low=1, high=1000),
        Param(
            "num_eval_negatives",
            int,
            99,
            "Items sampled once per user (from `seed`) for the NCF protocol: the held-out item is ranked among it "
            "plus these.",
            low=1,
            high=10000,
        ),
        Param("seed", int, 42, "Random seed: same seed, same data, same machine → same model.", low=0),
        Param(
            "refit",
            bool,
            True,
            "With validation carved from `train` (no `validation` channel): after selecting on it, retrain on all of "
            "`train` with the selected settings (NCF: the selected number of epochs) and ship that model. false ships "
            "the selected model, trained without each user's latest interaction.",
        ),
    )


@functools.cache
def _declarations() -> tuple[tuple[Param, ...], dict[str, str]]:
    """(every Param: the common ones, then each registered algorithm's in registry order; name → owner, ``COMMON``
    or an algorithm's name). Built on first use: registering an algorithm needs no import of this module."""
    owners: dict[str, str] = {}
    params: list[Param] = []
    groups = [(COMMON, _common_params())] + [(a.name, a.params) for a in registry.algorithms().values()]
    for declarer, declared in groups:
        for param in declared:
            if param.name in owners:
                raise registry.RegistryError(
                    f"hyperparameter `{param.name}` is declared twice: by {owners[param.name]} and by {declarer}"
                )
            owners[param.name] = declarer
            params.append(param)
    return tuple(params), owners


def all_params() -> tuple[Param, ...]:
    return _declarations()[0]


def owner(name: str) -> str:
    """``COMMON`` or the name of the algorithm that declares hyperparameter ``name``."""
    return _declarations()[1][name]


def by_name() -> dict[str, Param]:
    return {p.name: p for p in all_params()}


def __getattr__(name: str) -> Any:
    # ``PARAMS`` / ``BY_NAME`` as module attributes, computed when first read (they depend on the registry).
    if name == "PARAMS":
        return all_params()
    if name == "BY_NAME":
        return by_name()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


# Regexes for SageMaker ``metric_definitions``; ``train`` prints lines they match. ``HR``, ``NDCG`` and ``Loss`` are
# the LotteON names (per epoch, validation HR/NDCG and training loss; the final value is the selected epoch's).
# ``validation:*`` and ``test:*`` never match each other or the LotteON regexes: a tuning job's objective must be a
# validation metric (``validation:HR``); ``test:*`` is printed once, for the final model, when a test channel is given.
METRIC_DEFINITIONS = [
    {"Name": "HR", "Regex": "HR=(.*?);"},
    {"Name": "NDCG", "Regex": "NDCG=(.*?);"},
    {"Name": "Loss", "Regex": "Loss=(.*?);"},
    {"Name": "validation:HR", "Regex": "validation:HR@[0-9]+=(.*?);"},
    {"Name": "validation:NDCG", "Regex": "validation:NDCG@[0-9]+=(.*?);"},
    {"Name": "test:HR", "Regex": "test:HR@[0-9]+=(.*?);"},
    {"Name": "test:NDCG", "Regex": "test:NDCG@[0-9]+=(.*?);"},
]


class Hyperparameters(Mapping):
    """Parsed, validated values; read as attributes (``hp.lr``) or as a mapping. Immutable."""

    def __init__(self, values: dict[str, Any], explicit: frozenset[str] = frozenset()):
        self._values = dict(values)
        self.explicit = explicit  # names the caller set (the rest are defaults)

    def __getattr__(self, name: str) -> Any:
        try:
            return self.__dict__["_values"][name]
        except KeyError:
            raise AttributeError(name) from None

    def __getitem__(self, name: str) -> Any:
        return self._values[name]

    def __iter__(self):
        return iter(self._values)

    def __len__(self) -> int:
        return len(self._values)

    def to_dict(self) -> dict[str, Any]:
        return dict(self._values)

    def for_algorithm(self) -> dict[str, Any]:
        """Only the values that matter to the chosen algorithm (for the manifest and checkpoint fingerprints)."""
        return {p.name: self._values[p.name] for p in all_params() if owner(p.name) in (COMMON, self.algorithm)}

    def replace(self, **changes: Any) -> Hyperparameters:
        return parse({**self._values, **changes})


def _decode(raw: Any) -> Any:
    """A string from hyperparameters.json → the JSON value it spells, else the string itself."""
    if not isinstance(raw, str):
        return raw
    text = raw.strip()
    try:
        value = json.loads(text)
    except ValueError:
        return text
    # Framework estimators double-encode strings: '"neumf"' → 'neumf'; tolerate one more level.
    if isinstance(value, str):
        try:
            inner = json.loads(value)
            if not isinstance(inner, (dict, list)):
                return inner
        except ValueError:
            pass
    return value


def _bad(param: Param, raw: Any, wanted: str) -> UserError:
    return UserError(f"hyperparameter `{param.name}` must be {wanted}, got {raw!r}")


def _coerce(param: Param, raw: Any) -> Any:
    value = _decode(raw)
    if value is None:
        if param.default is None:
            return None
        raise _bad(param, raw, f"a {param.kind.__name__} (e.g. {param.default!r})")
    if param.column:
        if isinstance(value, (bool, float)):
            raise _bad(param, raw, "a column name or a 0-based column index")
        if isinstance(value, int):
            if value < 0:
                raise _bad(param, raw, "a column name or a 0-based column index (≥ 0)")
            return value
        if isinstance(value, str) and value:
            return value
        raise _bad(param, raw, "a column name or a 0-based column index")
    if param.kind is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, (int, float)) and value in (0, 1):
            return bool(value)
        text = str(value).strip().lower()
        if text in ("true", "yes", "y", "on", "t"):
            return True
        if text in ("false", "no", "n", "off", "f"):
            return False
        raise _bad(param, raw, "true or false")
    if param.kind is int:
        if isinstance(value, bool):
            raise _bad(param, raw, "an integer")
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        if not isinstance(value, int):
            raise _bad(param, raw, f"an integer{_range_suffix(param)}")
        return value
    if param.kind is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise _bad(param, raw, f"a number{_range_suffix(param)}")
        return float(value)
    # str with choices
    text = str(value).strip()
    if param.choices:
        lowered = text.lower()
        if lowered not in param.choices:
            raise _bad(param, raw, f"one of {', '.join(param.choices)}")
        return lowered
    return text


def _range_suffix(param: Param) -> str:
    text = param.range_text()
    return f" {text}" if text else ""


def _check_range(param: Param, value: Any, raw: Any) -> None:
    if param.kind not in (int, float) or param.column or value is None:
        return
    kind = "an integer" if param.kind is int else "a number"
    if param.low is not None and (value <= param.low if param.low_exclusive else value < param.low):
        raise _bad(param, raw, f"{kind} {param.range_text()}")
    if param.high is not None and (value >= param.high if param.high_exclusive else value > param.high):
        raise _bad(param, raw, f"{kind} {param.range_text()}")


def is_platform_key(name: str) -> bool:
    return name.startswith(_PLATFORM_PREFIXES)


def parse(raw: Mapping[str, Any] | None) -> Hyperparameters:
    """Validate a hyperparameters.json mapping (values usually strings) into typed values.

    Unknown names are refused (listing the valid ones), except keys SageMaker itself adds.
    """
    raw = dict(raw or {})
    if not isinstance(raw, dict):
        raise UserError("hyperparameters.json must hold a JSON object of name → value")
    known = by_name()
    unknown = sorted(k for k in raw if k not in known and not is_platform_key(k))
    if unknown:
        hints = [
            f"{u} (did you mean {m[0]}?)" if (m := difflib.get_close_matches(u, known, n=1)) else u for u in unknown
        ]
        raise UserError(f"unknown hyperparameter(s) {', '.join(hints)}; valid names are: {', '.join(sorted(known))}")
    values: dict[str, Any] = {}
    for param in all_params():
        if param.name in raw:
            value = _coerce(param, raw[param.name])
            _check_range(param, value, raw[param.name])
        else:
            value = param.default
        values[param.name] = value
    hp = Hyperparameters(values, frozenset(k for k in raw if k in known))
    _check_combinations(hp)
    return hp


def _check_combinations(hp: Hyperparameters) -> None:
    # Every algorithm's rules run, as every algorithm's values are parsed and range-checked, whichever is chosen.
    for algorithm in registry.algorithms().values():
        if algorithm.check is not None:
            algorithm.check(hp)
    columns = [(n, hp[n]) for n in ("user_col", "item_col", "rating_col", "timestamp_col") if hp[n] is not None]
    seen: dict[Any, str] = {}
    for name, col in columns:
        if col in seen:
            raise UserError(f"hyperparameters `{seen[col]}` and `{name}` name the same column {col!r}")
        seen[col] = name
    if hp.preset == "none":
        kinds = {type(c) for _, c in columns}
        if len(kinds) > 1:
            raise UserError("column hyperparameters must all be names or all be 0-based indices, not a mix")


def defaults() -> Hyperparameters:
    return parse({})


def markdown_table() -> str:
    """The README's hyperparameter table, generated from the declarations."""
    rows = ["| name | algorithm | type | default | allowed | meaning |", "|---|---|---|---|---|---|"]
    for p in all_params():
        kind = "column" if p.column else p.kind.__name__
        algos = owner(p.name)
        default = "—" if p.default is None else json.dumps(p.default)
        allowed, meaning = (text.replace("|", "\\|") for text in (p.range_text(), p.help))
        rows.append(f"| `{p.name}` | {algos} | {kind} | `{default}` | {allowed} | {meaning} |")
    return "\n".join(rows)
