from __future__ import annotations

import math

import pytest
import torch
from conftest import train_two_steps
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
