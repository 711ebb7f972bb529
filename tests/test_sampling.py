"""Token-budget batching: every row once per epoch, no batch over budget, fewer padding tokens, trainable."""

from __future__ import annotations

import json

from conftest import NO_EVAL_DURING_TRAINING, flags
from datasets import Dataset
from transformers import AutoTokenizer

from st_bge import sampling
from st_bge.config import parse_recipe
from st_bge.sampling import TokenBudgetBatchSampler, padding_report, random_batches, row_token_lengths
from st_bge.training import train


def mixed_length_rows(n: int = 96) -> Dataset:
    """Anchors of a few words, positives from one word to a long paragraph (words of the fixtures' vocabulary, one
    token each, so that the lengths are the ones written here)."""
    words = [
        "sort",
        "a",
        "list",
        "of",
        "numbers",
        "and",
        "return",
        "the",
        "largest",
        "element",
        "every",
        "in",
        "order",
    ]
    return Dataset.from_dict(
        {
            "anchor": [f"find {i} " + " ".join(words[: 1 + i % 4]) for i in range(n)],
            "positive": [" ".join((words * 8)[: 1 + (i * 7) % 90]) + f" keep {i}" for i in range(n)],
        }
    )


def sampler(tiny_bert_path, rows, **kwargs):
    tokenizer = AutoTokenizer.from_pretrained(tiny_bert_path)
    kwargs = {"batch_size": 8, "drop_last": False, "seed": 3, "max_tokens": 256, "max_length": 64, **kwargs}
    return TokenBudgetBatchSampler(rows, tokenizer=tokenizer, **kwargs)


def test_every_row_once_per_epoch_and_no_batch_over_budget(tiny_bert_path):
    rows = mixed_length_rows()
    batches = sampler(tiny_bert_path, rows)
    for epoch in range(3):
        batches.set_epoch(epoch)
        epoch_batches = list(batches)
        assert len(epoch_batches) == len(batches)
        assert sorted(i for batch in epoch_batches for i in batch) == list(range(len(rows)))
        for batch in epoch_batches:
            longest = max(batches.row_lengths[i] for i in batch)
            assert len(batch) * longest <= 256 or len(batch) == 1
            assert len(batch) <= 8
    sizes = {len(batch) for batch in epoch_batches}
    assert max(sizes) == 8 and min(sizes) < 8  # short rows get full batches, long ones smaller


def test_token_budget_pads_less_than_random_batches(tiny_bert_path):
    rows = mixed_length_rows()
    budget = sampler(tiny_bert_path, rows, max_tokens=10_000)  # only the grouping by length, batches of 8
    grouped = padding_report(budget.column_lengths, budget.batches())
    shuffled = padding_report(budget.column_lengths, random_batches(len(rows), 8, seed=3))
    assert grouped.real_tokens == shuffled.real_tokens
    assert grouped.waste < shuffled.waste / 2


def test_training_with_a_token_budget(tiny_bert_path, tmp_path, caplog, monkeypatch):
    path = tmp_path / "pairs.jsonl"
    path.write_text("".join(json.dumps(row) + "\n" for row in mixed_length_rows().to_list()))
    argv = flags(
        model_name_or_path=tiny_bert_path,
        dataset_name_or_path=path,
        loss="mnrl",
        max_seq_length=64,
        per_device_train_batch_size=8,
        max_tokens_per_batch=256,
        max_steps=3,
        output_dir=tmp_path / "run",
        **NO_EVAL_DURING_TRAINING,
    )
    caplog.set_level("INFO")
    tokenized = []
    monkeypatch.setattr(sampling, "row_token_lengths", lambda *a: tokenized.append(1) or row_token_lengths(*a))
    train(parse_recipe(argv))
    assert "padding" in caplog.text and "with a budget of 256 tokens" in caplog.text
    assert len(tokenized) == 1  # the start-up report and the Trainer's sampler share the token lengths
