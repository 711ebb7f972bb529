from __future__ import annotations

import json

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from st_bge.config import DataArguments
from st_bge.data import load_beir, load_training_data
from st_bge.errors import ConfigError, DataError

PAIRS = [
    {"question": "how to sort", "answer": "sorted(xs)", "bad": "xs.sort(reverse=True)"},
    {"question": "reverse a string", "answer": "s[::-1]", "bad": "s[1:]"},
]


def copy_beir(source, folder, *, corpus_lines=None, test_qrels=None):
    """A copy of the BEIR folder `source` in `folder`, with the corpus lines or the test qrels replaced."""
    (folder / "qrels").mkdir(parents=True)
    (folder / "queries.jsonl").write_text((source / "queries.jsonl").read_text())
    corpus = (source / "corpus.jsonl").read_text() if corpus_lines is None else "\n".join(corpus_lines) + "\n"
    (folder / "corpus.jsonl").write_text(corpus)
    (folder / "qrels" / "test.tsv").write_text(test_qrels or (source / "qrels" / "test.tsv").read_text())
    return folder


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def load(path, **kwargs):
    return load_training_data(DataArguments(dataset_name_or_path=str(path), **kwargs))


@pytest.mark.parametrize("suffix", ["jsonl", "json", "csv", "parquet"])
def test_pairs_from_every_local_file_type(tmp_path, suffix):
    path = tmp_path / f"pairs.{suffix}"
    if suffix == "jsonl":
        write_jsonl(path, PAIRS)
    elif suffix == "json":
        path.write_text(json.dumps(PAIRS))
    elif suffix == "csv":
        path.write_text(
            "question,answer,bad\n" + "".join(f'{r["question"]},{r["answer"]},"{r["bad"]}"\n' for r in PAIRS)
        )
    else:
        pq.write_table(pa.Table.from_pylist(PAIRS), path)
    data = load(path, column_mapping={"anchor": "question", "positive": "answer", "negative": "bad"})
    assert data.format == "pairs"
    assert data.train.column_names == ["anchor", "positive", "negative"]
    assert data.train[1] == {"anchor": "reverse a string", "positive": "s[::-1]", "negative": "s[1:]"}


def test_pairs_with_st_column_names_need_no_mapping(tmp_path):
    path = write_jsonl(tmp_path / "t.jsonl", [{"anchor": "a", "positive": "p", "negative_1": "n", "id": 3}])
    assert load(path).train.column_names == ["anchor", "positive", "negative_1"]


def test_flagembedding_lines_become_one_row_per_positive(tmp_path):
    path = write_jsonl(
        tmp_path / "fe.jsonl",
        [
            {"query": "q1", "pos": ["p1", "p1b"], "neg": ["n1", "n2", "n3"], "prompt": "x"},
            {"query": "q2", "pos": ["p2"], "neg": ["m1", "m2"]},
        ],
    )
    data = load(path)
    assert data.format == "flagembedding"
    assert data.train.column_names == ["anchor", "positive", "negative_1", "negative_2"]  # the fewest negatives: 2
    assert data.train["anchor"] == ["q1", "q1", "q2"]
    assert data.train["positive"] == ["p1", "p1b", "p2"]
    assert data.train["negative_2"] == ["n2", "n2", "m2"]


def test_beir_folder_trains_on_pairs_and_splits_by_query(beir_folder):
    data = load(beir_folder, dataset_split="all", eval_split_size=0.25, split_seed=1)
    assert data.format == "beir"
    assert len(data.train) == 9 and len(data.eval.queries) == 3
    assert len(data.eval.corpus) == 12  # the held-out queries search the whole corpus
    assert not set(data.train["anchor"]) & set(data.eval.queries.values())
    again = load(beir_folder, dataset_split="all", eval_split_size=0.25, split_seed=1)
    assert again.eval.qrels == data.eval.qrels  # the split depends only on the seed


def test_separate_eval_set(beir_folder):
    data = load(beir_folder, dataset_split="train", eval_dataset_name_or_path=str(beir_folder))
    assert len(data.train) == 8
    assert sorted(data.eval.qrels) == ["q-dedup", "q-fact", "q-upper", "q-words"]


