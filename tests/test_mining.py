"""Hard-negative mining: the guard accounting adds up, the mined rows are what sentence-transformers'
`mine_hard_negatives` (the oracle) mines with the same settings, the cache hits and misses when it should, and bad
input is a one-line DataError."""

from __future__ import annotations

import json
import logging
import random
from dataclasses import replace

import pytest
from conftest import TOPICS, redraw_weights
from datasets import Dataset
from sentence_transformers.util import mine_hard_negatives

from st_bge.config import MiningArguments
from st_bge.data import mining
from st_bge.data.mining import BUCKETS, mine_negatives
from st_bge.errors import DataError

SECOND_SORT_ANSWER = "def sort_desc(xs):\n    return sorted(xs, reverse=True)"
EXTRA_CORPUS = ["def mean(xs):\n    return sum(xs) / len(xs)", "def first(xs):\n    return xs[0]"]


def training_rows(**extra_columns) -> Dataset:
    """The TOPICS pairs, one query with a second positive, and one row repeated."""
    pairs = [*TOPICS.values(), (TOPICS["sort"][0], SECOND_SORT_ANSWER), TOPICS["sum"]]
    rows = {"anchor": [query for query, _ in pairs], "positive": [code for _, code in pairs]}
    return Dataset.from_dict({**rows, **{name: [value] * len(pairs) for name, value in extra_columns.items()}})


@pytest.fixture
def model(tiny_bge_model):
    """The tiny BGE model with weights spread wide enough that its scores differ (`conftest.redraw_weights`)."""
    redraw_weights(tiny_bge_model, seed=0)
    return tiny_bge_model


@pytest.fixture
def args(tmp_path) -> MiningArguments:
    return MiningArguments(mine_num_negatives=2, mine_cache_dir=str(tmp_path / "mined"))


def distinct_negatives(dataset: Dataset) -> set[tuple[str, str]]:
    """(anchor, negative) pairs in sentence-transformers' output: what was really kept."""
    columns = [column for column in dataset.column_names if column.startswith("negative_")]
    return {(row["anchor"], row[column]) for row in dataset for column in columns}


def sentence_transformers_mined(train, model, args, corpus) -> Dataset:
    """What sentence-transformers mines with the same settings: `random` draws from the global `random`, seeded as
    st-bge seeds its own generator."""
    state = random.getstate()
    random.seed(mining.SEED)
    try:
        return mine_hard_negatives(
            train.select_columns(["anchor", "positive"]),
            model,
            corpus=list(corpus) or None,
            cross_encoder=mining._load_cross_encoder(args),
            range_min=args.mine_range_min,
            range_max=mining._range_max(args, mining._max_positives(train["anchor"])),
            max_score=args.mine_max_score,
            absolute_margin=args.mine_absolute_margin,
            relative_margin=args.mine_relative_margin,
            num_negatives=args.mine_num_negatives,
            sampling_strategy=args.mine_sampling_strategy,
            output_format="n-tuple",
            batch_size=args.mine_batch_size,
            verbose=False,
        )
    finally:
        random.setstate(state)


def mine_and_check(train, model, args, corpus=()):
    """Mine, check that the counts add up, and that the rows are sentence-transformers' to the character and in
    its order. The oracle pins the rules st-bge's selection shares with it: if a new sentence-transformers
    changes them, this fails and shows which rows differ."""
    result = mine_negatives(train, model, args, corpus=list(corpus))
    assert result.dataset.to_list() == sentence_transformers_mined(train, model, args, corpus).to_list()
    counts = result.counts
    assert counts["candidates"] == sum(counts[bucket] for bucket in BUCKETS)
    assert counts["rows"] == counts["duplicate_rows"] + counts["rows_mined"] + counts["rows_without_enough_negatives"]
    assert counts["kept"] == len(distinct_negatives(result.dataset))
    assert counts["rows_mined"] == len(result.dataset)
    # range_max (100) covers the whole corpus, so every document is a candidate of every query, and every
    # distinct (query, positive) pair shows up once as a known positive.
    assert counts["candidates"] == counts["queries"] * len(set(train["positive"]) | set(corpus))
    assert counts["dropped_known_positive"] == len(set(zip(train["anchor"], train["positive"], strict=True)))
    return result


