"""A fixed BGE-M3 training batch (4 queries, each with its positive and 2 hard negatives), the tiny BGE-M3 without
dropout, and the comparison of two (loss, gradients) results: shared by the unified-loss and distillation tests."""

from __future__ import annotations

import pytest
import torch
from conftest import TOPICS

PAIRS = list(TOPICS.values())
ROWS, GROUP = 4, 3  # 4 queries, each with its positive and 2 hard negatives
QUERIES = [query for query, _ in PAIRS[:ROWS]]
POSITIVES = [code for _, code in PAIRS[:ROWS]]
NEGATIVES = [[PAIRS[(i + k + 1) % len(PAIRS)][1] for k in range(GROUP - 1)] for i in range(ROWS)]
# float32 sums in other orders (FlagEmbedding's grouped candidates, the cached replay); at temperature 0.02 the
# gradients reach ~10, so an absolute tolerance scaled to them.
LOSS_TOL, GRAD_RTOL, GRAD_ATOL = 2e-5, 1e-4, 1e-4


def tokenize(model, texts, length=None):
    if length is None:  # each column padded to its own longest text, as the Trainer's collator does
        return dict(model.tokenizer(texts, padding=True, return_tensors="pt"))
    return dict(model.tokenizer(texts, padding="max_length", max_length=length, truncation=True, return_tensors="pt"))


def columns(model, length=None):
    """(anchor, positive, negative_1, negative_2) features."""
    negatives = [tokenize(model, [group[k] for group in NEGATIVES], length) for k in range(GROUP - 1)]
    return [tokenize(model, QUERIES, length), tokenize(model, POSITIVES, length), *negatives]


def assert_same(a, b):
    (loss_a, grads_a), (loss_b, grads_b) = a, b
    assert loss_a == pytest.approx(loss_b, abs=LOSS_TOL)
    assert grads_a.keys() == grads_b.keys() and len(grads_a) > 30
    for name, grad in grads_a.items():
        torch.testing.assert_close(
            grad, grads_b[name], rtol=GRAD_RTOL, atol=GRAD_ATOL, msg=lambda m, n=name: f"{n}: {m}"
        )
    assert max(g.abs().max().item() for g in grads_a.values()) > 100 * GRAD_ATOL  # not vacuous
