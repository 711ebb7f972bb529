"""Which qrels splits of a BEIR folder are trained on, which one is evaluated on, and which picks the checkpoint.

A BEIR folder's `test` split is what its published results are measured on: training on it makes every number
after it meaningless, and nothing in the metrics shows it. So `dataset_split: auto` (the default) never trains on
`test`: it trains on `train` (or, without one, on every other split), evaluates on `test` and, where the folder
has a `dev` split it does not train on, picks the best checkpoint on `dev`, so that the test queries choose
nothing. A folder with only a test split (the usual BEIR download) is trained on only with queries held out of it
(`eval_split_size`), and every report says so. Naming the splits (`dataset_split: train,test` or `all`) trains on
exactly those; the data check then warns about the rows taken from `test`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from st_bge.config import DataArguments
from st_bge.data.retrieval_set import RetrievalSet
from st_bge.errors import DataError

TEST_SPLIT, DEV_SPLIT, TRAIN_SPLIT = "test", "dev", "train"


@dataclass(frozen=True)
class SplitPlan:
    """The qrels splits to train on, the split to evaluate on (None: none, or queries held out of the training
    splits when `hold_out`) and the split that picks the best checkpoint (None: the eval set does)."""

    train: list[str]
    eval: str | None
    selection: str | None
    hold_out: bool


def beir_splits(folder: str | Path) -> list[str]:
    """The qrels split names of a BEIR folder (`qrels/<name>.tsv`), sorted."""
    return sorted(path.stem for path in (Path(folder) / "qrels").glob("*.tsv"))


def beir_plan(folder: str | Path, dataset_split: str, *, hold_out: bool, given_eval: bool) -> SplitPlan:
    """How `dataset_split` ('auto', 'all' or names) splits a BEIR folder.

    Args:
        folder: The BEIR folder.
        dataset_split: The recipe's `dataset_split`.
        hold_out: Queries may be held out of the training splits (`eval_split_size` > 0, no eval set given).
        given_eval: The recipe names its own eval set (`eval_dataset_name_or_path`).

    Raises:
        DataError: 'auto' on a folder with only a test split and nothing to evaluate on, saying what to do.
    """
    available = beir_splits(folder)
    if dataset_split != "auto":
        names = available if dataset_split == "all" else [name.strip() for name in dataset_split.split(",")]
        return _plan(names, available, hold_out=hold_out, given_eval=given_eval)
    trainable = [TRAIN_SPLIT] if TRAIN_SPLIT in available else [name for name in available if name != TEST_SPLIT]
    if trainable:
        return _plan(trainable, available, hold_out=hold_out, given_eval=given_eval)
    if hold_out and not given_eval:  # only a test split: train on part of it, evaluate on the rest
        return SplitPlan(train=[TEST_SPLIT], eval=None, selection=None, hold_out=True)
    raise DataError(
        folder,
        f"has only a test split (qrels/{TEST_SPLIT}.tsv), which dataset_split: auto never trains on whole: set "
        f"eval_split_size (e.g. 0.2) to hold out queries of it for evaluation and train on the rest (the reports "
        f"say so), or dataset_split: {TEST_SPLIT} to train on all of it",
    )


def _plan(names: list[str], available: list[str], *, hold_out: bool, given_eval: bool) -> SplitPlan:
    """`names` are checked by `load_beir`, which reads them."""
    test_left = TEST_SPLIT in available and TEST_SPLIT not in names
    if given_eval or not test_left:
        return SplitPlan(train=names, eval=None, selection=None, hold_out=hold_out and not given_eval)
    dev_left = DEV_SPLIT in available and DEV_SPLIT not in names
    return SplitPlan(train=names, eval=TEST_SPLIT, selection=DEV_SPLIT if dev_left else None, hold_out=False)


def hold_out_description(held_out: RetrievalSet, args: DataArguments, *, unit: str) -> str:
    """How held-out queries were chosen, in words for the report and the card."""
    return (
        f"{len(held_out.qrels)} {unit} ({args.eval_split_size:.0%}) held out of the training data with split_seed "
        f"{args.split_seed}; {unit} sharing a text or a relevant document stay on one side"
    )
