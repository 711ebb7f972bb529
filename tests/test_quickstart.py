"""The offline quickstart end to end with the real all-MiniLM-L6-v2 (about 5 minutes on 2 CPU cores)."""

from __future__ import annotations

import json

import pytest
from conftest import REPO

from st_bge.config import parse_recipe
from st_bge.training import train


@pytest.mark.slow
def test_quickstart_improves_ndcg_on_held_out_mbpp(tmp_path, monkeypatch):
    monkeypatch.chdir(REPO)  # the recipe names the shipped data by its repository path
    recipe = parse_recipe(["--config", "recipes/quickstart.yaml", "--output_dir", str(tmp_path / "quickstart")])
    result = train(recipe)
    results = json.loads((result.output_dir / "eval_results.json").read_text())
    assert results["eval_set"]["queries"] == 85 and results["eval_set"]["corpus"] == 427
    assert results["scores"]["fine-tuned"]["ndcg@10"] > results["scores"]["base"]["ndcg@10"]
