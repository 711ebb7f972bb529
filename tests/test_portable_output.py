"""An output folder works wherever it is copied: its adapter names the base model by Hub id, and the Hub cache
resolves that id to the PyPI-shipped copy offline (`st_bge.modeling.register_in_hub_cache`)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import torch
from conftest import train_two_steps
from sentence_transformers import SentenceTransformer

MINILM = "sentence-transformers/all-MiniLM-L6-v2"
TEXTS = ["reverse a string", "def rev(s): return s[::-1]"]


def test_a_copied_lora_output_folder_loads_with_plain_sentence_transformers(beir_folder, tmp_path):
    """adapter_config.json recorded an absolute path into the virtual environment: copied elsewhere (or to another
    machine), `SentenceTransformer(folder)` could not find its base."""
    result = train_two_steps(
        MINILM, beir_folder, tmp_path / "run", use_lora=True, lora_target_modules=["query", "value"], loss="mnrl"
    )
    config = json.loads((tmp_path / "run" / "adapter_config.json").read_text())
    assert config["base_model_name_or_path"] == MINILM
    expected = result.model.encode(TEXTS, convert_to_tensor=True).cpu()

    copy = shutil.copytree(tmp_path / "run", tmp_path / "elsewhere" / "my-model")
    shutil.rmtree(tmp_path / "run")
    script = (
        "import sys, torch; from sentence_transformers import SentenceTransformer; "
        f"torch.save(SentenceTransformer(sys.argv[1]).encode({TEXTS!r}, convert_to_tensor=True), sys.argv[2])"
    )
    out = tmp_path / "embeddings.pt"
    environment = {**os.environ, "HF_HUB_OFFLINE": "1"}
    done = subprocess.run(
        [sys.executable, "-c", script, str(copy), str(out)], capture_output=True, text=True, env=environment
    )
    assert done.returncode == 0, done.stderr[-2000:]
    torch.testing.assert_close(torch.load(out), expected, atol=1e-5, rtol=1e-4)
    assert isinstance(SentenceTransformer(str(copy)), SentenceTransformer)