def test_pairs_eval_split_holds_out_whole_anchors(tmp_path):
    rows = [{"anchor": f"q{i % 5}", "positive": f"d{i}"} for i in range(10)]
    data = load(write_jsonl(tmp_path / "p.jsonl", rows), eval_split_size=0.4)
    held_out = set(data.eval.queries.values())
    assert len(held_out) == 2 and not held_out & set(data.train["anchor"])
    assert len(data.train) == 6 and len(data.eval.corpus) == 10


# Bad input: one clear message naming file, line and field.


def test_malformed_json_line(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text('{"anchor": "a", "positive": "b"}\n{"anchor": "a", "positive": }\n')
    with pytest.raises(DataError) as error:
        load(path)
    assert str(error.value) == f"{path}, line 2: malformed JSON: Expecting value (column 29)"


def test_missing_column(tmp_path):
    path = write_jsonl(tmp_path / "m.jsonl", [{"q": "a", "d": "b"}, {"q": "a2"}])
    with pytest.raises(DataError) as error:
        load(path, column_mapping={"anchor": "q", "positive": "d"})
    assert str(error.value) == f"{path}, line 2, field 'd': missing column"


def test_pairs_without_mapping_name_the_columns_found(tmp_path):
    path = write_jsonl(tmp_path / "m.jsonl", PAIRS)
    with pytest.raises(
        DataError, match=r"needs 'anchor' and 'positive' columns, found \['question', 'answer', 'bad'\]"
    ):
        load(path)


def test_two_column_data_is_taken_by_column_order_and_the_report_says_so(tmp_path):
    """As sentence-transformers trains two-column data: a question,answer CSV was refused before."""
    path = tmp_path / "qa.csv"
    path.write_text("question,answer\nhow to sort,sorted(xs)\nreverse a string,s[::-1]\n")
    data = load(path)
    assert data.train["anchor"] == ["how to sort", "reverse a string"]
    assert data.train["positive"] == ["sorted(xs)", "s[::-1]"]
    order = "columns taken by order: question -> anchor, answer -> positive"
    assert order in data.provenance[str(path)] and order in data.summary()["training_data"]


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ({"query": "q", "pos": "a text, not a list"}, "line 2, field 'pos': expected a list of texts, got str"),
        ({"query": "q", "positive": ["p"]}, "line 2, field 'positive': FlagEmbedding data names this list 'pos'"),
        ({"query": "q", "pos": ["p"], "negatives": ["n"]}, "line 2, field 'negatives': FlagEmbedding data names"),
    ],
)
def test_near_miss_flagembedding_lines_get_flagembeddings_line_and_field_error(tmp_path, line, message):
    path = write_jsonl(tmp_path / "fe.jsonl", [{"query": "ok", "pos": ["p"], "neg": ["n"]}, line])
    with pytest.raises(DataError) as error:
        load(path)
    assert str(error.value).startswith(f"{path}, {message}")


@pytest.mark.parametrize("kind", ["pandas", "datasets"])
def test_in_memory_rows_are_training_data_like_a_file(kind):
    from datasets import Dataset

    rows = {"question": ["how to sort", "reverse a string"], "answer": ["sorted(xs)", "s[::-1]"]}
    frame = pd.DataFrame(rows) if kind == "pandas" else Dataset.from_dict(rows)
    data = load_training_data(DataArguments(), train_dataset=frame, eval_set=pd.DataFrame(rows))
    assert data.train["anchor"] == rows["question"] and data.source == "in-memory data"
    assert sorted(data.eval.queries.values()) == sorted(rows["question"])


def test_no_training_data_says_every_way_to_give_it():
    with pytest.raises(ConfigError, match="dataset_name_or_path, dataset_mixture or train\\(recipe, train_dataset"):
        load_training_data(DataArguments())


def test_empty_text(tmp_path):
    path = write_jsonl(tmp_path / "e.jsonl", [{"query": "q", "pos": ["p"]}, {"query": "q2", "pos": ["ok", "  "]}])
    with pytest.raises(DataError) as error:
        load(path)
    assert str(error.value) == f"{path}, line 2, field 'pos[1]': empty text"


