"""`st-bge eval`: error analysis, the embedding cache and the whole command on tiny local models."""

from __future__ import annotations

import csv
import json
import logging

import pytest
import torch
from conftest import RECIPES, flags

from st_bge.cli import main
from st_bge.data import RetrievalSet
from st_bge.evaluation.analysis import analyse_run, failure_counts, per_query_deltas, write_failures_csv
from st_bge.evaluation.cache import EmbeddingCache
from st_bge.evaluation.metrics import to_run

TOY = RetrievalSet(
    queries={"q1": "one", "q2": "two", "q3": "three"},
    corpus={f"d{i}": f"doc {i}" for i in range(12)},
    qrels={"q1": {"d1": 1}, "q2": {"d2": 1, "d3": 1, "d4": 2}, "q3": {"d5": 1}},
)


def ranked(*doc_ids):
    return {doc_id: float(len(doc_ids) - rank) for rank, doc_id in enumerate(doc_ids)}


def test_failure_classes_and_csv(tmp_path):
    run = to_run(
        {
            "q1": ranked("d1", "d0"),  # relevant first: no failure
            "q2": ranked("d0", "d6", "d7", "d8", "d2"),  # first relevant at rank 5; 1 of 3 relevant found
            "q3": ranked(*[f"d{i}" for i in (0, 1, 2, 3, 4, 6, 7, 8, 9, 10, 5)]),  # relevant at rank 11
        }
    )
    outcomes = {o.query_id: o for o in analyse_run(TOY, run)}
    assert outcomes["q1"].failures == [] and outcomes["q1"].first_relevant_rank == 1
    assert outcomes["q2"].failures == ["first_relevant_below_rank_3", "under_half_relevant_found"]
    assert (outcomes["q2"].relevant_found, outcomes["q2"].relevant_total) == (1, 3)
    assert outcomes["q3"].failures == ["no_relevant_in_top_10"] and outcomes["q3"].first_relevant_rank == 11
    assert failure_counts(list(outcomes.values())) == {
        "no_relevant_in_top_10": 1,
        "first_relevant_below_rank_3": 1,
        "under_half_relevant_found": 1,
    }
    path = tmp_path / "failures.csv"
    assert write_failures_csv(path, TOY, list(outcomes.values())) == 2
    rows = list(csv.DictReader(path.open()))
    assert [row["query_id"] for row in rows] == ["q2", "q3"]
    assert rows[0]["top_wrong_doc_id"] == "d0" and rows[0]["top_wrong_doc"] == "doc 0"
    assert rows[0]["relevant_doc_ids"] == "d2;d3;d4" and rows[1]["first_relevant_rank"] == "11"


def test_per_query_deltas_worst_first():
    deltas = per_query_deltas({"a": 0.5, "b": 1.0, "c": 0.0}, {"a": 1.0, "b": 0.5, "c": 0.0})
    assert deltas == [("b", 1.0, 0.5, -0.5), ("c", 0.0, 0.0, 0.0), ("a", 0.5, 1.0, 0.5)]


def test_embedding_cache_hits_and_misses(tiny_bge_model, tmp_path, monkeypatch):
    cache = EmbeddingCache(tmp_path)
    ids, texts = ["d1", "d2"], ["def f(): pass", "sorted(xs)"]
    calls = []
    original = type(tiny_bge_model).encode_document

    def counting(self, *args, **kwargs):
        calls.append(args[0])
        return original(self, *args, **kwargs)

    monkeypatch.setattr(type(tiny_bge_model), "encode_document", counting)
    first = cache.encode_documents(tiny_bge_model, ids, texts)
    second = cache.encode_documents(tiny_bge_model, ids, texts)
    assert len(calls) == 1 and torch.equal(first, second)
    cache.encode_documents(tiny_bge_model, ids, [texts[0], "sorted(ys)"])  # another corpus
    with torch.no_grad():
        next(tiny_bge_model.parameters()).add_(0.01)  # another model
    cache.encode_documents(tiny_bge_model, ids, texts)
    assert len(calls) == 3
    assert len(list(tmp_path.glob("*.pt"))) == 3 and not list(tmp_path.glob("*.partial"))


