"""Turn raw records into sentence-transformers training columns: anchor, positive, negative_1 ... negative_n.

Three record shapes are understood here (BEIR folders and LlamaIndex files are in `retrieval_set.py`):
- 'pairs': one record per training row, with columns named by `column_mapping`
  (default: `anchor`, `positive` and any `negative*` columns);
- 'flagembedding': FlagEmbedding's `{"query": str, "pos": [str, ...], "neg": [str, ...]}`, one row per positive;
  with a teacher's `pos_scores` / `neg_scores` (a number per positive / negative, e.g. from `st-bge data score`)
  the rows also get `scores` = [its positive's score, its negatives' scores], the labels of distillation losses;
- 'rag_logs': a RAG system's retrieval log, one line per query with what it retrieved, in rank order, and which
  documents the user found helpful: `{"query": str, "retrieved": [{"text": str, "helpful": bool}, ...]}`.
  Helpful documents are positives; unhelpful ones ranked `RAG_LOG_FIRST_NEGATIVE_RANK` or lower are negatives.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from collections.abc import Mapping
from dataclasses import dataclass

from datasets import Dataset

from st_bge.data.sources import Records
from st_bge.errors import DataError, did_you_mean

logger = logging.getLogger(__name__)

FLAGEMBEDDING_KEYS = ("query", "pos")
SCORE_KEYS = ("pos_scores", "neg_scores")
# The teacher scores' column: sentence-transformers hands a column of this name to the loss as its labels.
SCORES_COLUMN = "scores"
RAG_LOG_KEYS = ("query", "retrieved")
# FlagEmbedding's default train_group_size is 8: one positive and seven negatives per query.
DEFAULT_MAX_NEGATIVES = 7
# An unhelpful document in the top 3 was probably read and may well be relevant (the user had their answer, or
# another document said the same); lower-ranked ones are safer negatives.
RAG_LOG_FIRST_NEGATIVE_RANK = 4


@dataclass(frozen=True)
class QueryGroup:
    """One query with its positives and negatives, and where it came from (for error messages)."""

    line: int
    query: str
    positives: list[str]
    negatives: list[str]
    negatives_field: str
    positive_scores: list[float] | None = None
    negative_scores: list[float] | None = None


# Keys that, beside `query`, mark a record as FlagEmbedding's (also its near misses: `pos` as a string, `positive`
# for `pos`), so that a slip gets FlagEmbedding's own line/field error rather than the pairs format's.
FLAGEMBEDDING_MARKERS = ("pos", "neg", *SCORE_KEYS, "positive", "positives", "negative", "negatives")
# Near misses of FlagEmbedding's keys -> the key they stand for.
FLAGEMBEDDING_ALIASES = {"positive": "pos", "positives": "pos", "negative": "neg", "negatives": "neg"}


def detect_format(records: Records) -> str:
    """'rag_logs' for `query` + `retrieved`, 'flagembedding' for `query` + `pos` (or a near miss of FlagEmbedding's
    keys, `FLAGEMBEDDING_MARKERS`), else 'pairs'."""
    first = records.rows[0].values
    if "query" in first and "retrieved" in first:
        return "rag_logs"
    if "query" in first and any(key in first for key in FLAGEMBEDDING_MARKERS):
        return "flagembedding"
    return "pairs"


def records_to_dataset(
    records: Records,
    data_format: str,
    num_negatives: int | None = None,
    column_mapping: Mapping[str, str] | None = None,
) -> Dataset:
    """Training rows from records of `data_format` ('flagembedding', 'rag_logs' or 'pairs')."""
    if data_format == "flagembedding":
        return flagembedding_to_dataset(records, num_negatives)
    if data_format == "rag_logs":
        return rag_logs_to_dataset(records, num_negatives)
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
    column_mapping = column_mapping or default_column_mapping(records)
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
            _require(records.source, record.line, record.values, (source_column,), noun="column")
            data[target].append(_text(records.source, record.line, source_column, record.values[source_column]))
    return Dataset.from_dict(data)


def default_column_mapping(records: Records) -> dict[str, str]:
    """The source's own `anchor`, `positive` and `negative*` columns; two columns of other names are taken by
    order (as sentence-transformers trains them: `by_column_order` says so).

    Raises:
        DataError: neither, naming the columns found and the `column_mapping` to write.
    """
    columns = records.columns
    if by_column_order(records):
        return {"anchor": columns[0], "positive": columns[1]}
    if not {"anchor", "positive"} <= set(columns):
        raise DataError(
            records.source,
            f"pairs data needs 'anchor' and 'positive' columns, found {columns}; name yours with "
            'column_mapping, e.g. {"anchor": "question", "positive": "answer"}',
        )
    return {name: name for name in columns if name in ("anchor", "positive") or _is_negative(name)}


def by_column_order(records: Records) -> str | None:
    """For two columns of other names than anchor/positive, how they are taken (by order), in words; else None."""
    columns = records.columns
    if len(columns) == 2 and not {"anchor", "positive"} & set(columns):
        return f"columns taken by order: {columns[0]} -> anchor, {columns[1]} -> positive (column_mapping chooses)"
    return None


def flagembedding_to_dataset(records: Records, num_negatives: int | None = None) -> Dataset:
    """Rows of (anchor, positive, negative_1..n) from FlagEmbedding lines: one row per positive.

    Args:
        records: `{"query", "pos", "neg"}` records, with `pos_scores` / `neg_scores` if the first record has them
            (then every record must); `prompt` and `type` are ignored.
        num_negatives: Hard negatives per row; default: the fewest any record has (so every row is complete), at
            most `DEFAULT_MAX_NEGATIVES`.

    Raises:
        DataError: a missing or empty field, a record with fewer negatives than `num_negatives`, or teacher scores
            that are not one number per positive / negative.
    """
    with_scores = any(key in records.rows[0].values for key in SCORE_KEYS)
    groups = []
    for record in records.rows:
        values, line = record.values, record.line
        for alias, key in FLAGEMBEDDING_ALIASES.items():
            if alias in values and key not in values:
                raise DataError(
                    records.source,
                    f"FlagEmbedding data names this list '{key}', not '{alias}': rename the key",
                    line=line,
                    field=alias,
                )
        _require(records.source, line, values, FLAGEMBEDDING_KEYS + (SCORE_KEYS if with_scores else ()))
        query = _text(records.source, line, "query", values["query"])
        positives = _text_list(records.source, line, "pos", values["pos"])
        negatives = _text_list(records.source, line, "neg", values.get("neg", []), allow_empty=True)
        group = QueryGroup(line, query, positives, negatives, negatives_field="neg")
        if with_scores:
            group = dataclasses.replace(
                group,
                positive_scores=_scores(records.source, line, "pos_scores", values["pos_scores"], len(positives)),
                negative_scores=_scores(records.source, line, "neg_scores", values["neg_scores"], len(negatives)),
            )
        groups.append(group)
    return groups_to_dataset(records.source, groups, num_negatives)


def rag_logs_to_dataset(records: Records, num_negatives: int | None = None) -> Dataset:
    """Rows of (anchor, positive, negative_1..n) from a RAG retrieval log: one row per helpful document.

    A query without any helpful document teaches nothing about what is relevant and is skipped (and counted in
    the log); an unhelpful document above `RAG_LOG_FIRST_NEGATIVE_RANK` is neither positive nor negative.

    Raises:
        DataError: a missing field, an empty text, `helpful` that is not true/false, or no helpful document at all.
    """
    groups = []
    for record in records.rows:
        values = record.values
        _require(records.source, record.line, values, RAG_LOG_KEYS)
        query = _text(records.source, record.line, "query", values["query"])
        retrieved = values["retrieved"]
        if not isinstance(retrieved, list):
            raise DataError(
                records.source,
                f"expected a list of documents, got {type(retrieved).__name__}",
                line=record.line,
                field="retrieved",
            )
        positives, negatives = [], []
        for rank, item in enumerate(retrieved, start=1):
            text, helpful = _retrieved_document(records.source, record.line, f"retrieved[{rank - 1}]", item)
            if helpful:
                positives.append(text)
            elif rank >= RAG_LOG_FIRST_NEGATIVE_RANK:
                negatives.append(text)
        if positives:
            groups.append(QueryGroup(record.line, query, positives, negatives, negatives_field="retrieved"))
    if not groups:
        raise DataError(records.source, "no query has a helpful document, so there are no positives to train on")
    if len(groups) < len(records.rows):
        logger.info(
            "%s: %d of %d queries have no helpful document and are skipped",
            records.source,
            len(records.rows) - len(groups),
            len(records.rows),
        )
    return groups_to_dataset(records.source, groups, num_negatives)


def groups_to_dataset(source: str, groups: list[QueryGroup], num_negatives: int | None = None) -> Dataset:
    """One (anchor, positive, negative_1..n) row per positive of each group, every row with n negatives.

    Raises:
        DataError: a group has fewer negatives than `num_negatives`.
    """
    if num_negatives is None:
        num_negatives = min(DEFAULT_MAX_NEGATIVES, *(len(group.negatives) for group in groups))
    data: dict[str, list] = {"anchor": [], "positive": []}
    data.update({f"negative_{i}": [] for i in range(1, num_negatives + 1)})
    with_scores = groups[0].positive_scores is not None
    if with_scores:
        data[SCORES_COLUMN] = []
    for group in groups:
        if len(group.negatives) < num_negatives:
            raise DataError(
                source,
                f"has {len(group.negatives)} negatives, fewer than num_negatives={num_negatives}",
                line=group.line,
                field=group.negatives_field,
            )
        for index, positive in enumerate(group.positives):
            data["anchor"].append(group.query)
            data["positive"].append(positive)
            for i in range(num_negatives):
                data[f"negative_{i + 1}"].append(group.negatives[i])
            if with_scores:
                data[SCORES_COLUMN].append([group.positive_scores[index], *group.negative_scores[:num_negatives]])
    return Dataset.from_dict(data)


def _retrieved_document(source: str, line: int, field: str, item: object) -> tuple[str, bool]:
    if not isinstance(item, dict):
        raise DataError(
            source, f"expected an object with 'text' and 'helpful', got {type(item).__name__}", line=line, field=field
        )
    _require(source, line, item, ("text", "helpful"), prefix=f"{field}.")
    if not isinstance(item["helpful"], bool):
        raise DataError(
            source, f"expected true or false, got {item['helpful']!r}", line=line, field=f"{field}.helpful"
        )
    return _text(source, line, f"{field}.text", item["text"]), item["helpful"]


def _require(
    source: str,
    line: int,
    values: Mapping[str, object],
    keys: tuple[str, ...],
    *,
    prefix: str = "",
    noun: str = "field",
) -> None:
    """Raise for the first of `keys` missing from `values`, suggesting a close spelling that is there."""
    for key in keys:
        if key not in values:
            raise DataError(source, f"missing {noun}{did_you_mean(key, values)}", line=line, field=f"{prefix}{key}")


def text_columns(columns: list[str]) -> list[str]:
    """The text columns of training rows, in order: anchor, positive, negative_1..n (not labels such as scores)."""
    return _ordered_targets({name: name for name in columns if name in ("anchor", "positive") or _is_negative(name)})


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


def _scores(source: str, line: int, field: str, value: object, count: int) -> list[float]:
    """A teacher's scores: a list of `count` numbers (one per text of the matching field)."""
    texts = "positives" if field == "pos_scores" else "negatives"
    if not isinstance(value, list):
        raise DataError(source, f"expected a list of numbers, got {type(value).__name__}", line=line, field=field)
    if len(value) != count:
        raise DataError(source, f"{len(value)} scores for {count} {texts}: one score per text", line=line, field=field)
    for i, score in enumerate(value):
        if isinstance(score, bool) or not isinstance(score, (int, float)) or not math.isfinite(score):
            raise DataError(source, f"expected a number, got {score!r}", line=line, field=f"{field}[{i}]")
    return [float(score) for score in value]


def _text_list(source: str, line: int, field: str, value: object, *, allow_empty: bool = False) -> list[str]:
    if not isinstance(value, list):
        raise DataError(source, f"expected a list of texts, got {type(value).__name__}", line=line, field=field)
    if not value and not allow_empty:
        raise DataError(source, "empty list", line=line, field=field)
    return [_text(source, line, f"{field}[{i}]", item) for i, item in enumerate(value)]
