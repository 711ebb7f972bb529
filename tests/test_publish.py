"""What `st-bge push` uploads, built locally: the adapter with a Hub base id, the merged model, the card, ONNX."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pytest
import torch
import yaml
from conftest import NO_EVAL_DURING_TRAINING, RECIPES, TOPICS, assert_same_m3_outputs, flags
from huggingface_hub import HfApi, ModelCard, ModelCardData
from sentence_transformers import SentenceTransformer

from st_bge.cli import main
from st_bge.config import ExportArguments, parse_recipe
from st_bge.errors import ConfigError
from st_bge.m3 import BGEM3Model
from st_bge.modeling import set_pooling
from st_bge.onnx_export import export_model
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
    fine_tuned = results["modes"]["dense"]["scores"]["fine-tuned"]
    domain = results["modes"]["dense"]["eval_set"]["name"]
    by_metric = {r.metric_name: r.metric_value for r in data.eval_results if r.dataset_name == domain}
    assert by_metric == {metric: round(value, 4) for metric, value in fine_tuned.items()}
    # The forgetting check, where the run had one, is a dataset entry of its own after the domain's.
    general = results.get("forgetting", {}).get("modes", {}).get("dense", {}).get("eval_set", {}).get("name")
    assert {r.dataset_name for r in data.eval_results} == {domain, *([general] if general else [])}
    assert {result.task_type for result in data.eval_results} == {"information-retrieval"}
    assert {"sentence-transformers", "st-bge", "lora", "peft"} <= set(data.tags)
    assert ModelCardData(**data.to_dict()).to_dict() == data.to_dict()
    front_matter = yaml.safe_load(card.content.split("---")[1])
    assert (
        front_matter["model-index"][0]["results"][0]["dataset"]["name"]
        == results["modes"]["dense"]["eval_set"]["name"]
    )
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


@pytest.mark.parametrize("pooling", ["mean", "lasttoken", "max"])
def test_onnx_check_pools_through_the_models_own_modules(tiny_bge_model, beir_folder, tmp_path, pooling):
    """The ONNX file replaces the encoder only: whatever pooling the model has (not only CLS and mean), its
    embeddings equal PyTorch's, normalised or not."""
    set_pooling(tiny_bge_model, pooling, normalize=False)
    without_normalize = SentenceTransformer(
        modules=[module for module in tiny_bge_model if module is not tiny_bge_model[-1]]
    )
    without_normalize.save(str(tmp_path / "model"))
    args = ExportArguments(
        model_dir=str(tmp_path / "model"),
        output_dir=str(tmp_path / "onnx"),
        check_dataset=str(beir_folder),
        quantize=False,
    )
    (check,) = export_model(args)
    assert check.cosine_min > 0.9999
    reference = without_normalize.encode(["def add(a, b): return a + b"])
    assert abs(float((reference**2).sum()) - 1.0) > 1e-3  # unnormalised: the check compares more than directions


# ---------------------------------------------------------------- end to end, through a Hub on 127.0.0.1


@pytest.fixture
def hub(hub_server, tiny_bert_path):
    """The loopback Hub with the base model on it, as `BAAI/bge-m3` is on the real one."""
    api = HfApi()
    api.create_repo(BASE_ID)
    api.upload_folder(repo_id=BASE_ID, folder_path=tiny_bert_path)
    return hub_server


def commits(repo_id, revision="main") -> list[str]:
    return [commit.commit_id for commit in HfApi().list_repo_commits(repo_id, revision=revision)]


def embeddings(name_or_path, revision=None):
    return SentenceTransformer(str(name_or_path), revision=revision).encode(TEXTS, convert_to_tensor=True)


def test_push_adapter_and_merged_then_anyone_loads_them(hub, adapter_dir, capsys):
    local = embeddings(adapter_dir)
    code = main(["push", str(adapter_dir), "--repo_id", "user/tiny", "--variant", "both", "--base_model", BASE_ID])
    assert code == 0, capsys.readouterr().err
    out = capsys.readouterr().out
    assert "Pushed the adapter to user/tiny@main" in out and "Pushed the merged to user/tiny@merged" in out
    assert len(commits("user/tiny")) == 2  # the repo's initial commit + ONE commit with the adapter
    assert len(commits("user/tiny", "merged")) == 3  # the branch starts at main, then ONE merged commit
    main_files = hub.files("user/tiny")
    assert "adapter_model.safetensors" in main_files and "model.safetensors" not in main_files
    assert json.loads(main_files["adapter_config.json"])["base_model_name_or_path"] == BASE_ID
    assert "model.safetensors" in hub.files("user/tiny", "merged")
    # A fresh cache (the fixture's HF_HOME) and nothing local: both load and encode like the local model.
    assert torch.allclose(embeddings("user/tiny"), local, atol=1e-5)
    assert torch.allclose(embeddings("user/tiny", revision="merged"), local, atol=1e-5)
    assert not hub.unhandled


def test_pushing_onto_a_model_needs_overwrite_or_a_pr(hub, adapter_dir, capsys):
    argv = ["push", str(adapter_dir), "--repo_id", "user/tiny", "--base_model", BASE_ID]
    assert main(argv) == 0
    before = commits("user/tiny")
    assert main(argv) == 2
    assert "user/tiny@main already holds a model: pass --overwrite" in capsys.readouterr().err
    assert commits("user/tiny") == before

    assert main([*argv, "--variant", "merged", "--create_pr", "true"]) == 0
    assert commits("user/tiny") == before and "model.safetensors" in hub.files("user/tiny", "refs/pr/1")

    assert main([*argv, "--variant", "merged", "--overwrite", "true"]) == 0
    files = hub.files("user/tiny")
    assert "model.safetensors" in files and "adapter_config.json" not in files  # replaced, not mixed


