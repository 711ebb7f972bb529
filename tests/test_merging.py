"""`st-bge merge`: base + w * (fine-tuned - base), for LoRA adapters (scaled exactly), full fine-tunes, BGE-M3 heads
(a head the base lacks kept as trained) and several fine-tunes; checked against sentence-transformers' own merge
(mergekit's task arithmetic) and read back by FlagEmbedding."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch
from conftest import NO_EVAL_DURING_TRAINING, NO_EVALUATION, RECIPES, TOPICS, assert_same_m3_outputs, flags
from sentence_transformers import SentenceTransformer

from st_bge.cli import main
from st_bge.config import MergeArguments, ModelArguments, parse_recipe
from st_bge.errors import ConfigError
from st_bge.m3 import BGEM3Model
from st_bge.merging import MERGE_FILE, merge
from st_bge.modeling import add_lora, load_full_model, load_model, load_saved_model
from st_bge.training import train

TEXTS = [text for pair in TOPICS.values() for text in pair]


def perturbed(base: Path, folder: Path, seed: int, *, lora: bool = False, add_heads: bool = False) -> Path:
    """`base` loaded the BGE way and changed as a fine-tune would change it, saved like `st-bge train` saves: every
    weight moved by seeded noise (a full fine-tune), or a LoRA adapter with non-zero B matrices (LoRA), with M3 heads
    moved too, or new ones added (`add_heads`)."""
    model = load_model(ModelArguments(model_name_or_path=str(base)), as_m3=add_heads)
    if add_heads:
        model.add_missing_heads()
    if lora:
        add_lora(
            model, ModelArguments(model_name_or_path=str(base), use_lora=True, lora_target_modules=["query", "value"])
        )
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if not lora or ".lora_B." in name or "m3_heads" in name:
                parameter.add_(torch.randn(parameter.shape, generator=generator) * 0.05)
    model.save(str(folder))
    return folder


def weights_of(folder: Path) -> dict[str, torch.Tensor]:
    """A saved model's full weights (an adapter merged into its base), by state-dict key."""
    return load_full_model(folder, local_files_only=True).state_dict()


def merged(sources: list[Path], weights: list[float], output_dir: Path, base: Path) -> Path:
    return merge(
        MergeArguments(
            model_dirs=[str(s) for s in sources], weights=weights, output_dir=str(output_dir), base_model=str(base)
        )
    ).output_dir


def train_quickstart(model: Path, data: Path, output_dir: Path, **fields):
    """The quickstart recipe on a tiny model, batches of 4 (LoRA on query and value where it trains LoRA)."""
    argv = flags(
        model_name_or_path=model,
        dataset_name_or_path=data,
        max_seq_length=64,
        per_device_train_batch_size=4,
        mini_batch_size=4,
        lora_target_modules=["query", "value"],
        output_dir=output_dir,
        **fields,
    )
    return train(parse_recipe(["--config", str(RECIPES / "quickstart.yaml"), *argv]))


def assert_interpolates(result: dict, base: dict, tuned: list[dict], weights: list[float], atol: float = 1e-6) -> None:
    """Every floating-point weight of `result` is base + sum w_i (tuned_i - base); a weight the base lacks is the
    (single) fine-tune's."""
    for key, value in result.items():
        if not value.is_floating_point():
            continue
        if key in base:
            expected = base[key] + sum(w * (t[key] - base[key]) for w, t in zip(weights, tuned, strict=True))
        else:
            expected = tuned[0][key]
        torch.testing.assert_close(value, expected, atol=atol, rtol=0, msg=key)


@pytest.fixture(scope="module")
def bert_lora(tiny_bert_path, tmp_path_factory) -> Path:
    return perturbed(tiny_bert_path, tmp_path_factory.mktemp("ft") / "bert-lora", seed=1, lora=True)


def test_lora_at_half_is_the_base_plus_half_the_update_and_stays_an_adapter(tiny_bert_path, bert_lora, tmp_path):
    out = merged([bert_lora], [0.5], tmp_path / "half", tiny_bert_path)
    assert (out / "adapter_config.json").is_file() and not (out / "model.safetensors").is_file()
    base = load_saved_model(tiny_bert_path).state_dict()
    tuned = weights_of(bert_lora)
    assert any(not torch.equal(tuned[key], base[key]) for key in base)  # the adapter changes something
    assert_interpolates(weights_of(out), base, [tuned], [0.5])
    record = json.loads((out / MERGE_FILE).read_text())
    assert record["models"] == [{"name": "bert-lora", "weight": 0.5, "adapter": True}]


