"""BGE-M3's unified loss: parity with FlagEmbedding's training model, cached = uncached, and what trains."""

from __future__ import annotations

import pytest
import torch
from conftest import NO_EVAL_DURING_TRAINING, RECIPES, assert_same_m3_outputs, flags, train_two_steps
from m3_batch import PAIRS, assert_same, columns, flagembedding

from st_bge.config import parse_recipe
from st_bge.m3 import BGEM3Model, CachedM3UnifiedLoss, M3UnifiedLoss, colbert_scores
from st_bge.training import train


def ours(folder, loss_class=M3UnifiedLoss, length=None, **kwargs):
    model = BGEM3Model(str(folder))
    model.train()
    loss = loss_class(model, **kwargs)(columns(model, length), None)
    loss.backward()
    grads = {name: p.grad for name, p in model.named_parameters() if p.grad is not None}
    return loss.item(), grads


@pytest.mark.parametrize("self_distill", [False, True])
def test_loss_and_gradients_equal_flagembeddings_training_model(m3_no_dropout_path, self_distill):
    # FlagEmbedding distils when its step counter (0 here) exceeds self_distill_start_step: -1 distils now.
    reference = flagembedding(m3_no_dropout_path, use_self_distill=self_distill, self_distill_start_step=-1)
    mine = ours(m3_no_dropout_path, length=48, self_distill=self_distill, flagembedding_compatible=True)
    assert_same(mine, reference)
    for mini_batch_size in (1, 3):  # the cached loss too, split into mini-batches
        cached = ours(
            m3_no_dropout_path,
            CachedM3UnifiedLoss,
            length=48,
            mini_batch_size=mini_batch_size,
            self_distill=self_distill,
            flagembedding_compatible=True,
        )
        assert_same(cached, reference)


def test_cached_equals_uncached_with_per_column_padding(m3_no_dropout_path):
    """st-bge's default mode, each column and mini-batch padded to its own longest text (the cached loss trims)."""
    assert_same(ours(m3_no_dropout_path, CachedM3UnifiedLoss, mini_batch_size=2), ours(m3_no_dropout_path))


def test_colbert_scores_by_hand():
    queries = torch.tensor([[[1.0, 0.0], [0.0, 1.0], [0.0, 0.0]]])  # 2 real vectors + 1 padding
    candidates = torch.tensor([[[-1.0, 0.0], [0.0, 0.0]], [[0.6, 0.8], [0.8, 0.6]]])  # the first: 1 real + padding
    query_mask, candidate_mask = torch.tensor([[1, 1, 0]]), torch.tensor([[1, 0], [1, 1]])
    # Real tokens only: candidate 1 = mean(max(-1), max(0)) = -0.5; candidate 2 = mean(0.8, 0.8) = 0.8.
    assert colbert_scores(queries, query_mask, candidates, candidate_mask).tolist() == [pytest.approx([-0.5, 0.8])]
    # FlagEmbedding's training scores: the padding vector (similarity 0) beats -1 for the first query vector.
    padded = colbert_scores(queries, query_mask, candidates, candidate_mask, count_padding=True)
    assert padded.tolist() == [pytest.approx([0.0, 0.8])]


def test_self_distillation_starts_at_its_step(m3_no_dropout_path):
    model = BGEM3Model(str(m3_no_dropout_path))
    features = columns(model)
    loss = M3UnifiedLoss(model, self_distill_start_step=1)
    with torch.no_grad():
        before = loss(features).item()
        loss.step = 1
        after = loss(features).item()
        plain = M3UnifiedLoss(model, self_distill=False)(features).item()
    assert before == pytest.approx(plain) and after != pytest.approx(plain)


def parameters(folder) -> dict[str, torch.Tensor]:
    model = BGEM3Model(str(folder))
    return {name: p.detach().clone() for name, p in model.named_parameters()}


def changed(before: dict, after: dict) -> set[str]:
    """Which parts moved: the encoder and each head."""
    parts = set()
    for name, value in before.items():
        if not torch.equal(value, after[name]):
            parts.add("sparse" if "sparse_linear" in name else "colbert" if "colbert_linear" in name else "encoder")
    return parts


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        ({}, {"encoder", "sparse", "colbert"}),
        ({"m3_train_heads": ["dense", "sparse"]}, {"encoder", "sparse"}),
        ({"m3_train_heads": ["colbert"], "m3_freeze_encoder": True}, {"colbert"}),
        (
            {"m3_train_heads": ["sparse", "colbert"], "m3_freeze_encoder": True, "loss": "cached_m3_unified"},
            {"sparse", "colbert"},
        ),
    ],
)
def test_head_subsets_train_only_what_they_name(tiny_xlmr_path, beir_folder, tmp_path, fields, expected):
    before = parameters(tiny_xlmr_path)
    result = train_two_steps(tiny_xlmr_path, beir_folder, tmp_path / "out", **{"loss": "m3_unified", **fields})
    assert changed(before, parameters(result.output_dir)) == expected
    assert type(result.trainer.loss).__name__ == ("CachedM3UnifiedLoss" if "loss" in fields else "M3UnifiedLoss")