def test_pos_as_a_string(tmp_path):
    path = write_jsonl(tmp_path / "s.jsonl", [{"query": "q", "pos": ["p"]}, {"query": "q2", "pos": "p2"}])
    with pytest.raises(DataError) as error:
        load(path)
    assert str(error.value) == f"{path}, line 2, field 'pos': expected a list of texts, got str"


def test_wrong_encoding(tmp_path):
    path = tmp_path / "latin1.jsonl"
    path.write_bytes('{"anchor": "a", "positive": "b"}\n{"anchor": "café", "positive": "b"}\n'.encode("latin-1"))
    with pytest.raises(DataError) as error:
        load(path)
    assert (
        str(error.value) == f"{path}, line 2: not valid UTF-8 (invalid continuation byte); re-save the file as UTF-8"
    )


def test_qrels_naming_an_unknown_document(beir_folder, tmp_path):
    qrels = "query-id\tcorpus-id\tscore\nq-sort\tc-sort\t1\nq-max\tc-nope\t1\n"
    folder = copy_beir(beir_folder, tmp_path / "beir", test_qrels=qrels)
    with pytest.raises(DataError) as error:
        load_beir(folder, "test")
    assert str(error.value) == (
        f"{folder / 'qrels' / 'test.tsv'}, line 3, field 'corpus-id': unknown document id 'c-nope' (not in corpus.jsonl)"
    )


def test_missing_file_and_missing_split(tmp_path, beir_folder):
    with pytest.raises(DataError) as error:
        load(tmp_path / "nope.jsonl")
    assert str(error.value) == f"{tmp_path / 'nope.jsonl'}: file not found"
    with pytest.raises(DataError, match=r"no qrels split \['dev'\]; available: \['test', 'train'\]"):
        load_beir(beir_folder, "dev")


def test_too_few_negatives(tmp_path):
    path = write_jsonl(
        tmp_path / "n.jsonl",
        [{"query": "q", "pos": ["p"], "neg": ["a", "b"]}, {"query": "r", "pos": ["p"], "neg": ["a"]}],
    )
    with pytest.raises(DataError) as error:
        load(path, num_negatives=2)
    assert str(error.value) == f"{path}, line 2, field 'neg': has 1 negatives, fewer than num_negatives=2"


def test_hub_dataset_id_goes_through_datasets(monkeypatch):
    """No Hub here: stand in for `datasets.load_dataset` and check what st-bge asks for and how it converts."""
    import datasets

    calls = []

    def fake_load_dataset(name, config_name, *, split, revision):
        calls.append((name, config_name, split, revision))
        return datasets.Dataset.from_list([{"q": "how to sort", "d": "sorted(xs)"}])

    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    data = load(
        "someone/pairs",
        dataset_config_name="en",
        dataset_split="train[:10]",
        dataset_revision="abc123",
        column_mapping={"anchor": "q", "positive": "d"},
    )
    assert calls == [("someone/pairs", "en", "train[:10]", "abc123")]
    assert data.train[0] == {"anchor": "how to sort", "positive": "sorted(xs)"}


@pytest.mark.parametrize(
    ("failure", "reason"),
    [
        (
            ConnectionError("Couldn't reach 'someone/pairs' on the Hub (OfflineModeIsEnabled)"),
            "the Hub could not be reached (HF_HUB_OFFLINE is set) and it is not in the local datasets cache",
        ),
        (
            "not-found",
            "no such dataset on the Hub (if it is private or gated, log in with `hf auth login` or set HF_TOKEN)",
        ),
    ],
)
def test_hub_failure_is_one_plain_message(monkeypatch, failure, reason):
    import datasets
    from datasets.exceptions import DatasetNotFoundError

    def fail(*args, **kwargs):
        raise (
            DatasetNotFoundError("Dataset 'someone/pairs' doesn't exist on the Hub")
            if failure == "not-found"
            else failure
        )

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(datasets, "load_dataset", fail)
    with pytest.raises(DataError) as error:
        load("someone/pairs")
    assert str(error.value) == f"someone/pairs: not a local file or folder, and {reason}"