@pytest.mark.parametrize("weight", [0.0, 1.0])
def test_lora_at_zero_is_the_base_and_at_one_the_fine_tune(tiny_bert_path, bert_lora, tmp_path, weight):
    out = merged([bert_lora], [weight], tmp_path / "merged", tiny_bert_path)
    reference = (
        load_model(ModelArguments(model_name_or_path=str(tiny_bert_path)))
        if weight == 0
        else SentenceTransformer(str(bert_lora))
    )
    torch.testing.assert_close(
        SentenceTransformer(str(out)).encode(TEXTS, convert_to_tensor=True),
        reference.encode(TEXTS, convert_to_tensor=True),
        atol=1e-6,
        rtol=0,
    )


@pytest.mark.parametrize("weight", [0.0, 0.5, 1.0])
def test_full_m3_fine_tune_merges_encoder_and_heads_and_flagembedding_reads_it(tiny_xlmr_path, tmp_path, weight):
    from FlagEmbedding import BGEM3FlagModel

    tuned_dir = perturbed(tiny_xlmr_path, tmp_path / "m3-full", seed=2)
    out = merged([tuned_dir], [weight], tmp_path / "merged", tiny_xlmr_path)
    base, tuned, result = (load_saved_model(p).state_dict() for p in (tiny_xlmr_path, tuned_dir, out))
    assert any("m3_heads.sparse_linear" in key for key in result) and any(
        "m3_heads.colbert_linear" in key for key in result
    )
    assert_interpolates(result, base, [tuned], [weight])
    ours = BGEM3Model(str(out)).encode_m3(TEXTS[:6], batch_size=3)
    theirs = BGEM3FlagModel(str(out), use_fp16=False, devices="cpu").encode(
        TEXTS[:6], batch_size=3, return_dense=True, return_sparse=True, return_colbert_vecs=True
    )
    assert_same_m3_outputs(ours, theirs)


def test_new_heads_have_no_base_and_are_kept_as_trained(tiny_bert_path, tmp_path):
    tuned_dir = perturbed(tiny_bert_path, tmp_path / "bert-new-heads", seed=3, add_heads=True)
    out = merged([tuned_dir], [0.0], tmp_path / "merged", tiny_bert_path)
    result, tuned = load_saved_model(out).state_dict(), load_saved_model(tuned_dir).state_dict()
    base = load_saved_model(tiny_bert_path).state_dict()
    heads = [key for key in result if "m3_heads" in key]
    assert heads and all(key not in base for key in heads)
    for key in heads:
        assert torch.equal(result[key], tuned[key])
    assert_interpolates({k: v for k, v in result.items() if k not in heads}, base, [tuned], [0.0])


def test_lora_on_m3_scales_the_adapter_and_interpolates_the_heads(tiny_xlmr_path, tmp_path):
    tuned_dir = perturbed(tiny_xlmr_path, tmp_path / "m3-lora", seed=4, lora=True)
    out = merged([tuned_dir], [0.25], tmp_path / "merged", tiny_xlmr_path)
    assert (out / "adapter_config.json").is_file() and (out / "sparse_linear.pt").is_file()
    assert_interpolates(
        weights_of(out), load_saved_model(tiny_xlmr_path).state_dict(), [weights_of(tuned_dir)], [0.25]
    )


def test_several_fine_tunes_are_task_arithmetic_as_sentence_transformers_merges_them(tiny_bert_path, tmp_path):
    """Two full fine-tunes and a LoRA one on one code path; the full ones against `SentenceTransformer.merge`
    (mergekit is a dev dependency: without it this fails with sentence-transformers' own pip line, it does not skip)."""
    base_dir = tmp_path / "base"
    load_model(ModelArguments(model_name_or_path=str(tiny_bert_path))).save(str(base_dir))
    first, second = (perturbed(tiny_bert_path, tmp_path / f"full-{seed}", seed=seed) for seed in (5, 6))
    lora = perturbed(tiny_bert_path, tmp_path / "lora", seed=7, lora=True)
    out = merged([first, second, lora], [0.5, 0.25, 0.75], tmp_path / "three", tiny_bert_path)
    assert not (out / "adapter_config.json").is_file()  # several fine-tunes: full weights
    base = load_saved_model(tiny_bert_path).state_dict()
    assert_interpolates(weights_of(out), base, [weights_of(p) for p in (first, second, lora)], [0.5, 0.25, 0.75])

    ours = merged([first, second], [0.5, 0.25], tmp_path / "two", tiny_bert_path)
    theirs = SentenceTransformer.merge(
        [str(first), str(second)],
        method="task_arithmetic",
        base_model=str(base_dir),
        parameters={"weight": [0.5, 0.25]},
    )
    torch.testing.assert_close(
        SentenceTransformer(str(ours)).encode(TEXTS, convert_to_tensor=True),
        theirs.encode(TEXTS, convert_to_tensor=True),
        atol=1e-5,
        rtol=0,
    )


