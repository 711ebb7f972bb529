"""What `st-bge push` uploads, built locally: the adapter with a Hub base id, the merged model, the card, ONNX."""

from __future__ import annotations

import hashlib
import json

import pytest
import torch
import yaml
from conftest import NO_EVAL_DURING_TRAINING, RECIPES, TOPICS, flags
from huggingface_hub import ModelCard, ModelCardData
from sentence_transformers import SentenceTransformer

from st_bge.config import ExportArguments, parse_recipe
from st_bge.errors import ConfigError
from st_bge.export import export_model
from st_bge.publish import stage
from st_bge.training import train

BASE_ID = "someone/tiny-bge-bert"
TEXTS = [text for pair in TOPICS.values() for text in pair]


@pytest.fixture(scope="module")
def adapter_dir(tiny_bert_path, beir_folder, tmp_path_factory):
    """A LoRA run with a held-out evaluation (so the card has results), one training step."""
    output_dir = tmp_path_factory.mktemp("publish") / "run"
    argv = flags(
        model_name_or_path=tiny_bert_path,
        dataset_name_or_path=beir_folder,
        max_steps=1,
        per_device_train_batch_size=4,
        mini_batch_size=4,
        lora_target_modules=["query", "value"],
        output_dir=output_dir,
        **NO_EVAL_DURING_TRAINING,
    )
    train(parse_recipe(["--config", str(RECIPES / "quickstart.yaml"), *argv]))
    return output_dir


def folder_digest(folder) -> str:
    digest = hashlib.sha256()
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        digest.update(str(path.relative_to(folder)).encode() + path.read_bytes())
    return digest.hexdigest()


def test_an_adapter_on_a_local_base_needs_its_hub_id(adapter_dir, tmp_path):
    with pytest.raises(ConfigError, match="pass --base_model <Hub id of that model>"):
        stage(adapter_dir, tmp_path / "staged", variant="adapter", repo_id="user/tiny")
    assert not (tmp_path / "staged").exists()


def test_staged_adapter_names_the_hub_base_and_no_local_path(adapter_dir, tiny_bert_path, tmp_path):
    before = folder_digest(adapter_dir)
    staged = stage(adapter_dir, tmp_path / "staged", variant="adapter", repo_id="user/tiny", base_model=BASE_ID)
    assert json.loads((staged / "adapter_config.json").read_text())["base_model_name_or_path"] == BASE_ID
    for path in staged.rglob("*"):
        if path.suffix in (".json", ".md"):
            text = path.read_text()
            assert str(tiny_bert_path) not in text and str(adapter_dir) not in text, path.name
    assert {"eval_results.json", "training_log.json"} <= {p.name for p in staged.iterdir()}
    assert not list(staged.glob("data_quality*")) and not list(staged.glob("checkpoint-*"))
    assert folder_digest(adapter_dir) == before  # the user's folder is never touched


def test_merged_model_encodes_like_the_adapter_without_peft_files(adapter_dir, tmp_path):
    staged = stage(adapter_dir, tmp_path / "merged", variant="merged", repo_id="user/tiny", base_model=BASE_ID)
    assert not (staged / "adapter_config.json").exists() and (staged / "model.safetensors").is_file()
    adapted = SentenceTransformer(str(adapter_dir)).encode(TEXTS, convert_to_tensor=True)
    merged = SentenceTransformer(str(staged)).encode(TEXTS, convert_to_tensor=True)
    assert torch.allclose(merged, adapted, atol=1e-5)
    assert "LoRA adapter" not in (staged / "README.md").read_text().split("## Usage")[0]


def test_card_metadata_round_trips_through_huggingface_hub(adapter_dir, tmp_path):
    staged = stage(adapter_dir, tmp_path / "staged", variant="adapter", repo_id="user/tiny", base_model=BASE_ID)
    card = ModelCard.load(staged / "README.md")
    data = card.data
    assert (data.base_model, data.library_name, data.pipeline_tag) == (
        BASE_ID,
        "sentence-transformers",
        "sentence-similarity",
    )
    results = json.loads((adapter_dir / "eval_results.json").read_text())
    fine_tuned = results["scores"]["fine-tuned"]
    by_metric = {result.metric_name: result.metric_value for result in data.eval_results}
    assert by_metric == {metric: round(value, 4) for metric, value in fine_tuned.items()}
    assert {result.task_type for result in data.eval_results} == {"information-retrieval"}
    assert ModelCardData(**data.to_dict()).to_dict() == data.to_dict()
    front_matter = yaml.safe_load(card.content.split("---")[1])
    assert front_matter["model-index"][0]["results"][0]["dataset"]["name"] == results["eval_set"]["name"]
    assert 'SentenceTransformer("user/tiny")' in card.text
    for query, code in TOPICS.values():
        assert query not in card.content and code not in card.content


def test_onnx_export_agrees_with_pytorch(adapter_dir, beir_folder, tmp_path):
    args = ExportArguments(
        model_dir=str(adapter_dir), output_dir=str(tmp_path / "onnx"), check_dataset=str(beir_folder)
    )
    fp32, int8 = export_model(args)
    assert (fp32.file, int8.file) == ("model.onnx", "model_qint8.onnx")
    assert fp32.texts == int8.texts == 12
    assert fp32.cosine_min > 0.9999
    assert int8.cosine_mean > 0.95
    saved = json.loads((tmp_path / "onnx" / "onnx_check.json").read_text())
    assert [entry["file"] for entry in saved] == ["model.onnx", "model_qint8.onnx"]