def test_beir_corpus_with_an_empty_or_non_text_document(beir_folder, tmp_path):
    corpus = (beir_folder / "corpus.jsonl").read_text().splitlines()
    for index, (bad, message) in enumerate(
        [
            ({"_id": "c-x", "title": " ", "text": ""}, "empty text"),
            ({"_id": "c-x", "text": 7}, "expected text, got int"),
        ]
    ):
        folder = copy_beir(
            beir_folder, tmp_path / f"beir-{index}", corpus_lines=[*corpus[:3], json.dumps(bad), *corpus[3:]]
        )
        with pytest.raises(DataError) as error:
            load_beir(folder, "test")
        assert str(error.value) == f"{folder / 'corpus.jsonl'}, line 4, field 'text': {message}"


def test_beir_corpus_with_a_non_text_title_or_no_id(beir_folder, tmp_path):
    """One reader for corpus records (BEIR's and `st-bge data synth`'s): a title that is not text, or an id that is
    null or empty, is named rather than turned into the text '7' or the id 'None'."""
    corpus = (beir_folder / "corpus.jsonl").read_text().splitlines()
    for index, (bad, field, message) in enumerate(
        [
            ({"_id": "c-x", "title": 7, "text": "x"}, "title", "expected text, got int"),
            ({"_id": None, "text": "x"}, "_id", "missing field"),
            ({"_id": "", "text": "x"}, "_id", "missing field"),
        ]
    ):
        folder = copy_beir(
            beir_folder, tmp_path / f"beir-{index}", corpus_lines=[*corpus[:3], json.dumps(bad), *corpus[3:]]
        )
        with pytest.raises(DataError) as error:
            load_beir(folder, "test")
        assert str(error.value) == f"{folder / 'corpus.jsonl'}, line 4, field '{field}': {message}"


def test_misspelled_column_gets_a_suggestion(tmp_path):
    path = write_jsonl(tmp_path / "m.jsonl", [{"question": "a", "answr": "b"}])
    with pytest.raises(DataError) as error:
        load(path, column_mapping={"anchor": "question", "positive": "answer"})
    assert str(error.value) == f"{path}, line 1, field 'answer': missing column (did you mean 'answr'?)"


def test_duplicate_ids_in_a_beir_corpus(beir_folder, tmp_path):
    corpus = (beir_folder / "corpus.jsonl").read_text().splitlines()
    repeated = copy_beir(beir_folder, tmp_path / "repeat", corpus_lines=[*corpus, corpus[0]])  # an exact repeat: fine
    assert len(load_beir(repeated, "test").corpus) == 12
    changed = json.dumps({**json.loads(corpus[0]), "text": "something else"})
    folder = copy_beir(beir_folder, tmp_path / "changed", corpus_lines=[*corpus, changed])
    with pytest.raises(DataError) as error:
        load_beir(folder, "test")
    assert str(error.value) == (
        f"{folder / 'corpus.jsonl'}, line 13, field '_id': id 'c-sort' appears again with a different text "
        "(first on line 1)"
    )


def test_split_keeps_repeated_queries_and_shared_documents_on_one_side():
    """MBPP has two problems with one prompt, and problems sharing a solution: a split by id would leak them."""
    from st_bge.data import RetrievalSet

    queries = {f"q{i}": f"question {i}" for i in range(20)}
    queries["q1"] = "Question 0?"  # the same text as q0 once normalised
    qrels = {f"q{i}": {f"d{i}": 1} for i in range(20)}
    qrels["q3"] = {"d2": 1}  # q2 and q3 share their relevant document
    corpus = {f"d{i}": f"document {i}" for i in range(20)}
    full = RetrievalSet(queries=queries, corpus=corpus, qrels=qrels, name="toy")
    for seed in range(10):
        train, held_out = full.split(0.3, seed)
        assert sorted([*train.queries, *held_out.queries]) == sorted(queries)
        for pair in (("q0", "q1"), ("q2", "q3")):
            assert (pair[0] in held_out.queries) == (pair[1] in held_out.queries), (seed, pair)
        assert 6 <= len(held_out.queries) <= 7


def test_holding_out_the_eval_queries_is_a_labelled_progress_bar(tmp_path, capsys):
    """It was a bar labelled `Filter`, during a pause nothing explained."""
    path = write_jsonl(
        tmp_path / "p.jsonl", [{"anchor": f"question {i}", "positive": f"answer {i}"} for i in range(10)]
    )
    load(path, eval_split_size=0.2)
    assert "Holding out the eval queries" in capsys.readouterr().err
