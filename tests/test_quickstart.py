"""The offline quickstart end to end with the real all-MiniLM-L6-v2 (a few minutes on 2 CPU cores: `make test-slow`)."""

from __future__ import annotations

import json

import pytest
from conftest import REPO

from st_bge.config import parse_recipe
from st_bge.training import train


@pytest.mark.slow
def test_quickstart_reproduces_the_readme_table_on_mbpp_test(tmp_path, monkeypatch):
    """Trained on MBPP's train split, the epoch chosen on dev, scored on the 257 test queries: the README's table."""
    monkeypatch.chdir(REPO)  # the recipe names the shipped data by its repository path
    recipe = parse_recipe(["--config", "recipes/quickstart.yaml", "--output_dir", str(tmp_path / "quickstart")])
    result = train(recipe)
    dense = json.loads((result.output_dir / "eval_results.json").read_text())["modes"]["dense"]
    assert dense["eval_set"]["queries"] == 257 and dense["eval_set"]["corpus"] == 427
    assert dense["scores"]["base"]["ndcg@10"] == pytest.approx(0.8204, abs=1e-4)
    assert dense["scores"]["fine-tuned"]["ndcg@10"] == pytest.approx(0.8212, abs=1e-4)
