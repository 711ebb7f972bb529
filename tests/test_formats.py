"""The formats beyond plain pairs: LlamaIndex files, RAG retrieval logs, several sources with weights."""

from __future__ import annotations

import json

import pytest
from datasets import DatasetDict

from st_bge.config import DataArguments
from st_bge.data import load_retrieval_set, load_training_data
from st_bge.errors import DataError

LLAMAINDEX = {
    "queries": {"q1": "how to sort", "q2": "reverse a string", "q3": "sum a list"},
    "corpus": {"n1": "sorted(xs)", "n2": "s[::-1]", "n3": "sum(xs)", "n4": "xs.sort()"},
    "relevant_docs": {"q1": ["n1", "n4"], "q2": ["n2"], "q3": ["n3"]},
    "mode": "text",
}


def retrieved(*docs):
    """RAG log documents in rank order; a text ending in '+' was marked helpful."""
    return [{"text": doc.rstrip("+"), "helpful": doc.endswith("+"), "score": 0.5} for doc in docs]


RAG_LOG = [
    {"query": "how to sort", "retrieved": retrieved("xs.sort()", "sorted(xs)+", "order", "min(xs)", "len(xs)")},
    {"query": "reverse a string", "retrieved": retrieved("s[::-1]+", "reversed(s)+", "s", "s.upper()", "s.split()")},
    {"query": "unanswered", "retrieved": retrieved("a", "b", "c", "d")},
]


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def load(path=None, **kwargs):
    return load_training_data(DataArguments(dataset_name_or_path=path and str(path), **kwargs))


def raises(path, **kwargs) -> str:
    with pytest.raises(DataError) as error:
        load(path, **kwargs)
    return str(error.value)


def test_llamaindex_file_trains_and_evaluates(tmp_path):
    path = tmp_path / "qa_pairs.json"
    path.write_text(json.dumps(LLAMAINDEX))
    data = load(path)
    assert data.format == "llamaindex"
    assert sorted(zip(data.train["anchor"], data.train["positive"], strict=True)) == [
        ("how to sort", "sorted(xs)"),
        ("how to sort", "xs.sort()"),
        ("reverse a string", "s[::-1]"),
        ("sum a list", "sum(xs)"),
    ]
    eval_set = load_retrieval_set(str(path))
    assert eval_set.qrels["q1"] == {"n1": 1, "n4": 1} and len(eval_set.corpus) == 4


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"relevant_docs": {"q1": ["n9"]}}, "field 'relevant_docs.q1': unknown document id 'n9' (not in corpus)"),
        ({"relevant_docs": {"q7": ["n1"]}}, "field 'relevant_docs.q7': unknown query id 'q7' (not in queries)"),
        ({"corpus": {"n1": " ", "n2": "x", "n3": "y", "n4": "z"}}, "field 'corpus.n1': empty text"),
        ({"queries": {"q1": 3, "q2": "a", "q3": "b"}}, "field 'queries.q1': expected text, got int"),
    ],
)
def test_llamaindex_errors_name_the_entry(tmp_path, change, message):
    path = tmp_path / "qa_pairs.json"
    path.write_text(json.dumps({**LLAMAINDEX, **change}))
    assert raises(path) == f"{path}, {message}"


def test_rag_logs_helpful_are_positives_and_low_ranked_rest_negatives(tmp_path):
    data = load(write_jsonl(tmp_path / "logs.jsonl", RAG_LOG))
    assert data.format == "rag_logs"
    # Unhelpful documents ranked 1-3 are left out; each query's negatives come from rank 4 on (2 each here).
    assert data.train.to_list() == [
        {"anchor": "how to sort", "positive": "sorted(xs)", "negative_1": "min(xs)", "negative_2": "len(xs)"},
        {"anchor": "reverse a string", "positive": "s[::-1]", "negative_1": "s.upper()", "negative_2": "s.split()"},
        {
            "anchor": "reverse a string",
            "positive": "reversed(s)",
            "negative_1": "s.upper()",
            "negative_2": "s.split()",
        },
    ]


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ({"query": "q", "retrieved": "doc"}, "line 2, field 'retrieved': expected a list of documents, got str"),
        (
            {"query": "q", "retrieved": ["doc"]},
            "line 2, field 'retrieved[0]': expected an object with 'text' and 'helpful', got str",
        ),
        (
            {"query": "q", "retrieved": [{"text": "d", "helpful": "yes"}]},
            "line 2, field 'retrieved[0].helpful': expected true or false, got 'yes'",
        ),
        (
            {"query": "q", "retrieved": [{"txt": "d", "helpful": True}]},
            "line 2, field 'retrieved[0].text': missing field (did you mean 'txt'?)",
        ),
        (
            {"query": "q", "retrieved": [{"text": "", "helpful": True}]},
            "line 2, field 'retrieved[0].text': empty text",
        ),
    ],
)
def test_rag_log_errors_name_line_and_field(tmp_path, line, message):
    path = write_jsonl(tmp_path / "logs.jsonl", [RAG_LOG[0], line])
    assert raises(path) == f"{path}, {message}"


