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


def flagembedding(folder, teacher_scores=None, **kwargs):
    """Loss and gradients of FlagEmbedding 1.4.2's own BGE-M3 training model (it builds on the CPU, no DeepSpeed
    needed) on the same batch, grouped as it groups passages (each query's positive, then its negatives), 48 tokens
    each. `kwargs` go to `EncoderOnlyEmbedderM3Model` (unified fine-tuning unless they say otherwise)."""
    from FlagEmbedding.finetune.embedder.encoder_only.m3 import EncoderOnlyEmbedderM3Model, EncoderOnlyEmbedderM3Runner
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(folder)
    settings = {"temperature": 0.02, "normalize_embeddings": True, "sentence_pooling_method": "cls"}
    model = EncoderOnlyEmbedderM3Model(
        EncoderOnlyEmbedderM3Runner.get_model(str(folder)),
        tokenizer=tokenizer,
        **{**settings, "unified_finetuning": True, **kwargs},
    )
    model.train()
    passages = [text for i in range(ROWS) for text in [POSITIVES[i], *NEGATIVES[i]]]
    batch = {"padding": "max_length", "max_length": 48, "truncation": True, "return_tensors": "pt"}
    output = model(
        queries=dict(tokenizer(QUERIES, **batch)),
        passages=dict(tokenizer(passages, **batch)),
        teacher_scores=teacher_scores,
    )
    output.loss.backward()
    # Its parameter names, as st-bge's: the encoder under the Transformer module (`0.`), the heads beside it. (Its
    # AutoModel also has XLM-R's pooler, which nothing uses: no gradient.)
    return output.loss.item(), {
        f"0.{name}" if name.startswith("model.") else f"0.m3_heads.{name}": p.grad
        for name, p in model.named_parameters()
        if p.grad is not None
    }