def test_merge_command_on_a_trained_run_writes_a_card_that_says_what_was_merged(
    tiny_bert_path, beir_folder, tmp_path, capsys
):
    """As a user runs it: `st-bge train` (LoRA), then `st-bge merge RUN --weights 0.5 --output_dir ...`."""
    run = tmp_path / "run"
    train_quickstart(tiny_bert_path, beir_folder, run, max_steps=1, **NO_EVALUATION)
    out = tmp_path / "merged"
    assert main(["merge", str(run), "--weights", "0.5", "--output_dir", str(out)]) == 0  # the base from the adapter
    assert f"into {out}" in capsys.readouterr().out
    card = (out / "README.md").read_text()
    assert "## Merged with the base model" in card and "`run` (weight 0.5)" in card
    assert "`st-bge eval --models base=tiny-bge-bert merged=<this model>" in card
    inputs = json.loads((out / "st_bge_card.json").read_text())
    assert inputs["merge"]["models"] == [{"name": "run", "weight": 0.5, "adapter": True}]
    assert SentenceTransformer(str(out)).encode(TEXTS[:2]).shape == (2, 32)
    # Nothing of the run is touched, and a second merge into the same folder is refused.
    assert not (run / MERGE_FILE).exists()
    assert main(["merge", str(run), "--weights", "0.5", "--output_dir", str(out)]) == 2


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--weights", "0.5", "0.5"], "weights: 2 given for 1 model_dirs"),
        (["--weights", "nan"], "weights: nan is not a finite number"),
    ],
)
def test_bad_weights_are_one_line(bert_lora, tmp_path, capsys, extra, message):
    assert main(["merge", str(bert_lora), *extra, "--output_dir", str(tmp_path / "out")]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_fine_tunes_of_different_bases_are_refused(tiny_bert_path, tiny_xlmr_path, bert_lora, tmp_path):
    other = perturbed(tiny_xlmr_path, tmp_path / "m3-lora", seed=8, lora=True)
    with pytest.raises(ConfigError, match="start from different base models"):
        merge(
            MergeArguments(model_dirs=[str(bert_lora), str(other)], weights=[0.5, 0.5], output_dir=str(tmp_path / "o"))
        )
    full = perturbed(tiny_bert_path, tmp_path / "full", seed=9)  # no card inputs, no adapter: no recorded base
    with pytest.raises(ConfigError, match="pass --base_model"):
        merge(MergeArguments(model_dirs=[str(full)], weights=[0.5], output_dir=str(tmp_path / "o")))
    with pytest.raises(ConfigError, match="is one of the model_dirs"):
        merge(
            MergeArguments(model_dirs=[str(full)], weights=[0.5], output_dir=str(full), base_model=str(tiny_bert_path))
        )
    with pytest.raises(ConfigError, match="hold different weights"):
        merged([full, other], [0.5, 0.5], tmp_path / "o", tiny_bert_path)


@pytest.mark.parametrize("use_lora", [True, False])
def test_merge_with_base_in_a_recipe_evaluates_the_merged_model_and_keeps_the_fine_tune(
    tiny_bert_path, beir_folder, tmp_path, use_lora
):
    """`merge_with_base: 0.5`: the output folder holds base + 0.5 * (fine-tuned - base), the fine-tune as trained is
    in `fine-tuned/`, and the results compare all three."""
    run = tmp_path / "run"
    result = train_quickstart(
        tiny_bert_path,
        beir_folder,
        run,
        max_steps=2,
        learning_rate=1e-3,
        use_lora=use_lora,
        merge_with_base=0.5,
        **NO_EVAL_DURING_TRAINING,
    )
    assert result.comparison.models == ["base", "fine-tuned", "merged"]
    # The merged model is what was evaluated as merged: its scores are its own (the tiny run's ranks may tie).
    scores = {name: result.runs[name].runs["dense"].to_dict() for name in ("fine-tuned", "merged")}
    assert scores["merged"].keys() == scores["fine-tuned"].keys() and scores["merged"] != scores["fine-tuned"]
    base = load_saved_model(tiny_bert_path).state_dict()
    tuned = weights_of(run / "fine-tuned")
    assert any(not torch.equal(tuned[key], base[key]) for key in base if tuned[key].is_floating_point())
    assert (run / "adapter_config.json").is_file() == use_lora
    assert_interpolates(weights_of(run), base, [tuned], [0.5], atol=1e-5)
    card = (run / "README.md").read_text()
    assert "made by the recipe's `merge_with_base`" in card and "`fine-tuned` (weight 0.5)" in card
    assert "| BM25 | base | fine-tuned | Δ |" in card and "| merged | Δ | Δ % |" in card  # each against the base


def test_merge_with_base_must_be_a_weight(tiny_bert_path):
    with pytest.raises(ConfigError, match=re.escape("merge_with_base: -0.5 is not a weight >= 0")):
        parse_recipe(flags(model_name_or_path=tiny_bert_path, dataset_name_or_path="x.jsonl", merge_with_base=-0.5))