def test_rag_logs_without_any_helpful_document(tmp_path):
    path = write_jsonl(tmp_path / "logs.jsonl", [RAG_LOG[2]])
    assert raises(path) == f"{path}: no query has a helpful document, so there are no positives to train on"


def test_mixture_gives_each_source_its_weight_share(tmp_path, beir_folder):
    pairs = write_jsonl(tmp_path / "zh.jsonl", [{"anchor": f"问题{i}", "positive": f"答案{i}"} for i in range(30)])
    mixture = {str(beir_folder): 3, str(pairs): 1}
    data = load(dataset_mixture=mixture, dataset_split="all", eval_split_size=0.25)
    assert isinstance(data.train, DatasetDict)
    name = beir_folder.name
    # Each source's own rows are what is checked and mined: 9 BEIR rows + 22 pair rows after holding out a quarter
    # of each source's queries.
    assert {key: len(value) for key, value in data.train.items()} == {name: 9, "zh": 22}
    # An epoch draws 31 rows, split 3:1.
    epoch = data.epoch_rows()
    rows = {key: len(value) for key, value in epoch.items()}
    assert rows == {name: 23, "zh": 8}
    assert len(set(epoch["zh"]["anchor"])) == 8  # a smaller share is a sample without repeats
    assert data.eval.name == "mixture" and len(data.eval.queries) == 3 + 8
    assert {qid.split("/")[0] for qid in data.eval.queries} == {name, "zh"}
    assert data.summary()["train_rows_per_source"] == {name: 9, "zh": 22}
    assert data.summary()["epoch_rows_per_source"] == rows


def test_a_mixtures_own_upsampling_is_not_reported_as_the_users_duplicates(tmp_path, beir_folder):
    """The quality report judged the upsampled epoch: 17.4% "duplicate rows", naming rows not in the user's file."""
    from st_bge.data.quality import check_quality

    pairs = write_jsonl(tmp_path / "zh.jsonl", [{"anchor": f"问题{i}", "positive": f"答案{i}"} for i in range(30)])
    data = load(dataset_mixture={str(beir_folder): 3, str(pairs): 1}, dataset_split="all")
    report = check_quality(data.train[beir_folder.name], data.eval)
    assert report.finding("duplicate_rows").count == 0
    assert check_quality(data.epoch_rows()[beir_folder.name]).finding("duplicate_rows").count > 0


def test_mixture_and_single_source_are_exclusive(tmp_path):
    from st_bge.errors import ConfigError

    with pytest.raises(
        ConfigError, match=r"dataset_name_or_path, dataset_mixture or .*add --dataset_name_or_path null"
    ):
        load_training_data(DataArguments(dataset_name_or_path="a.jsonl", dataset_mixture={"b.jsonl": 1}))


def test_a_mixture_on_the_command_line_replaces_the_recipes_source_with_null():
    from st_bge.config import parse_recipe

    recipe = parse_recipe(
        [
            "--config",
            "recipes/quickstart.yaml",
            "--dataset_mixture",
            '{"a.jsonl": 1}',
            "--dataset_name_or_path",
            "null",
        ]
    )
    assert recipe.data.dataset_name_or_path is None and recipe.data.dataset_mixture == {"a.jsonl": 1}


def test_empty_file(tmp_path):
    path = tmp_path / "empty.jsonl"
    path.write_text("\n")
    assert raises(path) == f"{path}: holds no records"
