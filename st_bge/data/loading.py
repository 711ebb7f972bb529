"""Loading the training data: recipe `DataArguments` -> training rows (anchor, positive, negative_*) + a retrieval eval set.

Training rows come from one source (`dataset_name_or_path`, or an in-memory `datasets.Dataset` / pandas DataFrame
given to `train`) or several (`dataset_mixture`, one `datasets.DatasetDict` entry per source, so that
sentence-transformers draws every batch from one source). A BEIR folder's test split is evaluated on, never trained
on unless the recipe names it (`dataset_split`): see `beir_plan` in `splits.py`.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from datasets import Dataset, DatasetDict, concatenate_datasets

from st_bge.config import DataArguments
from st_bge.data.formats import by_column_order, detect_format, records_to_dataset
from st_bge.data.retrieval_set import RetrievalSet, is_beir_folder, is_llamaindex_file, load_beir, load_llamaindex
from st_bge.data.sources import read_records, records_in_memory
from st_bge.data.splits import TEST_SPLIT, SplitPlan, beir_plan, hold_out_description
from st_bge.errors import ConfigError, DataError

logger = logging.getLogger(__name__)

IN_MEMORY = "in-memory data"
ANY_SPLIT = "*"  # a data file: any split name evaluates the same rows
# What `train(recipe, train_dataset=...)` / `eval_set=...` take besides a path.
InMemoryData = Any  # a datasets.Dataset or a pandas DataFrame


@dataclass
class TrainingData:
    """What the trainer needs: the training rows (one Dataset, or one per source), the eval set it is judged on and,
    optionally, a separate set that picks the best checkpoint (a BEIR folder's dev split), with where each came from.

    A mixture's rows stay each source's own here (checked and mined as the user wrote them); `epoch_rows` draws
    the weighted epoch the trainer sees.
    """

    train: Dataset | DatasetDict
    eval: RetrievalSet | None
    source: str
    format: str
    # Source name -> every document text of a BEIR / LlamaIndex source, not only the positives: the corpus that
    # hard negatives are mined from.
    corpora: dict[str, list[str]] = field(default_factory=dict)
    # Picks the best checkpoint during training; None: `eval` does.
    selection: RetrievalSet | None = None
    # Source name -> one sentence each on which rows were trained on, and what the evaluation is.
    provenance: dict[str, str] = field(default_factory=dict)
    evaluation: str | None = None
    # Source name -> training rows taken from a split named 'test' (the data check warns about them).
    rows_from_test: dict[str, int] = field(default_factory=dict)
    # Source's folder or file name -> the splits trained on (`ANY_SPLIT` for a file): what `st-bge eval` reads
    # from the card to warn about evaluating a model on its own training queries.
    trained_splits: dict[str, list[str]] = field(default_factory=dict)
    # A mixture's sampling weights by source name (None for one source).
    weights: dict[str, float] | None = None
    seed: int = 42

    @property
    def train_sets(self) -> dict[str, Dataset]:
        """The training rows by source name (one entry for a single source)."""
        return dict(self.train) if isinstance(self.train, DatasetDict) else {self.source: self.train}

    def replace_train_sets(self, sets: dict[str, Dataset]) -> None:
        """New rows for every source (e.g. mined), keeping the single-source / mixture shape."""
        self.train = DatasetDict(sets) if isinstance(self.train, DatasetDict) else next(iter(sets.values()))

    def epoch_rows(self) -> Dataset | DatasetDict:
        """What one epoch trains on: the rows, or for a mixture each source resized to its weight's share."""
        if self.weights is None:
            return self.train
        total_rows = sum(len(rows) for rows in self.train.values())
        total_weight = sum(self.weights.values())
        return DatasetDict(
            {
                name: _resize(rows, round(total_rows * self.weights[name] / total_weight), self.seed)
                for name, rows in self.train.items()
            }
        )

    def summary(self) -> dict[str, object]:
        """Sizes, columns and where the rows and the evaluation came from (no text): for a public card and logs."""
        summary: dict[str, object] = {"source": self.source, "format": self.format}
        if isinstance(self.train, DatasetDict):
            summary["train_rows"] = sum(len(rows) for rows in self.train.values())
            summary["train_rows_per_source"] = {name: len(rows) for name, rows in self.train.items()}
            if self.weights is not None:
                summary["epoch_rows_per_source"] = {name: len(rows) for name, rows in self.epoch_rows().items()}
        else:
            summary.update(train_rows=len(self.train), columns=self.train.column_names)
        if self.trained_splits:
            summary["trained_splits"] = self.trained_splits
        if self.provenance:
            summary["training_data"] = "; ".join(
                text if len(self.provenance) == 1 else f"{name}: {text}" for name, text in self.provenance.items()
            )
        if self.eval is not None:
            summary.update({f"eval_{key}": value for key, value in self.eval.summary().items()})
            if self.evaluation:
                summary["evaluation"] = self.evaluation
        return summary

    def describe(self) -> str:
        """One readable line for the log: rows, sources and the evaluation."""
        parts = [
            f"{sum(len(rows) for rows in self.train_sets.values())} training rows from {self.source} ({self.format})"
        ]
        parts += self.provenance.values()
        if self.eval is None:
            parts.append("no evaluation set")
        elif self.evaluation:
            parts.append(f"evaluation: {self.evaluation}")
        return "; ".join(parts)


def load_training_data(
    args: DataArguments, *, train_dataset: InMemoryData | None = None, eval_set: Any = None
) -> TrainingData:
    """Read, convert and split the recipe's data, failing on the first bad record before any training.

    Args:
        args: The recipe's data section.
        train_dataset: In-memory rows (a `datasets.Dataset` or a pandas DataFrame, in any format a file may have)
            in place of `dataset_name_or_path`.
        eval_set: In place of `eval_dataset_name_or_path`: a `RetrievalSet`, in-memory rows (each anchor a
            query) or a path.

    Raises:
        ConfigError: no training data, or both a source and a mixture.
    """
    given = [args.dataset_name_or_path is not None, args.dataset_mixture is not None, train_dataset is not None]
    if sum(given) != 1:
        raise ConfigError(
            "give the training data as dataset_name_or_path, dataset_mixture or train(recipe, train_dataset=...) (one "
            "of them); to replace a recipe's dataset_name_or_path by a mixture on the command line, add "
            "--dataset_name_or_path null"
        )
    evaluation = _given_eval_set(args, eval_set)
    hold_out = evaluation is None and args.eval_split_size > 0
    if args.dataset_mixture is None:
        source = IN_MEMORY if train_dataset is not None else args.dataset_name_or_path
        loaded = _load_source(source, args, hold_out=hold_out, given_eval=evaluation is not None, rows=train_dataset)
        data = TrainingData(
            train=loaded.train,
            eval=evaluation[0] if evaluation else loaded.eval,
            source=source,
            format=loaded.format,
            corpora={source: loaded.corpus} if loaded.corpus else {},
            selection=None if evaluation else loaded.selection,
            provenance={source: loaded.provenance} if loaded.provenance else {},
            evaluation=evaluation[1] if evaluation else loaded.evaluation,
            rows_from_test={source: loaded.rows_from_test} if loaded.rows_from_test else {},
            trained_splits={_name(source): loaded.trained_splits} if train_dataset is None else {},
            seed=args.split_seed,
        )
    else:
        data = _load_mixture(args, evaluation, hold_out=hold_out)
    for name, rows in data.train_sets.items():
        if len(rows) == 0:
            raise DataError(name, "no training rows left")
    logger.info("Data: %s", data.describe())
    return data


def _given_eval_set(args: DataArguments, eval_set: Any) -> tuple[RetrievalSet, str] | None:
    """The evaluation set the user named (argument or recipe), with how it is described."""
    if eval_set is None and not args.eval_dataset_name_or_path:
        return None
    if isinstance(eval_set, RetrievalSet):
        return eval_set, f"the given set {eval_set.name}"
    if eval_set is not None and not isinstance(eval_set, (str, Path)):
        records = records_in_memory(eval_set, "in-memory eval data")
        rows = records_to_dataset(records, detect_format(records))
        return RetrievalSet.from_training_dataset(rows, name="eval"), "the given in-memory eval set"
    path = str(eval_set if eval_set is not None else args.eval_dataset_name_or_path)
    split = args.eval_dataset_split
    retrieval_set = load_retrieval_set(path, split)
    where = f"qrels/{split}.tsv of " if is_beir_folder(path) else ""
    return retrieval_set, f"{where}{retrieval_set.name} (eval_dataset_name_or_path)"


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
    """One source, read: its training rows, its own eval set (test split or held-out queries) and checkpoint
    selection set, its format, (retrieval sets) its corpus, and where its rows came from."""

    train: Dataset
    eval: RetrievalSet | None
    format: str
    corpus: list[str] | None = None
    selection: RetrievalSet | None = None
    provenance: str | None = None
    evaluation: str | None = None
    rows_from_test: int = 0
    trained_splits: list[str] = field(default_factory=lambda: [ANY_SPLIT])


def _load_source(
    source: str, args: DataArguments, *, hold_out: bool, given_eval: bool, rows: InMemoryData | None = None
) -> _Source:
    """One source's training rows and its evaluation: a BEIR folder's test split, or queries held out of the
    rows (if `hold_out`)."""
    data_format = "auto" if rows is not None else _detect_source_format(source, args.dataset_format)
    if data_format == "beir":
        loaded = _load_beir_source(source, args, hold_out=hold_out, given_eval=given_eval)
    elif data_format == "llamaindex":
        retrieval_set = load_llamaindex(source)
        loaded = _from_retrieval_set(retrieval_set, "llamaindex", args, hold_out=hold_out)
    else:
        if rows is not None:
            records = records_in_memory(rows, source)
        else:
            split = "train" if args.dataset_split == "auto" else args.dataset_split
            records = read_records(
                source, split=split, config_name=args.dataset_config_name, revision=args.dataset_revision
            )
        data_format = detect_format(records) if data_format == "auto" else data_format
        train = records_to_dataset(records, data_format, args.num_negatives, args.column_mapping)
        order = by_column_order(records) if data_format == "pairs" and args.column_mapping is None else None
        if order:
            logger.info("%s: %s", source, order)
        loaded = _Source(train, None, data_format, provenance=order)
        if hold_out:
            loaded.train, loaded.eval = _split_rows_by_anchor(train, args.eval_split_size, args.split_seed, source)
            loaded.evaluation = hold_out_description(loaded.eval, args, unit="anchors")
    if args.max_train_samples is not None:
        loaded.train = loaded.train.select(range(min(args.max_train_samples, len(loaded.train))))
    return loaded


def _load_beir_source(source: str, args: DataArguments, *, hold_out: bool, given_eval: bool) -> _Source:
    """A BEIR folder as `beir_plan` splits it: trained splits, the test split as the eval set, dev for selection."""
    plan: SplitPlan = beir_plan(source, args.dataset_split, hold_out=hold_out, given_eval=given_eval)
    retrieval_set = load_beir(source, ",".join(plan.train))
    loaded = _from_retrieval_set(retrieval_set, "beir", args, hold_out=plan.hold_out)
    if plan.hold_out and plan.train == [TEST_SPLIT]:
        loaded.evaluation = (
            f"{loaded.evaluation}: they come from qrels/{TEST_SPLIT}.tsv, the folder's only split, and its other "
            "queries were trained on, so the numbers are not comparable with results published on that split"
        )
        logger.warning("%s: %s", source, loaded.evaluation)
    if plan.eval is not None:  # the plan holds no queries out then
        loaded.eval = load_beir(source, plan.eval)
        loaded.evaluation = f"qrels/{plan.eval}.tsv of {loaded.eval.name}, the folder's test split"
        if args.eval_split_size > 0:
            logger.info("%s: evaluating on its test split; eval_split_size is not used", source)
        if plan.selection is not None:
            loaded.selection = load_beir(source, plan.selection)
            loaded.selection.name = f"{loaded.selection.name} (qrels/{plan.selection}.tsv)"  # in the training log
            loaded.evaluation += f" (best checkpoint chosen on qrels/{plan.selection}.tsv)"
        else:
            loaded.evaluation += " (no dev split: a best-checkpoint choice is made on these queries too)"
    trained_queries = set(retrieval_set.qrels) - (set(loaded.eval.qrels) if plan.hold_out else set())
    loaded.trained_splits = plan.train
    files = " + ".join(f"qrels/{name}.tsv" for name in plan.train)
    loaded.provenance = f"trained on {files} ({len(trained_queries)} queries)"
    if TEST_SPLIT in plan.train:
        test_queries = set(load_beir(source, TEST_SPLIT).qrels)
        loaded.rows_from_test = sum(
            grade > 0 for qid in trained_queries & test_queries for grade in retrieval_set.qrels[qid].values()
        )
    return loaded


def _from_retrieval_set(
    retrieval_set: RetrievalSet, data_format: str, args: DataArguments, *, hold_out: bool
) -> _Source:
    corpus = list(retrieval_set.corpus.values())
    held_out = evaluation = None
    if hold_out:
        retrieval_set, held_out = retrieval_set.split(args.eval_split_size, args.split_seed)
        evaluation = hold_out_description(held_out, args, unit="queries")
    return _Source(retrieval_set.to_training_dataset(), held_out, data_format, corpus, evaluation=evaluation)


def _detect_source_format(source: str, data_format: str) -> str:
    if data_format != "auto":
        return data_format
    if is_beir_folder(source):
        return "beir"
    if is_llamaindex_file(source):
        return "llamaindex"
    return "auto"  # decided from the records once they are read


def _load_mixture(args: DataArguments, evaluation: tuple[RetrievalSet, str] | None, *, hold_out: bool) -> TrainingData:
    """Every source of `dataset_mixture` as it is (`TrainingData.epoch_rows` applies the weights); the sources' own
    eval sets (test splits or held-out queries) form one eval set, ids prefixed by source."""
    names = source_names(list(args.dataset_mixture))
    loaded = {
        names[source]: _load_source(source, args, hold_out=hold_out, given_eval=evaluation is not None)
        for source in args.dataset_mixture
    }
    eval_set, selection, described = None, None, None
    if evaluation is not None:
        eval_set, described = evaluation
    elif all(part.eval is not None for part in loaded.values()):
        eval_set = RetrievalSet.merge({name: part.eval for name, part in loaded.items()}, name="mixture")
        described = "; ".join(f"{name}: {part.evaluation}" for name, part in loaded.items())
        if all(part.selection is not None for part in loaded.values()):
            selection = RetrievalSet.merge({name: part.selection for name, part in loaded.items()}, name="mixture")
    return TrainingData(
        train=DatasetDict({name: part.train for name, part in loaded.items()}),
        eval=eval_set,
        source=", ".join(args.dataset_mixture),
        format="+".join(sorted({part.format for part in loaded.values()})),
        corpora={name: part.corpus for name, part in loaded.items() if part.corpus},
        selection=selection,
        provenance={name: part.provenance for name, part in loaded.items() if part.provenance},
        evaluation=described,
        rows_from_test={name: part.rows_from_test for name, part in loaded.items() if part.rows_from_test},
        trained_splits={_name(source): loaded[names[source]].trained_splits for source in args.dataset_mixture},
        weights={names[source]: weight for source, weight in args.dataset_mixture.items()},
        seed=args.split_seed,
    )


def _name(source: str) -> str:
    """A source as retrieval sets name it (`load_retrieval_set`): the folder's name or the file's stem."""
    return Path(source).name if is_beir_folder(source) else Path(source).stem


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
    kept = train.filter(lambda row: row["anchor"] in train_anchors, desc="Holding out the eval queries")
    return kept, eval_set
