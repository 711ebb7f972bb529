"""BGE-M3's three modes: parity with FlagEmbedding (the reference), save/reload in BAAI's layout, missing heads."""

from __future__ import annotations

import copy
import json
import logging
import shutil

import numpy as np
import pytest
import torch
from conftest import TOPICS, assert_same_m3_outputs
from sentence_transformers import SentenceTransformer

from st_bge.config import ModelArguments
from st_bge.errors import ConfigError
from st_bge.m3 import BGEM3Model, M3Embeddings
from st_bge.m3.card import heads_notes
from st_bge.modeling import add_lora

TEXTS = [text for pair in TOPICS.values() for text in pair]
PAIRS = list(TOPICS.values())
STANDARD_MODULES = [
    "sentence_transformers.base.modules.transformer.Transformer",
    "sentence_transformers.sentence_transformer.modules.pooling.Pooling",
    "sentence_transformers.base.modules.normalize.Normalize",
]


@pytest.fixture(scope="module")
def m3(tiny_xlmr_path) -> BGEM3Model:
    return BGEM3Model(str(tiny_xlmr_path))


@pytest.fixture(scope="module")
def flag_model(tiny_xlmr_path):
    """FlagEmbedding's own BGE-M3 inference class on the same folder (fp32, CPU, same maximum length)."""
    from FlagEmbedding import BGEM3FlagModel

    return BGEM3FlagModel(
        str(tiny_xlmr_path), use_fp16=False, devices="cpu", query_max_length=128, passage_max_length=128
    )


def flag_encode(flag_model, texts, batch_size=5):
    return flag_model.encode(
        texts, batch_size=batch_size, return_dense=True, return_sparse=True, return_colbert_vecs=True
    )


def encoded(model: BGEM3Model) -> M3Embeddings:
    return model.encode_m3(TEXTS, batch_size=5)


def assert_same_embeddings(a: M3Embeddings, b: M3Embeddings, atol: float = 1e-6) -> None:
    assert torch.allclose(a.dense, b.dense, atol=atol)
    assert torch.allclose(a.sparse.to_dense(), b.sparse.to_dense(), atol=atol)
    assert all(torch.allclose(x, y, atol=atol) for x, y in zip(a.colbert, b.colbert, strict=True))


def test_encode_equals_flagembedding(m3, flag_model):
    ours = encoded(m3)
    # The fixture's heads give every mode something to compare: most texts have lexical weights.
    assert sum(len(w) > 0 for w in ours.lexical_weights()) >= len(TEXTS) - 2
    assert_same_m3_outputs(ours, flag_encode(flag_model, TEXTS))


def test_compute_score_equals_flagembedding(m3, flag_model):
    for weights in ([1.0, 1.0, 1.0], [0.4, 0.2, 0.4]):
        ours = m3.compute_score(PAIRS, weights_for_different_modes=weights)
        # batch_size=1: FlagEmbedding pads a batch's passages with zero ColBERT vectors, which can win the max when
        # every real token similarity is negative; one pair per batch is its unpadded score, ours.
        theirs = flag_model.compute_score(PAIRS, batch_size=1, weights_for_different_modes=weights)
        assert set(ours) == set(theirs)
        for key in ours:
            np.testing.assert_allclose(ours[key], theirs[key], atol=1e-5, err_msg=key)


def test_lexical_weights_drop_special_tokens_and_keep_the_largest_repeat(m3):
    text = "sort sort sort a list"
    m3.eval()  # no dropout, as in encode_m3
    features = m3.preprocess([text])
    out = m3(features, m3_outputs=True)
    ids, weights = features["input_ids"][0].tolist(), out["token_weights"][0].tolist()
    special = {m3.tokenizer.cls_token_id, m3.tokenizer.eos_token_id, m3.tokenizer.pad_token_id}
    expected: dict[str, float] = {}
    for token_id, weight in zip(ids, weights, strict=True):
        if token_id not in special and weight > 0:
            expected[str(token_id)] = max(expected.get(str(token_id), 0.0), weight)
    assert ids.count(ids[2]) >= 2  # the repeated word is one token id, repeated
    lexical = m3.encode_m3([text], modes=["sparse"]).lexical_weights()[0]
    assert lexical == pytest.approx(expected)
    assert not special & {int(token_id) for token_id in lexical}


