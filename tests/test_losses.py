from __future__ import annotations

import math

import pytest
import torch
from conftest import TOPICS, redraw_weights, train_two_steps
from sentence_transformers import SentenceTransformer
from sentence_transformers.sentence_transformer import losses as st_losses
from sentence_transformers.sentence_transformer.losses import (
    CachedMultipleNegativesRankingLoss,
    MultipleNegativesRankingLoss,
)

from st_bge.config import LossArguments, ModelArguments
from st_bge.losses import CachedGISTEmbedLoss, GISTEmbedLoss, build_loss
from st_bge.modeling import frozen_copy, load_model

LOSS_CLASSES = {
    "mnrl": MultipleNegativesRankingLoss,
    "cached_mnrl": CachedMultipleNegativesRankingLoss,
    "gist": GISTEmbedLoss,
    "cached_gist": CachedGISTEmbedLoss,
}


def test_temperature_is_given_as_bge_does(tiny_bge_model):
    loss = build_loss(tiny_bge_model, LossArguments(loss="mnrl", temperature=0.02))
    assert loss.scale == pytest.approx(50.0)
    gist = build_loss(
        tiny_bge_model, LossArguments(loss="cached_gist", temperature=0.02), guide=frozen_copy(tiny_bge_model)
    )
    assert gist.temperature == 0.02


def test_gather_across_devices_follows_the_process_count(tiny_bge_model):
    assert build_loss(tiny_bge_model, LossArguments(loss="mnrl"), world_size=1).gather_across_devices is False
    assert build_loss(tiny_bge_model, LossArguments(loss="mnrl"), world_size=4).gather_across_devices is True


@pytest.mark.parametrize("loss_name", list(LOSS_CLASSES))
def test_each_loss_trains_two_steps(loss_name, tiny_bert_path, beir_folder, tmp_path):
    result = train_two_steps(tiny_bert_path, beir_folder, tmp_path / "out", loss=loss_name)
    losses = [entry["loss"] for entry in result.trainer.state.log_history if "loss" in entry]
    assert len(losses) == 2 and all(math.isfinite(value) for value in losses)
    assert type(result.trainer.loss) is LOSS_CLASSES[loss_name]
    if "gist" in loss_name:
        assert not any(p.requires_grad for p in result.trainer.loss.guide.parameters())  # the guide stays frozen
    before = load_model(ModelArguments(model_name_or_path=str(tiny_bert_path))).state_dict()
    after = result.model.state_dict()
    assert any(not torch.equal(before[name], after[name]) for name in before), "training changed no weight"


@pytest.mark.parametrize("columns", [2, 3], ids=["pairs", "triplets"])
@pytest.mark.parametrize(
    ("loss_name", "mini_batch_size"),
    [("gist", 3), ("cached_gist", 3), ("cached_gist", 12)],  # 12 rows: 4 mini-batches of 3, or one of 12
    ids=str,
)
def test_gist_losses_compute_what_sentence_transformers_computes(loss_name, mini_batch_size, columns, tiny_bge_model):
    """On one process st-bge's GIST losses are sentence-transformers' own: same loss, same gradients.

    They only compute the similarity matrices with less memory (2-D instead of broadcast over the embedding
    dimension), gather anchors under DDP (`st_bge.losses._GISTSimilarities`), and embed once where the batch is
    one mini-batch (`CachedGISTEmbedLoss`): theirs embeds it twice. Every term is on (anchor-anchor,
    positive-positive, a hard-negative column), with weights redrawn so that the guide masks some candidates and
    not others.
    """
    # Without the Normalize module, so that the similarities must be cosines of unnormalised embeddings.
    model = SentenceTransformer(modules=[tiny_bge_model[0], tiny_bge_model[1]])
    model.eval()  # no dropout: both losses must see the same forward pass
    guide = frozen_copy(model)
    redraw_weights(model, seed=0)
    redraw_weights(guide, seed=1)
    queries, codes = zip(*TOPICS.values(), strict=True)
    texts = [queries, codes, codes[1:] + codes[:1]][:columns]  # negatives: another row's code

    args = LossArguments(loss=loss_name, mini_batch_size=mini_batch_size)
    ours = build_loss(model, args, guide=guide)
    theirs = getattr(st_losses, type(ours).__name__)(
        model,
        guide=guide,
        temperature=args.temperature,
        margin_strategy=args.gist_margin_strategy,
        margin=args.gist_margin,
        contrast_anchors=args.gist_contrast_anchors,
        contrast_positives=args.gist_contrast_positives,
        **({"mini_batch_size": args.mini_batch_size} if loss_name == "cached_gist" else {}),
    )
    assert type(theirs).__module__.startswith("sentence_transformers.") and ours.contrast_anchors

    forwards = [0]
    model[0].register_forward_hook(lambda *_: forwards.__setitem__(0, forwards[0] + 1))
    results = []
    for loss_fn in (ours, theirs):
        forwards[0] = 0
        model.zero_grad(set_to_none=True)
        loss = loss_fn([model.tokenize(list(column)) for column in texts], labels=None)
        loss.backward()
        grads = {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}
        results.append((loss.item(), grads, forwards[0]))
    (our_loss, our_grads, our_forwards), (their_loss, their_grads, their_forwards) = results
    if loss_name == "cached_gist" and mini_batch_size == 12:
        assert (our_forwards, their_forwards) == (columns, 2 * columns)  # one pass per column, not GradCache's two
    else:
        assert our_forwards == their_forwards
    assert our_loss == pytest.approx(their_loss, rel=1e-5)
    assert our_grads.keys() == their_grads.keys()
    for name, grad in their_grads.items():
        torch.testing.assert_close(our_grads[name], grad, rtol=1e-4, atol=1e-5, msg=lambda m, n=name: f"{n}: {m}")
    assert max(grad.abs().max().item() for grad in their_grads.values()) > 1.0  # far above the tolerance
