"""Data stage: recipe `DataArguments` -> training rows (anchor, positive, negative_*) + a retrieval eval set.

Training rows come from one source (`dataset_name_or_path`) or several (`dataset_mixture`, one
`datasets.DatasetDict` entry per source, so that sentence-transformers draws every batch from one source).
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from pathlib import Path

from datasets import Dataset, DatasetDict, concatenate_datasets

from st_bge.config import DataArguments
from st_bge.data.formats import detect_format, records_to_dataset
from st_bge.data.retrieval_set import RetrievalSet, is_beir_folder, is_llamaindex_file, load_beir, load_llamaindex
from st_bge.data.sources import read_records
from st_bge.errors import DataError

__all__ = ["RetrievalSet", "TrainingData", "load_beir", "load_retrieval_set", "load_training_data"]

logger = logging.getLogger(__name__)

RETRIEVAL_SET_FORMATS = ("beir", "llamaindex")


@dataclass
class TrainingData:
    """What the trainer needs: the training rows (one Dataset, or one per source) and, optionally, an eval set."""

    train: Dataset | DatasetDict
    eval: RetrievalSet | None
    source: str
    format: str
    # Source name -> every document text of a BEIR / LlamaIndex source, not only the positives: the corpus that
    # hard negatives are mined from.
    corpora: dict[str, list[str]] = field(default_factory=dict)

    @property
    def train_sets(self) -> dict[str, Dataset]:
        """The training rows by source name (one entry for a single source)."""
        return dict(self.train) if isinstance(self.train, DatasetDict) else {self.source: self.train}

    def replace_train_sets(self, sets: dict[str, Dataset]) -> None:
        """New rows for every source (e.g. mined), keeping the single-source / mixture shape."""
        self.train = DatasetDict(sets) if isinstance(self.train, DatasetDict) else next(iter(sets.values()))

    def summary(self) -> dict[str, object]:
        """Sizes and columns only (no text), safe for a public model card and the logs."""
        summary: dict[str, object] = {"source": self.source, "format": self.format}
        if isinstance(self.train, DatasetDict):
            summary["train_rows"] = sum(len(rows) for rows in self.train.values())
            summary["train_rows_per_source"] = {name: len(rows) for name, rows in self.train.items()}
        else:
            summary.update(train_rows=len(self.train), columns=self.train.column_names)
        if self.eval is not None:
            summary.update({f"eval_{key}": value for key, value in self.eval.summary().items()})
        return summary


def load_training_data(args: DataArguments) -> TrainingData:
    """Read, convert and split the recipe's data, failing on the first bad record before any training."""
    eval_set = (
        load_retrieval_set(args.eval_dataset_name_or_path, args.eval_dataset_split)
        if args.eval_dataset_name_or_path
        else None
    )
    hold_out = eval_set is None and args.eval_split_size > 0
    if args.dataset_mixture is None:
        source = args.dataset_name_or_path
        loaded = _load_source(source, args, hold_out=hold_out)
        data = TrainingData(
            train=loaded.train,
            eval=eval_set or loaded.held_out,
            source=source,
            format=loaded.format,
            corpora={source: loaded.corpus} if loaded.corpus else {},
        )
    else:
        data = _load_mixture(args, eval_set, hold_out=hold_out)
    for name, rows in data.train_sets.items():
        if len(rows) == 0:
            raise DataError(name, "no training rows left")
    logger.info("Data: %s", data.summary())
    return data


def load_retrieval_set(name_or_path: str, split: str = "test") -> RetrievalSet:
    """A retrieval set from a BEIR folder (qrels `split`), a LlamaIndex file, or training-style data (pairs,
    FlagEmbedding, RAG logs or a Hub dataset split): each distinct anchor is a query, its positives are relevant,
    every text is in the corpus."""
    if is_beir_folder(name_or_path):
        return load_beir(name_or_path, split)
    if is_llamaindex_file(name_or_path):
        return load_llamaindex(name_or_path)
    records = read_records(name_or_path, split=split)
    rows = records_to_dataset(records, detect_format(records))
    return RetrievalSet.from_training_dataset(rows, name=Path(name_or_path).stem)