def test_multi_vector_encoder_view_equals_the_colbert_mode(m3):
    view = m3.to_multi_vector_encoder()
    assert view.similarity_fn_name == "meanmaxsim"
    ours = encoded(m3)
    for theirs, mine in zip(view.encode_document(TEXTS), ours.colbert, strict=True):
        assert torch.allclose(torch.as_tensor(theirs), mine, atol=1e-6)
    queries, documents = view.encode_query(TEXTS[:4]), view.encode_document(TEXTS[4:])
    expected = m3.m3_similarity(ours.select(range(4)), ours.select(range(4, len(TEXTS))))["colbert"]
    assert torch.allclose(view.similarity(queries, documents), expected, atol=1e-5)


def test_full_model_saves_in_baai_layout_and_reloads_identically(m3, tmp_path):
    folder = tmp_path / "saved"
    m3.save(str(folder))
    modules = json.loads((folder / "modules.json").read_text())
    assert [module["type"] for module in modules] == STANDARD_MODULES  # no custom class: no trust_remote_code
    assert {"config.json", "model.safetensors", "sparse_linear.pt", "colbert_linear.pt"} <= {
        p.name for p in folder.iterdir()
    }
    assert torch.load(folder / "sparse_linear.pt", weights_only=True).keys() == {"weight", "bias"}
    reloaded = BGEM3Model(str(folder))
    assert_same_embeddings(encoded(reloaded), encoded(m3))
    # Plain sentence-transformers still loads the dense model from the same folder.
    dense = SentenceTransformer(str(folder)).encode(TEXTS, convert_to_tensor=True)
    assert torch.allclose(dense, encoded(m3).dense, atol=1e-5)  # other batches, other padding: float noise only


def test_lora_saves_adapter_plus_heads_and_reloads_identically(m3, tmp_path):
    model = copy.deepcopy(m3)
    add_lora(
        model, ModelArguments(model_name_or_path="x", use_lora=True, lora_r=4, lora_target_modules=["all-linear"])
    )
    torch.manual_seed(1)
    with torch.no_grad():  # a fresh adapter (lora_B = 0) and untouched heads would hide a reload that drops them
        for name, parameter in model.named_parameters():
            if "lora_B" in name or "m3_heads" in name:
                parameter.add_(torch.randn_like(parameter))
    expected = encoded(model)
    assert not torch.allclose(expected.dense, encoded(m3).dense, atol=1e-3)
    folder = tmp_path / "adapter"
    model.save(str(folder))
    assert {"adapter_model.safetensors", "adapter_config.json", "sparse_linear.pt", "colbert_linear.pt"} <= {
        p.name for p in folder.iterdir()
    }
    assert not (folder / "model.safetensors").exists()
    reloaded = BGEM3Model(str(folder))
    assert reloaded.active_adapters() == ["default"]
    assert_same_embeddings(encoded(reloaded), expected)
    dense = SentenceTransformer(str(folder)).encode(TEXTS, convert_to_tensor=True)
    assert torch.allclose(dense, expected.dense, atol=1e-5)  # other batches, other padding: float noise only


def test_a_missing_head_is_a_warning_never_a_random_head(tiny_xlmr_path, tmp_path, caplog):
    folder = tmp_path / "bge-m3-without-colbert"
    shutil.copytree(tiny_xlmr_path, folder)
    (folder / "colbert_linear.pt").unlink()
    with caplog.at_level(logging.WARNING, logger="st_bge"):
        model = BGEM3Model(str(folder))
    assert model.modes == ["dense", "sparse"] and model.m3_heads.colbert_linear is None
    assert f"{folder} has no colbert_linear.pt: its colbert mode is untrained and left out" in caplog.text
    with pytest.raises(ValueError, match="this model has no colbert mode"):
        model.encode_m3(TEXTS[:1], modes=["colbert"])
    assert "this model has no colbert mode" in heads_notes(model)[0]


def test_a_head_of_the_wrong_shape_is_one_message(tiny_xlmr_path, tmp_path):
    folder = tmp_path / "bad-heads"
    shutil.copytree(tiny_xlmr_path, folder)
    torch.save(torch.nn.Linear(16, 1).state_dict(), folder / "sparse_linear.pt")
    with pytest.raises(ConfigError) as error:
        BGEM3Model(str(folder))
    assert str(error.value) == (
        f"{folder / 'sparse_linear.pt'}: expected a Linear state dict with weight (1, 32), got weight (1, 16)"
    )
