from __future__ import annotations

from pathlib import Path

import pytest

from st_bge.config import parse_recipe
from st_bge.errors import ConfigError

RECIPE = """\
# Model
model_name_or_path: BAAI/bge-m3
use_lora: true
# Data
dataset_name_or_path: data/mbpp_sanitized
# Loss
loss: cached_gist
temperature: 0.02
# Training
learning_rate: 2.0e-4
per_device_train_batch_size: 16
eval_metrics: [ndcg@10, recall@100]
"""


@pytest.fixture
def recipe_file(tmp_path):
    path = tmp_path / "recipe.yaml"
    path.write_text(RECIPE)
    return path


def test_yaml_gives_defaults(recipe_file):
    recipe = parse_recipe(["--config", str(recipe_file)])
    assert recipe.model.model_name_or_path == "BAAI/bge-m3"
    assert recipe.model.use_lora is True
    assert recipe.loss.loss == "cached_gist"
    assert recipe.loss.temperature == 0.02
    assert recipe.training.learning_rate == 2e-4
    assert recipe.training.per_device_train_batch_size == 16
    assert recipe.evaluation.eval_metrics == ["ndcg@10", "recall@100"]
    # st-bge's own defaults for a BGE fine-tune
    assert recipe.training.batch_sampler == "no_duplicates"


def test_flags_override_yaml(recipe_file):
    recipe = parse_recipe(
        [
            "--config",
            str(recipe_file),
            "--learning_rate",
            "1e-5",
            "--loss",
            "mnrl",
            "--use_lora",
            "false",
            "--column_mapping",
            '{"anchor": "q", "positive": "d"}',
        ]
    )
    assert recipe.training.learning_rate == 1e-5
    assert recipe.loss.loss == "mnrl"
    assert recipe.model.use_lora is False
    assert recipe.data.column_mapping == {"anchor": "q", "positive": "d"}
    assert recipe.model.model_name_or_path == "BAAI/bge-m3"  # untouched fields keep the YAML value


def test_unknown_yaml_key_names_key_file_and_line(tmp_path):
    path = tmp_path / "typo.yaml"
    path.write_text("model_name_or_path: BAAI/bge-m3\ndataset_name_or_path: x\nlearning_rat: 1e-5\n")
    with pytest.raises(ConfigError) as error:
        parse_recipe(["--config", str(path)])
    assert str(error.value) == f"{path}, line 3: unknown key 'learning_rat' (did you mean 'learning_rate'?)"


def test_unknown_flag_is_an_error(recipe_file):
    with pytest.raises(ConfigError) as error:
        parse_recipe(["--config", str(recipe_file), "--temprature", "0.05"])
    assert str(error.value) == "unknown command-line argument '--temprature' (did you mean 'temperature'?)"


def test_bad_value_names_key_and_line(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("model_name_or_path: m\ndataset_name_or_path: d\nloss: triplet\n")
    with pytest.raises(ConfigError) as error:
        parse_recipe(["--config", str(path)])
    assert str(error.value) == (
        f"{path}, line 3: key 'loss': 'triplet' is not one of ['mnrl', 'cached_mnrl', 'gist', 'cached_gist', "
        "'m3_unified', 'cached_m3_unified']"
    )


def test_cross_field_check(recipe_file):
    with pytest.raises(ConfigError, match="eval_primary_metric 'mrr@10' must be one of eval_metrics"):
        parse_recipe(["--config", str(recipe_file), "--eval_primary_metric", "mrr@10"])


@pytest.mark.parametrize("name", ["m3_ensemble_weights", "m3_loss_weights", "eval_hybrid_weights"])
@pytest.mark.parametrize("weights", [["1", "0.3"], ["1", "-0.1", "1"]], ids=["two", "negative"])
def test_mode_weights_are_three_non_negative_numbers(recipe_file, name, weights):
    """Every field of per-mode weights (loss, distillation ensemble, hybrid retrieval) is checked the same way."""
    with pytest.raises(ConfigError, match=rf"^{name}: three non-negative weights \(dense, sparse, colbert\)"):
        parse_recipe(["--config", str(recipe_file), f"--{name}", *weights])


def test_a_hub_token_in_a_recipe_is_refused_and_never_in_the_recipe_dict(recipe_file):
    with pytest.raises(ConfigError, match=r"hub_token does not belong in a recipe .* set the HF_TOKEN"):
        parse_recipe(["--config", str(recipe_file), "--hub_token", "hf_secret"])
    recipe = parse_recipe(["--config", str(recipe_file)])
    recipe.training.hub_token = "hf_secret"  # set by code rather than by a recipe
    assert "hf_secret" not in repr(recipe.to_dict())


def test_yaml_false_overrides_a_true_default(tmp_path):
    path = tmp_path / "bools.yaml"
    path.write_text(
        "model_name_or_path: m\ndataset_name_or_path: d\ngist_contrast_anchors: false\ndataloader_pin_memory: false\n"
    )
    recipe = parse_recipe(["--config", str(path)])
    assert recipe.loss.gist_contrast_anchors is False
    assert recipe.training.dataloader_pin_memory is False
    assert parse_recipe(["--config", str(path), "--gist_contrast_anchors", "true"]).loss.gist_contrast_anchors is True


def test_a_recipe_path_parses_like_its_config_flag():
    """A notebook user writes `parse_recipe("recipe.yaml")`, not argv."""
    assert parse_recipe("recipes/quickstart.yaml") == parse_recipe(["--config", "recipes/quickstart.yaml"])


@pytest.mark.parametrize("where", ["yaml", "flag"])
def test_a_renamed_field_keeps_its_old_name_with_a_warning(tmp_path, where):
    recipe = tmp_path / "old.yaml"
    lines = ["model_name_or_path: BAAI/bge-m3", "loss: m3_unified"]
    argv = ["--config", str(recipe)]
    if where == "yaml":
        lines.append("m3_heads: [dense, sparse]")
    else:
        argv += ["--m3_heads", "dense", "sparse"]
    recipe.write_text("\n".join(lines) + "\n")
    with pytest.warns(FutureWarning, match="'m3_heads' is now called 'm3_train_heads'"):
        parsed = parse_recipe(argv)
    assert parsed.loss.m3_train_heads == ["dense", "sparse"]
    assert "m3_train_heads" in parsed.given


RECIPES = Path(__file__).resolve().parents[1] / "recipes"


@pytest.mark.parametrize("path", sorted(RECIPES.rglob("*.yaml")), ids=lambda path: str(path.relative_to(RECIPES)))
def test_every_shipped_recipe_parses(path):
    if path.parent.name == "eval":
        from st_bge.config import parse_eval_recipe

        parse_eval_recipe(path)
    else:
        parse_recipe(path)
