"""Where a model loads from is decided before loading (`st_bge.modeling.resolve_model_path`): a mistyped folder and
an unreachable Hub each fail at once with a line that says which it is and what to do, not minutes of retries ending
in "check your internet connection"."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from huggingface_hub import HfApi

from st_bge.config import ModelArguments, parse_recipe
from st_bge.errors import ConfigError
from st_bge.modeling import load_model, resolve_model_path
from st_bge.training import train

REPO = Path(__file__).resolve().parents[1]
# Nothing listens on the discard port of the loopback address: a connection to it is refused at once.
CLOSED = "http://127.0.0.1:9"


@pytest.fixture
def hub_unreachable(monkeypatch):
    """Online mode (HF_HUB_OFFLINE unset) with a Hub endpoint that refuses connections: a machine without network."""
    import huggingface_hub.constants as hub_constants

    monkeypatch.setattr(hub_constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(hub_constants, "ENDPOINT", CLOSED)


def train_with_model(model: str, tmp_path: Path, beir_folder: Path):
    argv = ["--config", "recipes/quickstart.yaml", "--model_name_or_path", model]
    recipe = parse_recipe([*argv, "--dataset_name_or_path", str(beir_folder), "--output_dir", str(tmp_path / "o")])
    started = time.perf_counter()
    with pytest.raises(ConfigError) as error:
        train(recipe)
    return str(error.value), time.perf_counter() - started


@pytest.mark.parametrize("model", ["./models/my-bge", "models/my-bge/", "/nonexistent/my-bge", "tests/my-bge"])
def test_a_missing_local_folder_is_said_to_be_one(model, tmp_path, beir_folder):
    message, seconds = train_with_model(model, tmp_path, beir_folder)
    assert message == f"model_name_or_path '{model}': no such folder"
    assert seconds < 5


def test_a_hub_id_offline_fails_at_once_naming_the_id_and_what_to_do(tmp_path, beir_folder):
    message, seconds = train_with_model("nobody/my-bge", tmp_path, beir_folder)
    assert message == (
        "model_name_or_path 'nobody/my-bge': not a local folder, and as a Hub id not in the local Hugging Face "
        "cache while HF_HUB_OFFLINE is set: give a local folder, or download it where the Hub is reachable "
        "(`hf download nobody/my-bge --local-dir models/my-bge`) and give that folder"
    )
    assert seconds < 5


def test_a_hub_id_without_network_fails_after_one_bounded_attempt(tmp_path, beir_folder, hub_unreachable, caplog):
    message, seconds = train_with_model("nobody/my-bge", tmp_path, beir_folder)
    assert message.startswith(
        f"model_name_or_path 'nobody/my-bge': not a local folder, and the Hub ({CLOSED}) could not be reached ("
    )
    assert message.endswith(
        "give a local folder, or download it where the Hub is reachable (`hf download "
        "nobody/my-bge --local-dir models/my-bge`) and give that folder"
    )
    assert seconds < 5
    assert "Retrying" not in caplog.text


@pytest.mark.parametrize(
    ("model", "expected"), [("out/nope", "HF_HUB_OFFLINE is set"), ("./out/nope", "no such folder")]
)
def test_st_bge_serve_a_missing_model_is_one_line(model, expected):
    environment = {**os.environ, "HF_HUB_OFFLINE": "1"}
    done = subprocess.run(
        [sys.executable, "-m", "st_bge.cli", "serve", model], capture_output=True, text=True, env=environment, cwd=REPO
    )
    assert done.returncode == 2
    assert done.stderr.startswith(f"st-bge: error: model '{model}': ") and expected in done.stderr
    assert done.stderr.count("\n") == 1 and "Traceback" not in done.stderr


def test_a_cached_hub_model_loads_when_the_hub_does_not_answer(hub_server, tiny_bert_path, monkeypatch):
    HfApi().create_repo("user/tiny")
    HfApi().upload_folder(repo_id="user/tiny", folder_path=tiny_bert_path)
    assert resolve_model_path("user/tiny") == "user/tiny"  # the Hub answers: loaders download
    load_model(ModelArguments(model_name_or_path="user/tiny"))  # into the cache
    import huggingface_hub.constants as hub_constants

    monkeypatch.setattr(hub_constants, "ENDPOINT", CLOSED)
    cached = resolve_model_path("user/tiny")
    assert Path(cached).is_dir() and (Path(cached) / "config.json").is_file()


def test_only_xlmr_models_on_the_hub_are_asked_for_m3_head_files(hub_server, tiny_bert_path, tiny_xlmr_path):
    """Every Hub model was asked for sparse_linear.pt and colbert_linear.pt (retried a minute each offline)."""
    for repo_id, folder in (("user/bert", tiny_bert_path), ("user/xlmr", tiny_xlmr_path)):
        HfApi().create_repo(repo_id)
        HfApi().upload_folder(repo_id=repo_id, folder_path=folder)
    hub_server.requests.clear()
    load_model(ModelArguments(model_name_or_path="user/bert"))
    assert not [r.path for r in hub_server.requests if r.path.endswith(("sparse_linear.pt", "colbert_linear.pt"))]
    model = load_model(ModelArguments(model_name_or_path="user/xlmr"))
    assert [r.path for r in hub_server.requests if r.path.endswith("sparse_linear.pt")]
    assert model.modes == ["dense", "sparse", "colbert"]
