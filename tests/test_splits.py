"""A BEIR folder's test split is evaluated on and never trained on unless the recipe names it (`st_bge.data.splits`);
`st-bge eval` warns about a model evaluated on queries its card says it was trained on."""

from __future__ import annotations

import json
import shutil

import pytest

from st_bge.config import parse_recipe
from st_bge.data import load_beir, load_training_data
from st_bge.data.quality import check_quality
from st_bge.errors import DataError
from st_bge.evaluation.evaluate import trained_on_warnings
from st_bge.storage import CARD_INPUTS


def shipped_recipe(data, *flags):
    """The quickstart recipe pointed at the user's folder: the README's own "your data" line."""
    return parse_recipe(["--config", "recipes/quickstart.yaml", "--dataset_name_or_path", str(data), *flags])


def with_splits(source, folder, **splits):
    """A copy of the BEIR folder `source` whose qrels are `splits` (name -> source split whose lines it copies)."""
    shutil.copytree(source, folder)
    for path in (folder / "qrels").glob("*.tsv"):
        path.unlink()
    for name, lines in splits.items():
        (folder / "qrels" / f"{name}.tsv").write_text(lines)
    return folder


def qrels_lines(folder, split, keep=slice(None)):
    lines = (folder / "qrels" / f"{split}.tsv").read_text().splitlines()
    return "\n".join([lines[0], *lines[1:][keep]]) + "\n"


def test_the_shipped_recipe_trains_on_train_and_evaluates_on_test(beir_folder):
    data = load_training_data(shipped_recipe(beir_folder).data)
    train, test = load_beir(beir_folder, "train"), load_beir(beir_folder, "test")
    assert sorted(data.train["anchor"]) == sorted(train.queries.values())
    assert data.eval.qrels == test.qrels
    assert not set(data.train["anchor"]) & set(test.queries.values())
    assert data.selection is None and data.rows_from_test == {}
    assert data.evaluation == (
        "qrels/test.tsv of tiny-beir, the folder's test split (no dev split: a best-checkpoint choice is made on "
        "these queries too)"
    )


def test_a_dev_split_picks_the_checkpoint_so_the_test_queries_choose_nothing(beir_folder, tmp_path):
    folder = with_splits(
        beir_folder,
        tmp_path / "with-dev",
        train=qrels_lines(beir_folder, "train", slice(0, 6)),
        dev=qrels_lines(beir_folder, "train", slice(6, 8)),
        test=qrels_lines(beir_folder, "test"),
    )
    data = load_training_data(shipped_recipe(folder).data)
    assert len(data.train) == 6 and len(data.selection.qrels) == 2 and len(data.eval.qrels) == 4
    assert "best checkpoint chosen on qrels/dev.tsv" in data.evaluation


def test_a_test_only_folder_holds_queries_out_of_it_and_the_report_says_so(beir_folder, tmp_path):
    folder = with_splits(beir_folder, tmp_path / "test-only", test=qrels_lines(beir_folder, "train"))
    data = load_training_data(shipped_recipe(folder, "--eval_split_size", "0.25").data)
    assert len(data.eval.qrels) == 2 and len(data.train) == 6
    assert not set(data.train["anchor"]) & set(data.eval.queries.values())
    assert "its other queries were trained on, so the numbers are not comparable" in data.evaluation
    assert data.rows_from_test == {str(folder): 6}
    report = check_quality(data.train, data.eval, rows_from_test=6, notes=[data.evaluation])
    assert report.verdict == "warn"
    assert any(
        reason.startswith("warn: training rows from a split named test: 6 of 6 rows") for reason in report.reasons
    )
    assert data.evaluation in report.to_markdown()


def test_a_test_only_folder_without_a_hold_out_says_what_to_do(beir_folder, tmp_path):
    folder = with_splits(beir_folder, tmp_path / "test-only", test=qrels_lines(beir_folder, "train"))
    with pytest.raises(DataError) as error:
        load_training_data(shipped_recipe(folder, "--eval_split_size", "0").data)
    assert str(error.value) == (
        f"{folder}: has only a test split (qrels/test.tsv), which dataset_split: auto never trains on whole: set "
        "eval_split_size (e.g. 0.2) to hold out queries of it for evaluation and train on the rest (the reports say "
        "so), or dataset_split: test to train on all of it"
    )


def test_naming_the_test_split_trains_on_it_and_the_data_check_warns(beir_folder):
    data = load_training_data(shipped_recipe(beir_folder, "--dataset_split", "all").data)
    assert data.rows_from_test[str(beir_folder)] > 0
    report = check_quality(data.train, data.eval, rows_from_test=data.rows_from_test[str(beir_folder)])
    assert report.verdict == "warn" and report.finding("train_rows_from_test_split").count > 0


@pytest.mark.parametrize(("split", "warned"), [("test", True), ("dev", False)])
def test_st_bge_eval_warns_about_a_model_evaluated_on_its_own_training_queries(tmp_path, split, warned):
    model = tmp_path / "run"
    model.mkdir()
    (model / CARD_INPUTS).write_text(json.dumps({"data_summary": {"trained_splits": {"mbpp": ["train", "test"]}}}))
    warnings = trained_on_warnings({"tuned": str(model), "base": "BAAI/bge-m3"}, "mbpp", split)
    assert bool(warnings) == warned
    if warned:
        assert warnings[0].startswith("tuned was trained on qrels/test.tsv of mbpp (its card says so)")