def test_a_failed_upload_leaves_the_hub_as_it_was(hub, adapter_dir, capsys):
    hub.fail_next_commit, hub.commit_failure_status = True, 422
    argv = ["push", str(adapter_dir), "--repo_id", "user/new-repo", "--base_model", BASE_ID]
    assert main(argv) == 2
    error = capsys.readouterr().err
    assert "failed and the Hub repository was left as it was" in error
    assert "user/new-repo" not in hub.repos  # the repository created for the push is gone again

    assert main(argv) == 0
    hub.fail_next_commit = True
    assert main([*argv, "--variant", "merged", "--revision", "v2"]) == 2
    assert set(hub.repos["user/new-repo"]["branches"]) == {"main"}  # nor is the branch created for it


def test_the_token_is_sent_but_never_written_uploaded_or_logged(hub, adapter_dir, tmp_path, capsys, caplog):
    caplog.set_level("DEBUG")
    argv = ["push", str(adapter_dir), "--repo_id", "user/tiny", "--variant", "both", "--base_model", BASE_ID]
    assert main([*argv, "--onnx", "true", "--private", "true"]) == 0
    token = hub.token.encode()
    assert f"Bearer {hub.token}" in hub.authorizations  # it was used, as a header
    assert token not in hub.received_bytes()  # files, card, commit messages
    written = [p for folder in (adapter_dir, Path(os.environ["HF_HOME"])) for p in folder.rglob("*") if p.is_file()]
    assert written and not [p for p in written if token in p.read_bytes()]
    captured = capsys.readouterr()
    assert hub.token not in captured.out + captured.err + caplog.text
    assert {"onnx/model.onnx", "onnx/model_qint8.onnx"} <= set(hub.files("user/tiny", "merged"))


def test_push_without_a_token_says_how_to_log_in(adapter_dir, monkeypatch, tmp_path, capsys):
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.setenv("HF_HOME", str(tmp_path))
    monkeypatch.setattr("huggingface_hub.constants.HF_TOKEN_PATH", str(tmp_path / "token"))
    monkeypatch.setattr("huggingface_hub.constants.HF_STORED_TOKENS_PATH", str(tmp_path / "stored_tokens"))
    assert main(["push", str(adapter_dir), "--repo_id", "user/tiny"]) == 2
    assert "no Hub token: set the HF_TOKEN environment variable or run `hf auth login`" in capsys.readouterr().err


def test_export_of_a_folder_that_is_not_a_model_is_one_line(tmp_path, capsys):
    assert main(["export", str(tmp_path / "nothing"), "--output_dir", str(tmp_path / "onnx")]) == 2
    assert capsys.readouterr().err == (
        f"st-bge: error: {tmp_path / 'nothing'}: not a Sentence Transformers folder (no modules.json); give an "
        "st-bge output\n"
    )
    assert not (tmp_path / "onnx").exists()


@pytest.fixture(scope="module")
def m3_adapter_dir(tiny_xlmr_path, beir_folder, tmp_path_factory):
    """A LoRA run on the tiny BGE-M3 (dense recipe: the heads are carried, not trained), one step."""
    output_dir = tmp_path_factory.mktemp("publish-m3") / "run"
    argv = flags(
        model_name_or_path=tiny_xlmr_path,
        dataset_name_or_path=beir_folder,
        max_steps=1,
        per_device_train_batch_size=4,
        mini_batch_size=4,
        learning_rate=1e-2,
        output_dir=output_dir,
        **NO_EVAL_DURING_TRAINING,
    )
    train(parse_recipe(["--config", str(RECIPES / "bge-m3" / "lora-cached-gist.yaml"), *argv]))
    return output_dir


def test_merged_bge_m3_pushed_to_the_hub_loads_in_flagembedding(hub_server, m3_adapter_dir, capsys):
    from FlagEmbedding import BGEM3FlagModel
    from huggingface_hub import snapshot_download

    in_memory = BGEM3Model(str(m3_adapter_dir)).encode_m3(TEXTS, batch_size=4)
    argv = ["push", str(m3_adapter_dir), "--repo_id", "user/tiny-m3", "--variant", "merged"]
    assert main(argv) == 0, capsys.readouterr().err
    files = hub_server.files("user/tiny-m3")
    assert {"model.safetensors", "sparse_linear.pt", "colbert_linear.pt", "modules.json"} <= set(files)
    assert "adapter_config.json" not in files
    snapshot = snapshot_download("user/tiny-m3")  # the fixture's fresh, empty cache: nothing local is reused
    theirs = BGEM3FlagModel(snapshot, use_fp16=False, devices="cpu").encode(
        TEXTS, batch_size=4, return_dense=True, return_sparse=True, return_colbert_vecs=True
    )
    assert_same_m3_outputs(in_memory, theirs)
    # The card tells FlagEmbedding and vLLM users how to load it (ColBERT width = hidden size here).
    card = files["README.md"].decode()
    assert 'BGEM3FlagModel("user/tiny-m3")' in card and '"architectures": ["BgeM3EmbeddingModel"]' in card
    assert not hub_server.unhandled
