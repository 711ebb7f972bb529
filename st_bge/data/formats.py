"""Turn raw records into sentence-transformers training columns: anchor, positive, negative_1 ... negative_n.

Two record shapes are understood here (BEIR folders are in `retrieval_set.py`):
- 'pairs': one record per training row, with columns named by `column_mapping`
  (default: `anchor`, `positive` and any `negative*` columns);
- 'flagembedding': FlagEmbedding's `{"query": str, "pos": [str, ...], "neg": [str, ...]}`, one row per positive.
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping

from datasets import Dataset

from st_bge.data.sources import Records
from st_bge.errors import DataError

FLAGEMBEDDING_KEYS = ("query", "pos")
# FlagEmbedding's default train_group_size is 8: one positive and seven negatives per query.
DEFAULT_MAX_NEGATIVES = 7


def detect_format(records: Records) -> str:
    """'flagembedding' if the first record has `query` and a list `pos`, else 'pairs'."""
    first = records.rows[0].values
    if all(key in first for key in FLAGEMBEDDING_KEYS) and isinstance(first["pos"], list):
        return "flagembedding"
    return "pairs"


def records_to_dataset(
    records: Records,
    data_format: str,
    num_negatives: int | None = None,
    column_mapping: Mapping[str, str] | None = None,
) -> Dataset:
    """Training rows from records of `data_format` ('flagembedding' or 'pairs')."""
    if data_format == "flagembedding":
        return flagembedding_to_dataset(records, num_negatives)
    return pairs_to_dataset(records, column_mapping)


def pairs_to_dataset(records: Records, column_mapping: Mapping[str, str] | None = None) -> Dataset:
    """Rows of (anchor, positive[, negatives]) from records with one training row each.

    Args:
        records: The source records.
        column_mapping: Target column (`anchor`, `positive`, `negative` or `negative_<i>`) -> source column.
            Default: the source's own `anchor`, `positive` and `negative*` columns.

    Raises:
        DataError: a mapped column is missing, or a text is empty or not a string (naming line and field).
    """
    columns = records.columns
    if column_mapping is None:
        if not {"anchor", "positive"} <= set(columns):
            raise DataError(
                records.source,
                f"pairs data needs 'anchor' and 'positive' columns, found {columns}; name yours with "
                'column_mapping, e.g. {"anchor": "question", "positive": "answer"}',
            )
        column_mapping = {name: name for name in columns if name in ("anchor", "positive") or _is_negative(name)}
    unknown_targets = [
        name for name in column_mapping if name not in ("anchor", "positive") and not _is_negative(name)
    ]
    if unknown_targets or not {"anchor", "positive"} <= set(column_mapping):
        raise DataError(
            records.source,
            f"column_mapping must map 'anchor', 'positive' and optionally 'negative' or 'negative_<i>' to source "
            f"columns, got {dict(column_mapping)}",
        )
    targets = _ordered_targets(column_mapping)
    data: dict[str, list[str]] = {target: [] for target in targets}
    for record in records.rows:
        for target in targets:
            source_column = column_mapping[target]
            if source_column not in record.values:
                close = difflib.get_close_matches(source_column, list(record.values), n=1)
                hint = f" (did you mean '{close[0]}'?)" if close else ""
                raise DataError(records.source, f"missing column{hint}", line=record.line, field=source_column)
            data[target].append(_text(records.source, record.line, source_column, record.values[source_column]))
    return Dataset.from_dict(data)


def flagembedding_to_dataset(records: Records, num_negatives: int | None = None) -> Dataset:
    """Rows of (anchor, positive, negative_1..n) from FlagEmbedding lines: one row per positive.

    Args:
        records: `{"query", "pos", "neg"}` records (`prompt`, `type`, `*_scores` fields are ignored).
        num_negatives: Hard negatives per row; default: the fewest any record has (so every row is complete), at
            most `DEFAULT_MAX_NEGATIVES`.

    Raises:
        DataError: a missing or empty field, or a record with fewer negatives than `num_negatives`.
    """
    parsed = []
    for record in records.rows:
        values = record.values
        for key in FLAGEMBEDDING_KEYS:
            if key not in values:
                raise DataError(records.source, "missing field", line=record.line, field=key)
        query = _text(records.source, record.line, "query", values["query"])
        positives = _text_list(records.source, record.line, "pos", values["pos"])
        negatives = _text_list(records.source, record.line, "neg", values.get("neg", []), allow_empty=True)
        parsed.append((record.line, query, positives, negatives))
    if num_negatives is None:
        num_negatives = min(DEFAULT_MAX_NEGATIVES, *(len(negatives) for *_, negatives in parsed))
    data: dict[str, list[str]] = {"anchor": [], "positive": []}
    data.update({f"negative_{i}": [] for i in range(1, num_negatives + 1)})
    for line, query, positives, negatives in parsed:
        if len(negatives) < num_negatives:
            raise DataError(
                records.source,
                f"has {len(negatives)} negatives, fewer than num_negatives={num_negatives}",
                line=line,
                field="neg",
            )
        for positive in positives:
            data["anchor"].append(query)
            data["positive"].append(positive)
            for i in range(num_negatives):
                data[f"negative_{i + 1}"].append(negatives[i])
    return Dataset.from_dict(data)


def _is_negative(name: str) -> bool:
    return name == "negative" or (name.startswith("negative_") and name.removeprefix("negative_").isdigit())


def _ordered_targets(column_mapping: Mapping[str, str]) -> list[str]:
    negatives = sorted((name for name in column_mapping if _is_negative(name)), key=lambda n: (len(n), n))
    return ["anchor", "positive", *negatives]


def _text(source: str, line: int, field: str, value: object) -> str:
    if not isinstance(value, str):
        raise DataError(source, f"expected text, got {type(value).__name__}", line=line, field=field)
    if not value.strip():
        raise DataError(source, "empty text", line=line, field=field)
    return value


def _text_list(source: str, line: int, field: str, value: object, *, allow_empty: bool = False) -> list[str]:
    if not isinstance(value, list):
        raise DataError(source, f"expected a list of texts, got {type(value).__name__}", line=line, field=field)
    if not value and not allow_empty:
        raise DataError(source, "empty list", line=line, field=field)
    return [_text(source, line, f"{field}[{i}]", item) for i, item in enumerate(value)]