def test_unified_recipe_trains_every_head_and_loads_in_flagembedding(tiny_xlmr_path, beir_folder, tmp_path):
    """`st-bge train <recipe> --loss m3_unified` on a tiny BGE-M3: all three heads change, and the folder loads in
    FlagEmbedding's BGEM3FlagModel as in st-bge."""
    from FlagEmbedding import BGEM3FlagModel

    from st_bge.cli import main

    before = parameters(tiny_xlmr_path)
    output = tmp_path / "unified"
    argv = flags(
        model_name_or_path=tiny_xlmr_path,
        dataset_name_or_path=beir_folder,
        loss="m3_unified",
        max_steps=2,
        per_device_train_batch_size=4,
        learning_rate=1e-3,
        output_dir=output,
        **NO_EVAL_DURING_TRAINING,
    )
    assert main(["train", str(RECIPES / "bge-m3" / "full-mnrl.yaml"), *argv]) == 0
    assert changed(before, parameters(output)) == {"encoder", "sparse", "colbert"}
    texts = [text for pair in PAIRS for text in pair]
    mine = BGEM3Model(str(output)).encode_m3(texts, batch_size=4)
    theirs = BGEM3FlagModel(str(output), use_fp16=False, devices="cpu").encode(
        texts, batch_size=4, return_dense=True, return_sparse=True, return_colbert_vecs=True
    )
    assert_same_m3_outputs(mine, theirs)
    card = (output / "README.md").read_text()
    assert "loss:M3UnifiedLoss" in card and "not trained by this run's loss" not in card


def test_new_heads_make_any_encoder_three_modes_and_lora_keeps_them_trainable(tiny_bert_path, beir_folder, tmp_path):
    """m3_add_heads on a BERT without heads, LoRA on the encoder: adapter + trained heads, all three modes."""
    argv = flags(
        model_name_or_path=tiny_bert_path,
        dataset_name_or_path=beir_folder,
        loss="cached_m3_unified",
        m3_add_heads=True,
        max_steps=2,
        per_device_train_batch_size=4,
        mini_batch_size=2,
        lora_target_modules=["query", "value"],
        eval_split_size=0.25,
        output_dir=tmp_path / "new-heads",
        **NO_EVAL_DURING_TRAINING,
    )
    result = train(parse_recipe(["--config", str(RECIPES / "quickstart.yaml"), *argv]))
    output = result.output_dir
    assert {"adapter_model.safetensors", "sparse_linear.pt", "colbert_linear.pt"} <= {p.name for p in output.iterdir()}
    heads = result.model.m3_heads
    assert heads.sparse_linear.weight.requires_grad and heads.colbert_linear.out_features == 32  # the hidden size
    reloaded = BGEM3Model(str(output))
    assert reloaded.modes == ["dense", "sparse", "colbert"]
    for name, parameter in reloaded.m3_heads.state_dict().items():
        assert torch.equal(parameter, heads.state_dict()[name].cpu()), name
    # The base had dense only: the other modes are reported for the fine-tuned model alone.
    assert result.comparison.modes["sparse"].models == ["fine-tuned"]
    assert result.comparison.modes["dense"].models == ["base", "fine-tuned"]
    assert "st-bge added new ones (randomly initialised" in (output / "README.md").read_text()


def test_an_m3_loss_on_a_model_without_heads_stops_before_training(tiny_bert_path, beir_folder, tmp_path, capsys):
    from st_bge.cli import main

    argv = flags(model_name_or_path=tiny_bert_path, dataset_name_or_path=beir_folder, output_dir=tmp_path / "x")
    assert main(["train", str(RECIPES / "quickstart.yaml"), *argv, "--loss", "m3_unified"]) == 2
    assert capsys.readouterr().err.splitlines()[-1] == (  # after the model-loading progress bar
        "st-bge: error: loss 'm3_unified' trains the sparse, colbert head(s) (m3_train_heads), which the model does not "
        "have: set m3_add_heads: true to give it new ones, or leave them out of m3_train_heads"
    )
    assert not (tmp_path / "x").exists()