@pytest.mark.parametrize(
    "settings",
    [
        {},
        {"mine_sampling_strategy": "random", "mine_relative_margin": None, "mine_absolute_margin": 0.01},
        {"mine_sampling_strategy": "random", "mine_num_negatives": 3},
        {"mine_range_min": 2, "mine_max_score": 0.9, "mine_absolute_margin": 0.0},
        {"mine_range_max": None, "mine_num_negatives": 4},
    ],
)
def test_counts_add_up_and_the_rows_are_sentence_transformers_own(model, args, settings):
    result = mine_and_check(training_rows(), model, replace(args, **settings), corpus=EXTRA_CORPUS)
    assert result.counts["kept"] > 0
    assert result.counts["duplicate_rows"] == 1
    assert result.dataset.column_names[:2] == ["anchor", "positive"]


def test_tied_scores_fall_as_in_sentence_transformers(model, args):
    # The tokenizer lowercases, so an upper-cased copy of a document scores exactly as the original: which of
    # the two makes the cut is down to the sort's order of ties.
    twins = [code.upper() for _, code in TOPICS.values()]
    result = mine_and_check(
        training_rows(), model, replace(args, mine_relative_margin=None, mine_num_negatives=3), corpus=twins
    )
    assert result.counts["kept"] > 0


def test_a_corpus_holding_the_queries_never_mines_a_querys_own_text(model, args):
    """A query's own text scores highest against it; sentence-transformers (6.3) drops it, and so must the count."""
    queries = sorted({query for query, _ in TOPICS.values()})
    result = mine_and_check(training_rows(), model, args, corpus=[*EXTRA_CORPUS, *queries])
    assert result.counts["dropped_query_itself"] == result.counts["queries"]
    assert result.counts["kept"] > 0
    assert all(anchor != negative for anchor, negative in distinct_negatives(result.dataset))


def test_relative_margin_drops_what_the_margin_says(model, args):
    result = mine_negatives(training_rows(), model, args)
    drops = [entry for entry in result.dropped_sample if entry["guard"] == "dropped_relative_margin"]
    assert result.counts["dropped_relative_margin"] > 0
    assert drops
    for entry in drops:
        positive = entry["positive_score"]
        assert entry["candidate_score"] > positive - abs(positive) * 0.05


def test_rank_window_skips_range_min_survivors_per_query(model, args):
    result = mine_negatives(training_rows(), model, replace(args, mine_range_min=3, mine_relative_margin=None))
    assert result.counts["dropped_rank_window"] == 3 * result.counts["queries"]
    assert result.counts["rows_without_enough_negatives"] == 0


@pytest.mark.parametrize(
    ("settings", "guard"),
    [
        ({}, "dropped_max_score"),
        # sentence-transformers applies the margins before max_score, so they get the candidates first.
        ({"mine_absolute_margin": 10.0}, "dropped_absolute_margin"),
        ({"mine_relative_margin": 10.0}, "dropped_relative_margin"),
    ],
)
def test_a_guard_that_drops_everything_leaves_rows_without_negatives(model, args, settings, guard, caplog):
    train = training_rows()
    everything = replace(args, mine_max_score=-2.0, mine_relative_margin=None)
    with caplog.at_level(logging.WARNING, logger=mining.__name__):
        result = mine_negatives(train, model, replace(everything, **settings))
    counts = result.counts
    # The log names the guard and the field that sets it (mine_max_score for max_score, and so on).
    setting = "mine_" + guard.removeprefix("dropped_")
    assert f"to 0 of {len(train) - counts['duplicate_rows']} rows; {guard} dropped" in caplog.text
    assert setting in caplog.text
    assert counts[guard] == counts["candidates"] - counts["dropped_known_positive"]
    assert counts["kept"] == 0
    assert len(result.dataset) == 0
    assert counts["rows_without_enough_negatives"] == len(train) - counts["duplicate_rows"]
    assert f"| {guard} | {counts[guard]:,} |" in result.to_markdown()


