"""Reading a channel's files into one raw table: CSV / TSV / ``::``-separated / Parquet, optionally gzip-compressed.

Format comes from the content (Parquet and gzip magic bytes, then the separator seen in the first line), with the
file name as a hint, so misnamed files still work and files that are none of these fail with a message naming them.
CSV cells are read as strings; Parquet keeps its integer and floating-point columns as numbers and its string
columns as pandas categoricals (one Python string per distinct value, not per row: ids repeat a lot, and a 20M-row
log would otherwise hold 40M+ string objects); other Parquet types become strings. Presets decide what each column
means.
"""

from __future__ import annotations

import gzip
import io
import logging
import time
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from recsys.platform.errors import UserError
from recsys.platform.progress import Progress

log = logging.getLogger(__name__)

_SKIP_NAMES = {"_SUCCESS", "manifest", ".DS_Store"}
_SKIP_SUFFIXES = (".crc", ".json", ".md", ".manifest")
PARQUET_MAGIC = b"PAR1"
GZIP_MAGIC = b"\x1f\x8b"


@dataclass
class RawTable:
    frame: pd.DataFrame  # strings (object/str or categorical) or, from Parquet, numbers; NaN for empty cells
    files: list[str]
    malformed_rows: int  # lines that could not be split into the expected columns (skipped)
    header: bool = True  # False: columns are positions 0..n-1


def list_files(directory: Path) -> list[Path]:
    """Data files under a channel directory, recursively, in a stable order; hidden and marker files skipped."""
    if not directory.exists():
        return []
    if directory.is_file():
        return [directory]
    files = []
    for path in sorted(directory.rglob("*")):
        rel = path.relative_to(directory)
        if any(part.startswith(".") for part in rel.parts) or not path.is_file():
            continue
        if path.name in _SKIP_NAMES or path.name.lower().endswith(_SKIP_SUFFIXES):
            continue
        files.append(path)
    return files


def _sniff_separator(first_line: str) -> str:
    for sep in ("::", "\t", ",", ";", "|"):
        if sep in first_line:
            return sep
    return r"\s+"


def read_file(path: Path, header: bool, usecols: list[int] | None = None) -> tuple[pd.DataFrame, int]:
    """One file → (string frame, malformed line count). ``header=False`` gives integer column labels."""
    try:
        with path.open("rb") as fh:
            head = fh.read(4)
    except OSError as exc:
        raise UserError(f"cannot read input file {path}: {exc.strerror or exc}") from None
    if head == PARQUET_MAGIC:
        return _read_parquet(path), 0
    try:
        raw = path.read_bytes()
        if head[:2] == GZIP_MAGIC:
            raw = gzip.decompress(raw)
            if raw[:4] == PARQUET_MAGIC:
                return _read_parquet(io.BytesIO(raw), path), 0
    except (OSError, EOFError, gzip.BadGzipFile) as exc:
        raise UserError(f"cannot read input file {path}: {exc}") from None
    if not raw.strip():
        raise UserError(f"input file {path} is empty")
    text_sample, encoding = _sniff_text(raw, path)
    first_line = text_sample.splitlines()[0] if text_sample.splitlines() else ""
    sep = _sniff_separator(first_line)
    if sep == "::":  # MovieLens ratings.dat; the C parser takes single-char separators only
        raw = raw.replace(b"::", b"\t")
        sep = "\t"
    lines = raw.count(b"\n") + (0 if raw.endswith(b"\n") else 1)
    try:
        frame = pd.read_csv(
            io.BytesIO(raw),
            sep=sep,
            header=0 if header else None,
            dtype=str,
            keep_default_na=False,
            na_values=[""],
            encoding=encoding,
            on_bad_lines="skip",
            skip_blank_lines=True,
            engine="python" if sep == r"\s+" else "c",
            usecols=usecols,
        )
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError, ValueError) as exc:
        raise UserError(f"input file {path} could not be parsed as CSV/TSV: {str(exc).splitlines()[0]}") from None
    blank = raw.count(b"\n\n") + raw.count(b"\r\n\r\n")
    malformed = max(0, lines - blank - (1 if header else 0) - len(frame))
    frame.columns = [c.strip() for c in frame.columns] if header else list(range(frame.shape[1]))
    return frame, malformed