@pytest.fixture
def general_set(tmp_path):
    path = tmp_path / "general.jsonl"
    rows = [{"anchor": f"question {i}", "positive": f"answer {i}"} for i in range(6)]
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def test_st_bge_eval_end_to_end(tiny_bert_path, tiny_xlmr_path, beir_folder, general_set, tmp_path, caplog, capsys):
    argv = flags(
        models=[f"base={tiny_bert_path}", f"other={tiny_xlmr_path}"],
        eval_datasets=[beir_folder],
        eval_dataset_split="test",
        forgetting_dataset=general_set,
        embedding_cache_dir=tmp_path / "cache",
        eval_metrics=["ndcg@10", "recall@10"],
        output_dir=tmp_path / "eval",
    )
    assert main(["eval", str(RECIPES / "eval" / "mbpp.yaml"), *argv]) == 0
    out = capsys.readouterr().out
    header = "| Mode | Metric | BM25 | base | other | Δ | Δ % | p (paired t-test) | p (Fisher's randomisation test) |"
    assert header in out
    # A dense model beside a BGE-M3: the M3's other modes have no baseline, so no Δ there.
    assert "| sparse | ndcg@10 |" in out and "| hybrid | recall@10 |" in out

    folder = tmp_path / "eval" / "tiny-beir"
    results = json.loads((folder / "eval_results.json").read_text())
    assert list(results["modes"]) == ["dense", "sparse", "colbert", "hybrid"]
    dense = results["modes"]["dense"]
    assert dense["models"] == ["base", "other"] and dense["eval_set"]["queries"] == 4
    assert results["modes"]["sparse"]["models"] == ["other"]
    assert results["notes"][0] == "colbert: MeanMaxSim against every document of the corpus (exact search)."
    assert (folder / "eval_results.tex").read_text().count("\\begin{tabular}") == 4
    per_query = list(csv.DictReader((folder / "per_query_ndcg@10.csv").open()))
    columns = ["query_id", "base", "other", "other-sparse", "other-colbert", "other-hybrid", "delta_other"]
    assert len(per_query) == 4 and list(per_query[0]) == columns
    deltas = [float(row["delta_other"]) for row in per_query]
    assert deltas == sorted(deltas)
    for label in ("base", "other", "other-sparse", "other-colbert", "other-hybrid"):
        assert (folder / f"failures_{label}.csv").is_file(), label
    assert (folder / "failures.json").is_file()
    for png in ("metrics.png", "per_query_delta_other.png", "embeddings_pca.png"):
        assert (folder / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", png
    assert (tmp_path / "eval" / "forgetting-general" / "eval_results.md").is_file()
    summary = (tmp_path / "eval" / "summary.md").read_text()
    assert "## general (forgetting check)" in summary and "| general (forgetting check) | dense | other |" in summary

    # The same models on the same data again: corpus embeddings come from the cache.
    caplog.set_level(logging.INFO, logger="st_bge")
    assert main(["eval", str(RECIPES / "eval" / "mbpp.yaml"), *argv, "--overwrite_output_dir", "true"]) == 0
    assert caplog.text.count("Corpus embeddings from cache") == 2  # base x 2 sets
    assert caplog.text.count("Corpus embeddings (dense, sparse, colbert) from cache") == 2  # other x 2 sets
    again = json.loads((folder / "eval_results.json").read_text())
    assert {mode: c["scores"] for mode, c in again["modes"].items()} == {
        mode: c["scores"] for mode, c in results["modes"].items()
    }


def test_eval_refuses_a_non_empty_output_dir(tmp_path, tiny_bert_path, beir_folder, capsys):
    (tmp_path / "eval").mkdir()
    (tmp_path / "eval" / "keep.txt").write_text("mine")
    argv = flags(models=[str(tiny_bert_path)], eval_datasets=[beir_folder], output_dir=tmp_path / "eval")
    assert main(["eval", *argv]) == 2
    assert "already has files" in capsys.readouterr().err
    assert [p.name for p in (tmp_path / "eval").iterdir()] == ["keep.txt"]


def test_model_names_must_differ(tmp_path, tiny_bert_path, beir_folder, capsys):
    argv = flags(models=[f"a={tiny_bert_path}", f"a={tiny_bert_path}"], eval_datasets=[beir_folder])
    assert main(["eval", *argv, "--output_dir", str(tmp_path / "x")]) == 2
    assert capsys.readouterr().err == "st-bge: error: models: two models are named 'a'; name them as name=path\n"


def test_hybrid_weights_tuned_on_the_dev_split_are_used_and_reported(tiny_xlmr_path, beir_folder, tmp_path, caplog):
    argv = flags(
        models=[f"m3={tiny_xlmr_path}"],
        eval_datasets=[beir_folder],
        eval_dataset_split="test",
        hybrid_fusion="optimize",
        fusion_dev_split="train",
        use_embedding_cache=False,
        plots=False,
        output_dir=tmp_path / "eval",
    )
    caplog.set_level(logging.INFO, logger="st_bge")
    assert main(["eval", *argv]) == 0
    assert "hybrid weights tuned on 8 dev queries" in caplog.text
    notes = json.loads((tmp_path / "eval" / "tiny-beir" / "eval_results.json").read_text())["notes"]
    hybrid = next(note for note in notes if note.startswith("hybrid:"))
    assert "(1 : 0.3 : 1)" not in hybrid  # the tuned weights, not BGE-M3's defaults (the grid has no 0.3)
