"""The card of a run is one to publish as it stands: license and datasets, the real usage line, the results with
their significance in words (and a caution for few queries), the settings that differ from the defaults, and the
papers of what the run used, not of what it did not."""

from __future__ import annotations

import pytest
import yaml
from conftest import train_two_steps
from sentence_transformers import SentenceTransformer

from st_bge.model_card import attach_card_data, card_data_from_folder

MINILM = "sentence-transformers/all-MiniLM-L6-v2"


@pytest.fixture(scope="module")
def card(beir_folder, tmp_path_factory):
    output = tmp_path_factory.mktemp("card") / "run"
    train_two_steps(
        MINILM,
        beir_folder,
        output,
        use_lora=True,
        lora_target_modules=["query", "value"],
        card_datasets=["google-research-datasets/mbpp"],
        eval_enabled=True,
    )
    text = (output / "README.md").read_text()
    return text, yaml.safe_load(text.split("---")[1]), output


def test_a_card_attached_to_a_loaded_model_replaces_its_own_readme(card, tmp_path):
    """Upstream: a loaded SentenceTransformer keeps its folder's README as `_model_card_text` and saves it back as
    the card unless the card data carries the trainer's `generated_from_trainer` tag, which a model saved outside
    training (`st-bge push`'s staging) does not. st-bge reads the license from it, then clears it
    (`model_card.attach_card_data`). If this fails, sentence-transformers renamed or dropped that attribute: the
    license comes back None, or all-MiniLM's own card (its 'Community week using JAX/Flax' background) is saved."""
    _, _, output = card
    model = SentenceTransformer(MINILM)
    attach_card_data(model, card_data_from_folder(output), base_model=MINILM)
    model.save(str(tmp_path))
    text = (tmp_path / "README.md").read_text()
    assert yaml.safe_load(text.split("---")[1])["license"] == "apache-2.0"
    assert "Community week using JAX/Flax" not in text and "st-bge" in text


def test_the_card_has_the_base_models_license_and_the_datasets(card):
    _, metadata, _ = card
    assert metadata["license"] == "apache-2.0"  # all-MiniLM-L6-v2's, from its own card
    assert metadata["datasets"] == ["google-research-datasets/mbpp"]


def test_the_model_index_names_the_model_not_a_local_path(card):
    _, metadata, output = card
    name = metadata["model-index"][0]["name"]
    assert name == f"{MINILM} fine-tuned with st-bge on tiny-beir"
    assert str(output) not in name and "/tmp" not in name


def test_the_usage_loads_this_model_without_stock_sentences(card):
    text, _, output = card
    assert f'model = SentenceTransformer("{output}")' in text
    assert "sentence_transformers_model_id" not in text and "Red Planet" not in text


def test_the_results_say_significance_in_words_and_caution_for_few_queries(card):
    text, _, _ = card
    assert "The queries: qrels/test.tsv of tiny-beir, the folder's test split (no dev split" in text
    line = next(line for line in text.splitlines() if line.startswith("- ndcg@10 "))
    assert "(base) ->" in line and ("not significant at p ≤ 0.05 (p = " in line or ": significant at" in line)
    assert "paired t-test" in line and "Fisher's randomisation test" in line
    assert "**Few queries:** 4 queries are too few" in text


def test_the_recipe_lists_what_differs_from_the_defaults_and_folds_the_rest(card):
    text, _, _ = card
    shown, folded = text.split("<details>")
    shown = shown[shown.index("### Recipe") :]
    assert "`use_lora: true`" in shown and "`lora_r:" not in shown and "`pooling:" not in shown
    assert "`lora_r: 16`" in folded
    assert "Enum" not in text and "SchedulerType." not in text and "IntervalStrategy." not in text
    for unused in ("mine_num_negatives", "m3_train_heads", "score_cross_encoder", "synth_"):
        assert unused not in text  # mining, BGE-M3, teacher scores, synthesis: none of them ran
    assert (
        "**Objective:** CachedGISTEmbedLoss, temperature 0.02 (scale 50); guide a frozen copy of the base model"
        in text
    )


def test_the_card_cites_what_the_run_used(card):
    text, _, _ = card
    cited = [line.removeprefix("#### ") for line in text.splitlines() if line.startswith("#### ")]
    assert cited == ["Sentence Transformers", "GISTEmbed", "GradCache", "LoRA"]  # no BGE-M3 for a MiniLM run


def test_the_card_states_the_training_data_without_its_text(card, beir_folder):
    text, _, _ = card
    assert "- **Training data:** trained on qrels/train.tsv" in text
    assert "| anchor |" in text and "| positive |" in text  # token lengths
    assert "def sort_numbers" not in text and "How do I sort a list" not in text
