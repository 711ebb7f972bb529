"""Data stage: recipe `DataArguments` -> training rows (anchor, positive, negative_*) + a retrieval eval set."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from datasets import Dataset

from st_bge.config import DataArguments
from st_bge.data.formats import detect_format, records_to_dataset
from st_bge.data.retrieval_set import RetrievalSet, is_beir_folder, load_beir
from st_bge.data.sources import read_records
from st_bge.errors import DataError

__all__ = ["RetrievalSet", "TrainingData", "load_beir", "load_retrieval_set", "load_training_data"]

logger = logging.getLogger(__name__)


@dataclass
class TrainingData:
    """What the trainer needs: the training rows and, optionally, a retrieval set to evaluate on."""

    train: Dataset
    eval: RetrievalSet | None
    source: str
    format: str

    def summary(self) -> dict[str, object]:
        """Sizes and columns only (no text), safe for a public model card and the logs."""
        summary: dict[str, object] = {
            "source": self.source,
            "format": self.format,
            "train_rows": len(self.train),
            "columns": self.train.column_names,
        }
        if self.eval is not None:
            summary.update({f"eval_{key}": value for key, value in self.eval.summary().items()})
        return summary


def load_training_data(args: DataArguments) -> TrainingData:
    """Read, convert and split the recipe's data, failing on the first bad record before any training."""
    source = args.dataset_name_or_path
    data_format = args.dataset_format
    if data_format == "auto" and is_beir_folder(source):
        data_format = "beir"
    eval_set = (
        load_beir(args.eval_dataset_name_or_path, args.eval_dataset_split) if args.eval_dataset_name_or_path else None
    )

    if data_format == "beir":
        retrieval_set = load_beir(source, args.dataset_split)
        if eval_set is None and args.eval_split_size > 0:
            retrieval_set, eval_set = retrieval_set.split(args.eval_split_size, args.split_seed)
        train = retrieval_set.to_training_dataset()
    else:
        records = read_records(
            source, split=args.dataset_split, config_name=args.dataset_config_name, revision=args.dataset_revision
        )
        data_format = detect_format(records) if data_format == "auto" else data_format
        train = records_to_dataset(records, data_format, args.num_negatives, args.column_mapping)
        if eval_set is None and args.eval_split_size > 0:
            train, eval_set = _split_rows_by_anchor(train, args.eval_split_size, args.split_seed, name=source)

    if args.max_train_samples is not None:
        train = train.select(range(min(args.max_train_samples, len(train))))
    if len(train) == 0:
        raise DataError(source, "no training rows left")
    data = TrainingData(train=train, eval=eval_set, source=source, format=data_format)
    logger.info("Data: %s", data.summary())
    return data


def load_retrieval_set(name_or_path: str, split: str = "test") -> RetrievalSet:
    """A retrieval set from a BEIR folder (qrels `split`), or from training-style data (pairs, FlagEmbedding or a
    Hub dataset split): each distinct anchor is a query, its positives are relevant, every text is in the corpus."""
    if is_beir_folder(name_or_path):
        return load_beir(name_or_path, split)
    records = read_records(name_or_path, split=split)
    rows = records_to_dataset(records, detect_format(records))
    return RetrievalSet.from_training_dataset(rows, name=Path(name_or_path).stem)


def _split_rows_by_anchor(train: Dataset, eval_size: float, seed: int, name: str) -> tuple[Dataset, RetrievalSet]:
    """Hold out whole anchors (never one anchor on both sides) and build the eval set from the held-out rows,
    searching every document text of the full data."""
    full = RetrievalSet.from_training_dataset(train, name=name)
    train_set, eval_set = full.split(eval_size, seed)
    train_anchors = {full.queries[qid] for qid in train_set.queries}
    return train.filter(lambda row: row["anchor"] in train_anchors), eval_set
