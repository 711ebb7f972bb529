"""The MFU meter's FLOP count (benchmarks/mfu.py): a hand count on a toy shape, and PyTorch's own FLOP counter on
a real BERT forward + backward, so that MFU rests on the FLOPs the model does."""

from __future__ import annotations

import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from mfu import Utilisation, encoder_flops


def test_hand_count_of_one_layer():
    """h=4, i=8, 1 layer, batch 1 x length 2: projections 4 x 2·2·4·4 = 256, attention 2 x 2·1·2·2·4 = 64,
    MLP 2 x 2·2·4·8 = 256; forward 576, with backward 3 x 576."""
    config = SimpleNamespace(hidden_size=4, intermediate_size=8, num_hidden_layers=1)
    assert encoder_flops(config, 1, 2, backward=False) == 576
    assert encoder_flops(config, 1, 2) == 1728


@pytest.mark.parametrize("attention", ["eager", "sdpa"])
def test_equals_pytorchs_flop_counter_on_bert_forward_and_backward(attention):
    from torch.utils.flop_counter import FlopCounterMode
    from transformers import BertConfig, BertModel

    config = BertConfig(
        vocab_size=100, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64
    )
    config._attn_implementation = attention
    model = BertModel(config, add_pooling_layer=False)
    input_ids = torch.randint(0, 100, (3, 7))
    counter = FlopCounterMode(display=False)
    with counter:
        model(input_ids=input_ids).last_hidden_state.sum().backward()
    assert counter.get_total_flops() == encoder_flops(config, 3, 7)


def test_mfu_is_against_the_faster_peak_with_the_spread():
    run = Utilisation(flops_per_second=50.0, peak_before=100.0, peak_after=80.0)
    assert run.mfu == 0.5 and run.mfu_spread == (0.5, 0.625)
    assert run.to_dict()["mfu_spread"] == pytest.approx(0.125)