def test_a_normal_mine_warns_of_nothing_and_a_cached_low_yield_still_warns(model, args, caplog):
    with caplog.at_level(logging.WARNING, logger=mining.__name__):
        mine_negatives(training_rows(), model, replace(args, mine_relative_margin=None))
    assert "hard-negative mining gave" not in caplog.text
    starved = replace(args, mine_relative_margin=10.0)
    mine_negatives(training_rows(), model, starved)
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger=mining.__name__):
        assert mine_negatives(training_rows(), model, starved).from_cache
    assert "dropped_relative_margin dropped" in caplog.text and "lower or unset mine_relative_margin" in caplog.text


def test_random_sampling_leaves_the_global_random_state_alone(model, args):
    random.seed(1)
    state = random.getstate()
    mine_negatives(training_rows(), model, replace(args, mine_sampling_strategy="random"))
    assert random.getstate() == state


def test_a_cross_encoder_without_score_guards_is_ignored(model, args, caplog):
    settings = replace(args, mine_cross_encoder="no/such-model", mine_relative_margin=None)
    with caplog.at_level(logging.WARNING, logger=mining.__name__):
        result = mine_negatives(training_rows(), model, settings)
    assert "mine_cross_encoder is ignored" in caplog.text
    assert result.settings["cross_encoder"] is None


def test_existing_negative_columns_are_replaced(model, args):
    result = mine_negatives(training_rows(negative="stale", source_id="x"), model, args)
    assert result.dataset.column_names == ["anchor", "positive", "negative_1", "negative_2"]
    assert ("How do I sort a list of numbers?", "stale") not in distinct_negatives(result.dataset)


def test_one_encoding_pass_through_the_public_calls(model, args, monkeypatch):
    """Queries through `encode_query` and documents through `encode_document`, once each: the prompts a model
    defines for each side apply, and no cache of embeddings is written beside the mined one."""
    calls = []
    for method in ("encode_query", "encode_document"):
        original = getattr(model, method)
        monkeypatch.setattr(model, method, lambda *a, _m=method, _f=original, **k: calls.append(_m) or _f(*a, **k))
    mine_negatives(training_rows(), model, replace(args, mine_use_cache=False))
    assert sorted(calls) == ["encode_document", "encode_query"]


@pytest.fixture
def cross_encoder_path(tiny_bert_path, tmp_path):
    """A cross-encoder on the tiny BERT, with weights large enough that its scores differ (see `model`)."""
    from sentence_transformers import CrossEncoder

    cross_encoder = CrossEncoder(str(tiny_bert_path), num_labels=1)
    redraw_weights(cross_encoder, seed=1)
    cross_encoder.save(str(tmp_path / "cross-encoder"))
    return str(tmp_path / "cross-encoder")


def test_cross_encoder_rescoring_is_accounted(model, cross_encoder_path, args):
    # Keep candidates the cross-encoder scores below the positive: about half, at random.
    guards = {"mine_relative_margin": None, "mine_absolute_margin": 0.0, "mine_range_max": 20}
    settings = replace(args, mine_cross_encoder=cross_encoder_path, mine_use_cache=False, **guards)
    result = mine_and_check(training_rows(), model, settings)
    assert result.settings["cross_encoder"] == cross_encoder_path
    assert result.counts["kept"] > 0
    assert result.counts["dropped_by_cross_encoder_only"] > 0
    assert "dropped_by_cross_encoder_only" in result.to_markdown()
    embedding_only = mine_negatives(training_rows(), model, replace(settings, mine_cross_encoder=None))
    assert distinct_negatives(embedding_only.dataset) != distinct_negatives(result.dataset)


def test_second_call_is_a_cache_hit_without_encoding(model, args, monkeypatch):
    first = mine_negatives(training_rows(), model, args)
    assert not first.from_cache

    def no_encoding(*_args, **_kwargs):
        raise AssertionError("a cache hit must not encode")

    monkeypatch.setattr(model, "encode", no_encoding)
    second = mine_negatives(training_rows(), model, args)
    assert second.from_cache
    assert second.counts == first.counts
    assert second.dropped_sample == first.dropped_sample
    assert second.settings == first.settings
    assert second.dataset.to_list() == first.dataset.to_list()


