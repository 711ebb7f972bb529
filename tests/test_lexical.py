"""Lexical scores from entries (no texts x vocabulary tensor) equal the dense lexical vectors' dot products."""

from __future__ import annotations

import pytest
import torch

from st_bge.m3 import lexical, lexical_vectors
from st_bge.m3.lexical import LexicalEntries, lexical_scores

VOCAB = 50


def token_batch(rows: int, length: int, seed: int):
    """Pre-activations, and ids with repeats within a text: the weights are their relu, zero for about a third, as
    the sparse head makes them (a zero weight then has no gradient, whichever way the vectors are built)."""
    generator = torch.Generator().manual_seed(seed)
    activations = (torch.randn(rows, length, generator=generator, dtype=torch.float64) + 0.5).requires_grad_()
    ids = torch.randint(0, VOCAB, (rows, length), generator=generator)
    return activations, ids


@pytest.mark.parametrize("chunk_elements", [2**25, VOCAB + 1])  # one chunk, or one query per chunk
def test_scores_and_gradients_equal_the_dense_vectors(monkeypatch, chunk_elements):
    monkeypatch.setattr(lexical, "CHUNK_ELEMENTS", chunk_elements)
    q_activations, q_ids = token_batch(5, 7, seed=0)
    c_activations, c_ids = token_batch(9, 11, seed=1)
    q_weights, c_weights = torch.relu(q_activations), torch.relu(c_activations)
    dense = lexical_vectors(q_weights, q_ids, VOCAB) @ lexical_vectors(c_weights, c_ids, VOCAB).T
    entries = lexical_scores(
        LexicalEntries.from_tokens(q_weights, q_ids), LexicalEntries.from_tokens(c_weights, c_ids), VOCAB
    )
    torch.testing.assert_close(entries, dense)
    upstream = torch.randn(5, 9, dtype=torch.float64)
    expected = torch.autograd.grad(dense, (q_activations, c_activations), upstream, retain_graph=True)
    actual = torch.autograd.grad(entries, (q_activations, c_activations), upstream)
    for mine, reference in zip(actual, expected, strict=True):
        torch.testing.assert_close(mine, reference)
    assert expected[0].abs().sum() > 0 and expected[1].abs().sum() > 0


def test_entries_keep_the_largest_weight_of_each_id_and_concatenate_by_row():
    weights = torch.tensor([[0.5, 0.2, 0.9, 0.0], [0.3, 0.0, 0.0, 0.0]])
    ids = torch.tensor([[4, 7, 4, 9], [7, 1, 1, 1]])
    entries = LexicalEntries.from_tokens(weights, ids)
    assert sorted(zip(entries.rows.tolist(), entries.ids.tolist(), entries.weights.tolist(), strict=True)) == [
        (0, 4, pytest.approx(0.9)),
        (0, 7, pytest.approx(0.2)),
        (1, 7, pytest.approx(0.3)),
    ]
    both = LexicalEntries.cat([entries, entries])
    assert both.count == 4 and sorted(set(both.rows.tolist())) == [0, 1, 2, 3]


def test_gradcheck():
    q_activations, q_ids = token_batch(3, 4, seed=2)
    c_activations, c_ids = token_batch(4, 5, seed=3)
    q = LexicalEntries.from_tokens(torch.relu(q_activations), q_ids)
    c = LexicalEntries.from_tokens(torch.relu(c_activations), c_ids)
    q_values, c_values = q.weights.detach().requires_grad_(), c.weights.detach().requires_grad_()

    def scores(qv, cv):
        return lexical_scores(
            LexicalEntries(q.rows, q.ids, qv, q.count), LexicalEntries(c.rows, c.ids, cv, c.count), VOCAB
        )

    assert torch.autograd.gradcheck(scores, (q_values, c_values))