def _sniff_text(raw: bytes, path: Path) -> tuple[str, str]:
    """(the decoded first 64 KiB, the whole file's encoding); binary content is refused."""
    sample = raw[:65536]
    try:
        text_sample = sample.decode("utf-8")
    except UnicodeDecodeError:
        try:
            text_sample = sample.decode("latin-1")
        except UnicodeDecodeError:  # pragma: no cover - latin-1 decodes every byte
            text_sample = ""
    if b"\x00" in sample or _mostly_binary(text_sample):
        raise UserError(f"input file {path} is not a CSV/TSV or Parquet file (binary content)")
    try:
        raw.decode("utf-8")
        return text_sample, "utf-8"
    except UnicodeDecodeError:
        return text_sample, "latin-1"


def _is_parquet(path: Path) -> bool:
    with path.open("rb") as fh:
        head = fh.read(4)
    return head == PARQUET_MAGIC


def _mostly_binary(text: str) -> bool:
    if not text:
        return True
    printable = sum(ch.isprintable() or ch in "\r\n\t" for ch in text)
    return printable / len(text) < 0.95


def _read_parquet(source, name: Path | None = None) -> pd.DataFrame:
    try:
        table = pq.read_table(source)
    except Exception as exc:  # pyarrow raises several types for corrupt files
        raise UserError(f"input file {name or source} is not a readable Parquet file: {exc}") from None
    columns = {}
    for name, column in zip(table.column_names, table.columns):
        kind = column.type
        if pa.types.is_integer(kind) or pa.types.is_floating(kind):
            columns[name] = column.to_pandas()  # nulls → NaN (integers with nulls become floats)
        elif pa.types.is_string(kind) or pa.types.is_large_string(kind) or pa.types.is_dictionary(kind):
            dictionary = pc.dictionary_encode(column.cast(pa.string()) if pa.types.is_dictionary(kind) else column)
            columns[name] = dictionary.to_pandas()  # categorical over the distinct strings
        else:
            values = column.to_pandas()
            columns[name] = values.astype("string").astype(object).where(values.notna(), None)
    return pd.DataFrame(columns, columns=table.column_names)


def read_channel(
    directory: Path, channel: str, header: bool, usecols: list[int] | None = None, files: list[Path] | None = None
) -> RawTable:
    """All files of a channel (or just ``files``) concatenated. Files must agree on columns (by name with a header)."""
    files = list_files(directory) if files is None else files
    if not files:
        raise UserError(
            f"channel `{channel}` has no data files at {directory}; give the training job a `{channel}` channel "
            "with CSV, TSV or Parquet files"
        )
    frames, malformed, rows = [], 0, 0
    progress = Progress(f"loading channel {channel}", len(files), "files")
    for number, path in enumerate(files, 1):
        frame, bad = read_file(path, header=header, usecols=usecols)
        rows += len(frame)
        elapsed = max(1e-9, time.monotonic() - progress.started)
        progress.update(number, note=f"{rows:,} rows, {rows / elapsed:,.0f} rows/s, last {path.name}")
        if frame.empty:
            log.warning("input file %s has no rows; skipped", path)
            continue
        frame.attrs["source"] = str(path)
        frames.append(frame)
        malformed += bad
    if not frames:
        raise UserError(f"channel `{channel}` at {directory}: every file is empty ({', '.join(map(str, files))})")
    reference = frames[0]
    for frame in frames[1:]:
        if header and set(frame.columns) != set(reference.columns):
            raise UserError(
                f"channel `{channel}`: {frame.attrs['source']} has columns {list(frame.columns)} but "
                f"{reference.attrs['source']} has {list(reference.columns)}; all files of a channel must share columns"
            )
    combined = pd.concat(frames, ignore_index=True) if len(frames) > 1 else frames[0]
    elapsed = time.monotonic() - progress.started
    log.info("channel %s: read %d rows from %d file(s) in %.1f s (%.0f rows/s)", channel, rows, len(files), elapsed,
             rows / max(elapsed, 1e-9))  # fmt: skip
    combined.attrs["files"] = [str(p) for p in files]
    return RawTable(combined, [str(p) for p in files], malformed, header=header or _is_parquet(files[0]))
