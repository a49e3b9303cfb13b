"""Raw IDs ↔ dense indices.

IDs are kept as strings, normalized so that the same id spelled as a JSON number, a string, or a float-formatted
CSV cell ("13607.0") is one id. Everything user-facing (model artifact, API) speaks raw IDs.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence

import numpy as np
import pandas as pd

_FLOAT_INT = re.compile(r"^([+-]?\d+)\.0*$")


def normalize_id(value: object) -> str:
    """One canonical string per id: 196, "196", 196.0 and "196.0" are all "196"."""
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    if isinstance(value, (float, np.floating)):
        return str(int(value)) if float(value).is_integer() else repr(float(value))
    text = str(value).strip()
    match = _FLOAT_INT.match(text)
    return match.group(1) if match else text


def normalize_series(series: pd.Series) -> pd.Series:
    """``normalize_id`` for a column of ids (strings, categorical strings or numbers); empty/NaN become NaN.
    Works on the distinct values only (ids repeat a lot) and returns a categorical over the normalized ids (in
    order of first appearance), so no per-row string is ever built."""
    if isinstance(series.dtype, pd.CategoricalDtype):
        codes, uniques = series.cat.codes.to_numpy(), series.cat.categories
    else:
        codes, uniques = pd.factorize(series, use_na_sentinel=True)
    if pd.api.types.is_float_dtype(uniques.dtype):  # 196.0 → "196", as normalize_id does for floats
        text = pd.Series([normalize_id(u) for u in uniques], dtype="string")
    else:
        text = pd.Series(uniques, dtype="string").str.strip().str.replace(_FLOAT_INT, r"\1", regex=True)
    # Different raw spellings may normalize to one id ("196", "196.0"): factorize the normalized values again.
    merged, normalized = pd.factorize(text.mask(text == ""), use_na_sentinel=True)
    merged = np.append(merged, -1)  # code -1 (missing) stays missing
    out = merged[codes]
    seen = pd.unique(out[out >= 0])  # categories in order of first appearance in the column (one hash pass)
    remap = np.full(len(normalized) + 1, -1, dtype=np.int64)
    remap[seen] = np.arange(len(seen))
    categories = pd.Index(np.asarray(normalized, dtype=object)[seen], dtype=object)
    return pd.Series(pd.Categorical.from_codes(remap[out], categories=categories), index=series.index)


class IdIndex:
    """Raw ids (strings) in index order, and the reverse lookup."""

    def __init__(self, ids: Sequence[str] | np.ndarray):
        self.ids = np.asarray(ids, dtype=str)
        self._lookup = {raw: i for i, raw in enumerate(self.ids.tolist())}
        if len(self._lookup) != len(self.ids):
            raise ValueError("duplicate ids in IdIndex")

    def __len__(self) -> int:
        return len(self.ids)

    def __contains__(self, raw: object) -> bool:
        return normalize_id(raw) in self._lookup

    def get(self, raw: object, default: int = -1) -> int:
        return self._lookup.get(normalize_id(raw), default)

    def lookup(self, raws: Iterable[object]) -> np.ndarray:
        """Indices for raw ids; -1 where unknown."""
        get = self._lookup.get
        return np.fromiter((get(normalize_id(r), -1) for r in raws), dtype=np.int64)

    def lookup_normalized(self, values: pd.Series) -> np.ndarray:
        """Indices for an already-normalized string column (fast path for data loading); -1 where unknown."""
        return pd.Series(values, dtype="string").map(self._lookup).fillna(-1).to_numpy(dtype=np.int64)

    def raw(self, indices: np.ndarray) -> list[str]:
        return self.ids[np.asarray(indices, dtype=np.int64)].tolist()
