"""What a channel's columns mean, per preset, and the cleaning that turns raw rows into (user, item, weight, time).

Presets:
- ``movielens``: u.data (tab, no header: user item rating time), ratings.dat (``::``), or ratings.csv (header).
- ``online_retail``: UCI Online Retail transactions. Rows without a customer, cancellations (``C`` invoices) and
  non-positive quantities are dropped; quantity is summed per (customer, item) as implicit confidence.
- ``none``: the ``*_col`` hyperparameters name the columns (or well-known names are recognised).

Every dropped row is counted under a reason; nothing is lost silently.
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from recsys.data.ids import normalize_series
from recsys.data.readers import list_files, read_channel
from recsys.platform.errors import UserError
from recsys.training.hyperparameters import Hyperparameters

log = logging.getLogger(__name__)

# Well-known column names (lower-case) recognised when *_col is not set.
KNOWN = {
    "user": ("user", "user_id", "userid", "customer_id", "customerid", "customer", "visitor_id", "member_id", "uid"),
    "item": (
        "item",
        "item_id",
        "itemid",
        "product_id",
        "productid",
        "product",
        "movie_id",
        "movieid",
        "stockcode",
        "sku",
        "iid",
        "article_id",
    ),
    "rating": ("rating", "weight", "score", "quantity", "count", "value", "confidence", "clicks", "plays"),
    "timestamp": ("timestamp", "time", "ts", "date", "datetime", "event_time", "invoicedate", "created_at"),
}
MOVIELENS_FILES = ("u.data", "ratings.dat", "ratings.csv")
RETAIL = {
    "user": "CustomerID",
    "item": "StockCode",
    "rating": "Quantity",
    "timestamp": "InvoiceDate",
    "invoice": "InvoiceNo",
}


@dataclass
class CleanFrame:
    """Clean rows: columns user, item (normalized strings), weight (float), timestamp (float seconds or absent)."""

    frame: pd.DataFrame
    has_timestamps: bool
    rows_read: int
    dropped: Counter = field(default_factory=Counter)
    merged_duplicates: int = 0
    files: list[str] = field(default_factory=list)

    def report(self) -> dict:
        return {
            "files": self.files,
            "rows_read": self.rows_read,
            "rows_dropped": dict(self.dropped),
            "duplicate_rows_merged": self.merged_duplicates,
            "interactions": len(self.frame),
        }


def load_channel(directory: Path, channel: str, hp: Hyperparameters) -> CleanFrame:
    """Read and clean one channel according to ``hp.preset`` and the ``*_col`` hyperparameters."""
    columns = {k: hp[f"{k}_col"] for k in ("user", "item", "rating", "timestamp")}
    explicit = {k for k, v in columns.items() if v is not None}
    by_index = any(isinstance(v, int) for v in columns.values() if v is not None)

    if hp.preset == "movielens":
        files = list_files(directory)
        ratings = [p for p in files if p.name.removesuffix(".gz") in MOVIELENS_FILES]
        files = ratings or files  # a whole MovieLens folder also holds u.item, u.user, README, ...
        header = any(p.name.startswith("ratings.csv") for p in files)  # ml-latest has a header; u.data does not
        table = read_channel(directory, channel, header=header and not by_index, files=files)
        if not table.header:
            defaults = {"user": 0, "item": 1, "rating": 2, "timestamp": 3}
        else:
            defaults = {"user": "userId", "item": "movieId", "rating": "rating", "timestamp": "timestamp"}
        mapping = {k: columns[k] if columns[k] is not None else defaults[k] for k in defaults}
        return _clean(table, mapping, explicit | {"user", "item"}, aggregate="last", channel=channel)

    if hp.preset == "online_retail":
        table = read_channel(directory, channel, header=not by_index)
        mapping = {
            k: columns[k] if columns[k] is not None else RETAIL[k] for k in ("user", "item", "rating", "timestamp")
        }
        return _clean(
            table,
            mapping,
            {"user", "item", "rating"} | explicit,
            aggregate="sum",
            channel=channel,
            retail_invoice=RETAIL["invoice"],
        )

    table = read_channel(directory, channel, header=not by_index)
    mapping = dict(columns)
    if not by_index:
        lowered = {str(c).lower(): c for c in table.frame.columns}
        for key, value in mapping.items():
            if value is None:
                mapping[key] = next((lowered[n] for n in KNOWN[key] if n in lowered), None)
        for key in ("user", "item"):
            if mapping[key] is None:
                raise UserError(
                    f"channel `{channel}`: no {key} column found among {list(table.frame.columns)}; set the "
                    f"`{key}_col` hyperparameter (a column name, or a 0-based index for files without a header) "
                    "or a `preset`"
                )
    elif mapping["user"] is None or mapping["item"] is None:
        raise UserError("with 0-based column indices, set both `user_col` and `item_col`")
    return _clean(table, mapping, explicit | {"user", "item"}, aggregate="sum", channel=channel)


def _resolve(frame: pd.DataFrame, positional: bool, col, key: str, channel: str, files: list[str]):
    if col is None:
        return None
    if isinstance(col, int):
        if col < len(frame.columns):  # Parquet / headered file addressed by position
            return frame.columns[col]
        raise UserError(
            f"channel `{channel}`: `{key}_col` is column index {col} but {', '.join(files)} has only "
            f"{len(frame.columns)} column(s)"
        )
    if col in frame.columns:
        return col
    lowered = {str(c).lower(): c for c in frame.columns}
    if str(col).lower() in lowered:
        return lowered[str(col).lower()]
    shown = f"{len(frame.columns)} unnamed columns (no header)" if positional else list(frame.columns)
    raise UserError(
        f"channel `{channel}`: column {col!r} (`{key}_col`) not found in {', '.join(files)}; columns are {shown}"
    )


class _RowFilter:
    """Which rows survive cleaning; each dropped row is counted once, under the first reason that dropped it."""

    def __init__(self, n_rows: int, dropped: Counter):
        self.keep = np.ones(n_rows, dtype=bool)
        self.dropped = dropped

    def drop(self, mask: np.ndarray, reason: str) -> None:
        newly = mask & self.keep
        if newly.any():
            self.dropped[reason] += int(newly.sum())
            self.keep &= ~mask


def _resolve_columns(table, mapping: dict, required: set, channel: str) -> dict:
    resolved = {}
    for key, col in mapping.items():
        try:
            resolved[key] = _resolve(table.frame, not table.header, col, key, channel, table.files)
        except UserError:
            if key in required:
                raise
            resolved[key] = None  # optional default column absent: weights 1 / no timestamps
    if resolved["user"] is None or resolved["item"] is None:
        raise UserError(f"channel `{channel}`: user and item columns are required")
    return resolved


def _filtered_columns(frame, resolved: dict, rows: _RowFilter, retail_invoice: str | None) -> dict:
    """The user, item, weight (and timestamp) columns, dropping unusable rows in a fixed order of reasons."""
    users = normalize_series(frame[resolved["user"]])
    items = normalize_series(frame[resolved["item"]])
    if retail_invoice is not None:
        rows.drop(users.isna().to_numpy(), "no customer id")
        if retail_invoice in frame.columns:
            invoice = frame[retail_invoice].astype("string").str.strip().str.upper()
            rows.drop(invoice.str.startswith("C").fillna(False).to_numpy(dtype=bool), "cancelled invoice")
    rows.drop(users.isna().to_numpy(), "missing user id")
    rows.drop(items.isna().to_numpy(), "missing item id")
    if resolved["rating"] is not None:
        weights = numbers(frame[resolved["rating"]])
        rows.drop(~np.isfinite(weights), "missing or non-numeric rating/weight")
        if retail_invoice is not None:
            rows.drop(np.nan_to_num(weights, nan=0.0) <= 0, "non-positive quantity")
    else:
        weights = np.ones(len(frame), dtype=np.float64)
    columns = {"user": users, "item": items, "weight": weights}
    if resolved["timestamp"] is not None:
        stamps = _parse_timestamps(frame[resolved["timestamp"]])
        rows.drop(~np.isfinite(stamps), "missing or unparseable timestamp")
        columns["timestamp"] = stamps
    return columns


def _clean(
    table, mapping: dict, required: set, aggregate: str, channel: str, retail_invoice: str | None = None
) -> CleanFrame:
    frame, files = table.frame, table.files
    dropped: Counter = Counter()
    if table.malformed_rows:
        dropped["malformed line (wrong number of fields)"] += table.malformed_rows
    rows_read = len(frame) + table.malformed_rows
    resolved = _resolve_columns(table, mapping, required, channel)
    rows = _RowFilter(len(frame), dropped)
    columns = _filtered_columns(frame, resolved, rows, retail_invoice)
    keep = rows.keep
    out = pd.DataFrame(
        {
            "user": columns["user"][keep].array,  # categorical: codes, not one string per row
            "item": columns["item"][keep].array,
            "weight": columns["weight"][keep],
        }
    )
    has_ts = "timestamp" in columns
    if has_ts:
        out["timestamp"] = columns["timestamp"][keep]
    before = len(out)
    if before and out.duplicated(["user", "item"]).any():
        out = _merge_duplicates(out, aggregate, has_ts)
    for reason, count in sorted(dropped.items()):
        log.warning("channel %s: dropped %d row(s): %s", channel, count, reason)
    if out.empty:
        raise UserError(
            f"channel `{channel}`: no usable rows in {', '.join(files)} (read {rows_read}, dropped {dict(dropped)})"
        )
    return CleanFrame(out.reset_index(drop=True), has_ts, rows_read, dropped, before - len(out), files)


def _parse_timestamps(column: pd.Series) -> np.ndarray:
    numeric = numbers(column)
    if (~np.isnan(numeric)).sum() >= max(1, int(0.5 * column.notna().sum())):
        return numeric
    parsed = pd.to_datetime(column, errors="coerce")
    if parsed.isna().mean() > 0.5:  # first value's format did not fit most rows: parse each on its own
        parsed = pd.to_datetime(column, errors="coerce", format="mixed")
    seconds = parsed.astype("int64").to_numpy(dtype=np.float64) / 1e9
    seconds[parsed.isna().to_numpy()] = np.nan
    return seconds


def numbers(column: pd.Series) -> np.ndarray:
    """A column as float64 (NaN where not a number); a categorical is converted once per distinct value."""
    if isinstance(column.dtype, pd.CategoricalDtype):
        values = pd.to_numeric(pd.Series(column.cat.categories), errors="coerce").to_numpy(dtype=np.float64)
        codes = column.cat.codes.to_numpy()
        return np.where(codes >= 0, values[np.maximum(codes, 0)] if len(values) else np.nan, np.nan)
    return pd.to_numeric(column, errors="coerce").to_numpy(dtype=np.float64)


def _merge_duplicates(out: pd.DataFrame, aggregate: str, has_ts: bool) -> pd.DataFrame:
    """Repeated (user, item) rows become one: quantities summed (implicit) or the latest rating kept (explicit)."""
    if aggregate == "sum":
        agg = {"weight": "sum", **({"timestamp": "max"} if has_ts else {})}
        # observed: only the (user, item) pairs present, not every category combination.
        return out.groupby(["user", "item"], sort=False, as_index=False, observed=True).agg(agg)
    if has_ts:
        out = out.sort_values("timestamp", kind="stable")
    return out.drop_duplicates(["user", "item"], keep="last")
