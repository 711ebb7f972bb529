"""Read raw records from a local file (jsonl, json, csv, parquet) or a Hub dataset id.

Each record keeps the line (jsonl, csv) or row (json, parquet, Hub) it came from, so that every later check can
name the exact place of a problem. Reading never changes the user's files.
"""

from __future__ import annotations

import csv
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from st_bge.errors import DataError
from st_bge.storage import HUB_ID

LOCAL_SUFFIXES = (".jsonl", ".json", ".csv", ".parquet")


@dataclass(frozen=True)
class Record:
    """One input record and the 1-based line or row it was read from."""

    line: int
    values: dict[str, Any]


@dataclass(frozen=True)
class Records:
    """The records of one source, with the source's name for error messages."""

    source: str
    rows: list[Record]

    @property
    def columns(self) -> list[str]:
        """Column names in first-seen order."""
        seen: dict[str, None] = {}
        for record in self.rows:
            seen.update(dict.fromkeys(record.values))
        return list(seen)


def read_records(
    name_or_path: str, *, split: str = "train", config_name: str | None = None, revision: str | None = None
) -> Records:
    """Read a local data file, or a split of a Hub dataset, into `Records`.

    Raises:
        DataError: the file is missing, not decodable as UTF-8, or holds a malformed record (named by line).
    """
    path = Path(name_or_path)
    if path.is_file():
        suffix = path.suffix.lower()
        if suffix not in LOCAL_SUFFIXES:
            raise DataError(path, f"unsupported file type '{suffix}'; use one of {', '.join(LOCAL_SUFFIXES)}")
        readers = {".jsonl": _read_jsonl, ".json": _read_json, ".csv": _read_csv, ".parquet": _read_parquet}
        rows = readers[suffix](path)
    elif path.exists():
        raise DataError(path, "is a folder; give a data file, or a BEIR folder with dataset_format 'beir'")
    elif is_hub_dataset_id(name_or_path):
        rows = _read_hub(name_or_path, split=split, config_name=config_name, revision=revision)
    else:
        raise DataError(path, "file not found")
    if not rows:
        raise DataError(name_or_path, "holds no records")
    return Records(str(name_or_path), rows)


def is_hub_dataset_id(name: str) -> bool:
    """A name that is no local file or folder and has the shape of a Hub dataset id (`user/name`, no data suffix)."""
    return not Path(name).exists() and bool(HUB_ID.match(name)) and not name.endswith(LOCAL_SUFFIXES)


def records_in_memory(rows: Any, source: str) -> Records:
    """The rows of a `datasets.Dataset` or a pandas DataFrame (or a list of dicts) as `Records`, numbered from 1.

    Raises:
        DataError: `rows` is none of these, or holds no rows.
    """
    if hasattr(rows, "to_dict") and hasattr(rows, "columns") and not hasattr(rows, "column_names"):  # pandas
        rows = rows.to_dict(orient="records")
    if not hasattr(rows, "__iter__") or isinstance(rows, (str, bytes, dict)):
        raise DataError(
            source, f"expected a datasets.Dataset, a pandas DataFrame or a list of dicts, got {type(rows).__name__}"
        )
    records = [Record(number, dict(values)) for number, values in enumerate(rows, start=1)]
    if not records:
        raise DataError(source, "holds no records")
    return Records(source, records)


def read_text_lines(path: Path) -> list[str]:
    """The lines of a UTF-8 text file, with a clear error for another encoding."""
    try:
        return path.read_text(encoding="utf-8-sig").splitlines()
    except UnicodeDecodeError as error:
        line = path.read_bytes()[: error.start].count(b"\n") + 1
        raise DataError(path, f"not valid UTF-8 ({error.reason}); re-save the file as UTF-8", line=line) from None


def _read_jsonl(path: Path) -> list[Record]:
    rows = []
    for number, text in enumerate(read_text_lines(path), start=1):
        if not text.strip():
            continue
        try:
            values = json.loads(text)
        except json.JSONDecodeError as error:
            raise DataError(path, f"malformed JSON: {error.msg} (column {error.colno})", line=number) from None
        if not isinstance(values, dict):
            raise DataError(path, f"expected a JSON object, got {type(values).__name__}", line=number)
        rows.append(Record(number, values))
    return rows


def _read_json(path: Path) -> list[Record]:
    text = "\n".join(read_text_lines(path))
    try:
        data = json.loads(text)
    except json.JSONDecodeError as error:
        raise DataError(path, f"malformed JSON: {error.msg} (column {error.colno})", line=error.lineno) from None
    if isinstance(data, dict):  # column-oriented: {"anchor": [...], "positive": [...]}
        lengths = {len(v) for v in data.values() if isinstance(v, list)}
        if len(lengths) != 1 or not all(isinstance(v, list) for v in data.values()):
            raise DataError(path, "a JSON object must map every column to a list of the same length")
        data = [dict(zip(data, values, strict=True)) for values in zip(*data.values(), strict=True)]
    if not isinstance(data, list):
        raise DataError(path, "expected a list of records or an object of columns")
    rows = []
    for number, values in enumerate(data, start=1):
        if not isinstance(values, dict):
            raise DataError(path, f"record {number}: expected a JSON object, got {type(values).__name__}")
        rows.append(Record(number, values))
    return rows


def _read_csv(path: Path) -> list[Record]:
    lines = read_text_lines(path)
    reader = csv.DictReader(lines)
    rows = []
    for values in reader:
        if None in values:
            raise DataError(path, "more fields than the header has", line=reader.line_num)
        rows.append(Record(reader.line_num, dict(values)))
    return rows


def _read_parquet(path: Path) -> list[Record]:
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(path)
    except Exception as error:  # pyarrow raises several types for a damaged file
        raise DataError(path, f"not a readable parquet file ({error})") from None
    return [Record(number, values) for number, values in enumerate(table.to_pylist(), start=1)]


def _read_hub(name: str, *, split: str, config_name: str | None, revision: str | None) -> list[Record]:
    import datasets

    try:
        dataset = datasets.load_dataset(name, config_name, split=split, revision=revision)
    except Exception as error:  # datasets raises many types; the user needs the reason, not the trace
        raise DataError(name, f"not a local file or folder, and {_hub_failure(error, split)}") from None
    return [Record(number, values) for number, values in enumerate(dataset, start=1)]


def _hub_failure(error: Exception, split: str) -> str:
    """One plain sentence for why a Hub dataset could not be loaded, instead of a stack of HTTP errors."""
    from datasets.exceptions import DatasetNotFoundError

    if isinstance(error, DatasetNotFoundError):
        return "no such dataset on the Hub (if it is private or gated, log in with `hf auth login` or set HF_TOKEN)"
    if isinstance(error, ConnectionError) or "OfflineModeIsEnabled" in str(error):
        offline = " (HF_HUB_OFFLINE is set)" if os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "") else ""
        return f"the Hub could not be reached{offline} and it is not in the local datasets cache"
    if isinstance(error, ValueError) and "split" in str(error).lower():
        return f"it has no split '{split}': {error}"
    return f"it could not be loaded from the Hub: {type(error).__name__}: {error}"