@pytest.mark.parametrize(
    "change",
    [{"mine_relative_margin": 0.1}, {"mine_num_negatives": 1}, {"mine_sampling_strategy": "random"}],
)
def test_changed_settings_miss_the_cache(model, args, change):
    assert not mine_negatives(training_rows(), model, args).from_cache
    assert not mine_negatives(training_rows(), model, replace(args, **change)).from_cache
    assert mine_negatives(training_rows(), model, args).from_cache  # the first entry is still there


def test_changed_data_corpus_or_model_miss_the_cache(model, args):
    mine_negatives(training_rows(), model, args)
    assert not mine_negatives(training_rows().select(range(12)), model, args).from_cache
    assert not mine_negatives(training_rows(), model, args, corpus=EXTRA_CORPUS).from_cache
    model.prompts = {**model.prompts, "query": "query: "}
    assert not mine_negatives(training_rows(), model, args).from_cache


def test_cache_root_follows_st_bge_cache_and_can_be_disabled(model, args, tmp_path, monkeypatch):
    monkeypatch.setenv("ST_BGE_CACHE", str(tmp_path / "root"))
    mine_negatives(training_rows(), model, replace(args, mine_cache_dir=None))
    assert len(list((tmp_path / "root" / "mined").iterdir())) == 1

    disabled = replace(args, mine_use_cache=False)
    assert not mine_negatives(training_rows(), model, disabled).from_cache
    assert not mine_negatives(training_rows(), model, disabled).from_cache
    assert not (tmp_path / "mined").exists()


def test_a_failed_cache_write_leaves_no_entry(model, args, tmp_path, monkeypatch):
    def disk_full(self, output_dir):
        raise OSError("No space left on device")

    monkeypatch.setattr(mining.MiningResult, "save", disk_full)
    result = mine_negatives(training_rows(), model, args)
    assert len(result.dataset) > 0  # the mined rows survive a failed cache write
    assert list((tmp_path / "mined").iterdir()) == []  # neither an entry nor a partial one
    monkeypatch.undo()
    assert not mine_negatives(training_rows(), model, args).from_cache


def test_save_writes_a_text_free_report_and_the_sample(model, args, tmp_path):
    result = mine_negatives(training_rows(), model, args)
    result.save(tmp_path / "out")
    report_text = (tmp_path / "out" / "mining_report.json").read_text()
    report = json.loads(report_text)
    assert report["counts"] == result.counts
    assert report["settings"]["relative_margin"] == 0.05
    texts = [text for pair in TOPICS.values() for text in pair]
    assert not [text for text in texts if text in report_text or json.dumps(text)[1:-1] in report_text]
    sample = [json.loads(line) for line in (tmp_path / "out" / "mining_dropped_sample.jsonl").read_text().splitlines()]
    assert sample == result.dropped_sample
    assert 0 < len(sample) <= mining.SAMPLE_SIZE
    assert set(sample[0]) == {
        "guard",
        "query",
        "positive",
        "positive_score",
        "candidate",
        "candidate_score",
        "embedding_rank",
    }
    assert {entry["guard"] for entry in sample} <= set(mining.HEURISTIC_GUARDS)


@pytest.mark.parametrize(
    ("train", "settings", "message"),
    [
        (Dataset.from_dict({"anchor": ["q"], "answer": ["a"]}), {}, "my.jsonl, field 'positive': mining needs"),
        (Dataset.from_dict({"anchor": [], "positive": []}), {}, "my.jsonl: no rows to mine"),
        (None, {"mine_num_negatives": 0}, "my.jsonl, field 'mine_num_negatives': must be at least 1, got 0"),
        (None, {"mine_range_min": 5, "mine_range_max": 5}, "field 'mine_range_min': mine_range_min (5) must be below"),
        (None, {"mine_num_negatives": 4, "mine_range_min": 8, "mine_range_max": 10}, "field 'mine_num_negatives'"),
    ],
)
def test_bad_input_is_a_data_error(model, args, train, settings, message):
    train = training_rows() if train is None else train
    with pytest.raises(DataError) as error:
        mine_negatives(train, model, replace(args, **settings), source="my.jsonl")
    assert message in str(error.value)
    assert "\n" not in str(error.value)
