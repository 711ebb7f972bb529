"""The forgetting check: the shipped general sets are what their SOURCE.md says, `forgetting_dataset: auto` picks
one by language, and every evaluating run compares base and fine-tuned on it beside the domain table (console,
eval_results.json, the card and its model-index, the plot)."""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import json
import logging
import re
import sys

import pytest
import yaml
from conftest import REPO, flags, train_two_steps

from st_bge.cli import main
from st_bge.data import load_retrieval_set
from st_bge.evaluation.forgetting import GENERAL_SETS, forgetting_source, general_set

GENERAL = REPO / "data" / "general"
SIZES = {"squad_dev_en": (705, 173), "cmrc2018_dev_zh": (1000, 400)}  # queries, documents


@functools.cache
def _builder():
    """data/general/build.py, imported as a module (it is a script, not part of the package)."""
    spec = importlib.util.spec_from_file_location("build_general_sets", GENERAL / "build.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses resolve their annotations through it
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("name", sorted(GENERAL_SETS.values()))
def test_each_shipped_set_is_a_complete_beir_folder_with_its_source(name):
    retrieval_set = load_retrieval_set(str(GENERAL / name), "test")
    assert (len(retrieval_set.qrels), len(retrieval_set.corpus)) == SIZES[name]
    assert all(len(judged) == 1 for judged in retrieval_set.qrels.values())  # one paragraph per question
    source = (GENERAL / name / "SOURCE.md").read_text()
    # The SOURCE.md names the very upstream file the build script checks for.
    assert _builder().SETS[name].sha256 in source and "CC BY-SA 4.0" in source
    assert (GENERAL / "LICENSE-CC-BY-SA-4.0.txt").read_text().startswith("Attribution-ShareAlike 4.0 International")


def test_the_build_script_checks_its_upstream_file_and_samples_with_a_seed(tmp_path, monkeypatch):
    builder = _builder()
    articles = [
        {
            "title": f"Article_{a}",
            "paragraphs": [
                {
                    "context": f"Paragraph {a}.{p} text.",
                    "qas": [
                        {"id": f"q{a}{p}{q}", "question": f"  Question {q} on   {a}.{p}?", "is_impossible": q == 2}
                        for q in range(3)
                    ],
                }
                for p in range(2)
            ],
        }
        for a in range(3)
    ]
    upstream = tmp_path / "dev.json"
    upstream.write_text(json.dumps({"version": "v2.0", "data": articles}))
    with pytest.raises(SystemExit, match=r"SHA-256 .*, expected"):
        builder.build("squad_dev_en", upstream, tmp_path / "out")
    digest = hashlib.sha256(upstream.read_bytes()).hexdigest()
    monkeypatch.setitem(builder.SETS, "squad_dev_en", builder.Upstream(digest, builder.squad_paragraphs))
    monkeypatch.setattr(builder, "MAX_QUERIES", 5)
    counts = builder.build("squad_dev_en", upstream, tmp_path / "out")
    assert counts["documents"] == 6 and counts["questions"] == 12 and counts["queries"] == 5  # unanswerable left out
    built = load_retrieval_set(str(tmp_path / "out"), "test")
    assert len(built.corpus) == 6 and len(built.qrels) == 5
    assert all(re.fullmatch(r"Question [01] on \d\.\d\?", text) for text in built.queries.values())
    first = (tmp_path / "out" / "queries.jsonl").read_bytes()
    builder.build("squad_dev_en", upstream, tmp_path / "again")
    assert (tmp_path / "again" / "queries.jsonl").read_bytes() == first  # seeded: the same sample every time


@pytest.mark.parametrize(
    ("languages", "texts", "expected"),
    [
        (["en"], ["高血压能吃党参吗"], "squad_dev_en"),  # the recipe's language wins over the texts' script
        (["fr", "zh"], [], "cmrc2018_dev_zh"),  # the first language that has a shipped set
        (None, ["高血压能吃党参吗", "头痛怎么办", "How to sort a list"], "cmrc2018_dev_zh"),
        (None, ["How to sort a list", "Reverse a string"], "squad_dev_en"),
    ],
)
def test_auto_picks_the_shipped_set_by_language_then_by_script(languages, texts, expected):
    assert forgetting_source("auto", languages=languages, texts=texts) == str(general_set(_language(expected)))


def _language(name: str) -> str:
    return next(code for code, set_name in GENERAL_SETS.items() if set_name == name)


def test_auto_without_a_shipped_set_warns_and_none_turns_the_check_off(caplog):
    with caplog.at_level(logging.WARNING):
        assert forgetting_source("auto", languages=None, texts=["Как отсортировать список"]) is None
    assert "no shipped general set for the evaluation queries are mostly in Cyrillic script" in caplog.text
    assert "Set forgetting_dataset to a general retrieval set in your language" in caplog.text
    assert forgetting_source("none", languages=["en"], texts=[]) is None
    assert forgetting_source("path/to/beir", languages=["en"], texts=[]) == "path/to/beir"


@pytest.fixture(scope="module")
def forgetting_run(tiny_bert_path, beir_folder, tmp_path_factory):
    output = tmp_path_factory.mktemp("forgetting") / "run"
    result = train_two_steps(tiny_bert_path, beir_folder, output, eval_enabled=True, forgetting_dataset="auto")
    return result, output


def test_training_compares_base_and_fine_tuned_on_the_general_set(forgetting_run):
    result, output = forgetting_run
    general = result.comparison.forgetting
    assert general.eval_set["name"] == "squad_dev_en" and general.eval_set["queries"] == 705
    assert general.models == ["base", "fine-tuned"] and general.primary.reference == "BM25"
    saved = json.loads((output / "eval_results.json").read_text())
    assert saved["forgetting"]["modes"]["dense"]["eval_set"]["name"] == "squad_dev_en"
    assert saved["forgetting"]["modes"]["dense"]["scores"] == general.primary.scores
    assert "**Forgetting check** on `squad_dev_en`" in (output / "eval_results.md").read_text()
    assert "% forgetting check: squad_dev_en" in (output / "eval_results.tex").read_text()
    assert (output / "metrics.png").is_file()


def test_the_card_has_the_forgetting_check_and_its_own_model_index_entry(forgetting_run):
    result, output = forgetting_run
    text = (output / "README.md").read_text()
    assert "### Outside the domain (forgetting check)" in text and "checked on `squad_dev_en` only" in text
    model_index = yaml.safe_load(text.split("---")[1])["model-index"][0]["results"]
    datasets = [entry["dataset"]["name"] for entry in model_index]
    assert datasets == ["tiny-beir", "squad_dev_en"]
    general = result.comparison.forgetting.primary
    values = {metric["type"]: metric["value"] for metric in model_index[1]["metrics"]}
    assert values["ndcg_at_10"] == round(general.scores["fine-tuned"]["ndcg@10"], 4)


def test_forgetting_dataset_none_turns_it_off(tiny_bert_path, beir_folder, tmp_path):
    result = train_two_steps(
        tiny_bert_path, beir_folder, tmp_path / "run", eval_enabled=True, forgetting_dataset="none"
    )
    assert result.comparison.forgetting is None
    assert "forgetting" not in json.loads((tmp_path / "run" / "eval_results.json").read_text())
    assert "not measured here" in (tmp_path / "run" / "README.md").read_text()


def test_a_general_set_named_like_the_eval_set_stops_before_training(tiny_bert_path, beir_folder, tmp_path, capsys):
    argv = flags(
        model_name_or_path=tiny_bert_path,
        dataset_name_or_path=beir_folder,
        forgetting_dataset=beir_folder,
        output_dir=tmp_path / "run",
        max_steps=1,
    )
    assert main(["train", *argv]) == 2
    assert "forgetting_dataset" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


def test_st_bge_eval_checks_forgetting_by_default(tiny_bert_path, beir_folder, tmp_path, capsys):
    argv = flags(models=[f"base={tiny_bert_path}"], eval_datasets=[beir_folder], output_dir=tmp_path / "eval")
    assert main(["eval", *argv, "--plots", "false"]) == 0
    assert "## squad_dev_en (forgetting check)" in capsys.readouterr().out
    assert (tmp_path / "eval" / "forgetting-squad_dev_en" / "eval_results.json").is_file()


def test_a_missing_forgetting_set_is_one_error_naming_the_field(tmp_path, tiny_bert_path, beir_folder, capsys):
    argv = flags(
        model_name_or_path=tiny_bert_path,
        dataset_name_or_path=beir_folder,
        forgetting_dataset=tmp_path / "nowhere",
        output_dir=tmp_path / "run",
    )
    assert main(["train", *argv]) == 2
    assert capsys.readouterr().err == (
        f"st-bge: error: forgetting_dataset: {tmp_path / 'nowhere'}: file not found "
        "(forgetting_dataset: none turns the check off)\n"
    )