@dataclass
class _Source:
    """One source, read: its training rows, its held-out eval queries, its format and (retrieval sets) corpus."""

    train: Dataset
    held_out: RetrievalSet | None
    format: str
    corpus: list[str] | None = None


def _load_source(source: str, args: DataArguments, *, hold_out: bool) -> _Source:
    """One source's training rows and the queries held out of them for evaluation (if `hold_out`)."""
    data_format = _detect_source_format(source, args.dataset_format)
    held_out = corpus = None
    if data_format in RETRIEVAL_SET_FORMATS:
        retrieval_set = load_beir(source, args.dataset_split) if data_format == "beir" else load_llamaindex(source)
        corpus = list(retrieval_set.corpus.values())
        if hold_out:
            retrieval_set, held_out = retrieval_set.split(args.eval_split_size, args.split_seed)
        train = retrieval_set.to_training_dataset()
    else:
        records = read_records(
            source, split=args.dataset_split, config_name=args.dataset_config_name, revision=args.dataset_revision
        )
        data_format = detect_format(records) if data_format == "auto" else data_format
        train = records_to_dataset(records, data_format, args.num_negatives, args.column_mapping)
        if hold_out:
            train, held_out = _split_rows_by_anchor(train, args.eval_split_size, args.split_seed, name=source)
    if args.max_train_samples is not None:
        train = train.select(range(min(args.max_train_samples, len(train))))
    return _Source(train, held_out, data_format, corpus)


def _detect_source_format(source: str, data_format: str) -> str:
    if data_format != "auto":
        return data_format
    if is_beir_folder(source):
        return "beir"
    if is_llamaindex_file(source):
        return "llamaindex"
    return "auto"  # decided from the records once they are read


def _load_mixture(args: DataArguments, eval_set: RetrievalSet | None, *, hold_out: bool) -> TrainingData:
    """Every source of `dataset_mixture`, resized to its weight's share of the rows; held-out queries of all
    sources form one eval set (ids prefixed by source)."""
    names = source_names(list(args.dataset_mixture))
    loaded = {names[source]: _load_source(source, args, hold_out=hold_out) for source in args.dataset_mixture}
    total_rows = sum(len(part.train) for part in loaded.values())
    total_weight = sum(args.dataset_mixture.values())
    train = DatasetDict(
        {
            names[source]: _resize(
                loaded[names[source]].train, round(total_rows * weight / total_weight), args.split_seed
            )
            for source, weight in args.dataset_mixture.items()
        }
    )
    if hold_out:
        eval_set = RetrievalSet.merge({name: part.held_out for name, part in loaded.items()}, name="mixture")
    return TrainingData(
        train=train,
        eval=eval_set,
        source=", ".join(args.dataset_mixture),
        format="+".join(sorted({part.format for part in loaded.values()})),
        corpora={name: part.corpus for name, part in loaded.items() if part.corpus},
    )


def source_names(sources: list[str]) -> dict[str, str]:
    """Short, unique dataset names for the sources (folder or file stem), used in logs and per-source losses."""
    names: dict[str, str] = {}
    for source in sources:
        base = re.sub(r"[^\w.-]+", "_", Path(source).stem if Path(source).exists() else source).strip("_") or "data"
        name, n = base, 2
        while name in names.values():
            name, n = f"{base}_{n}", n + 1
        names[source] = name
    return names


def _resize(rows: Dataset, size: int, seed: int) -> Dataset:
    """`size` rows drawn from `rows` (seeded): a sample if smaller, whole repeats plus a sample if larger."""
    size = max(size, 1)
    repeats, remainder = divmod(size, len(rows))
    sample = rows.shuffle(seed=seed).select(range(remainder))
    return concatenate_datasets([rows] * repeats + [sample]) if repeats else sample


def _split_rows_by_anchor(train: Dataset, eval_size: float, seed: int, name: str) -> tuple[Dataset, RetrievalSet]:
    """Hold out whole anchors (never one anchor on both sides) and build the eval set from the held-out rows,
    searching every document text of the full data."""
    full = RetrievalSet.from_training_dataset(train, name=name)
    train_set, eval_set = full.split(eval_size, seed)
    train_anchors = {full.queries[qid] for qid in train_set.queries}
    return train.filter(lambda row: row["anchor"] in train_anchors), eval_set
