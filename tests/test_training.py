"""The whole path on tiny local models: recipe -> data -> train -> ranx eval -> card -> saved folder."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from typing import ClassVar

import pytest
import torch
import yaml
from conftest import NO_EVAL_DURING_TRAINING, RECIPES, REPO, TOPICS, assert_same_m3_outputs, flags, train_two_steps
from huggingface_hub import ModelCard
from sentence_transformers import SentenceTransformer
from transformers import TrainerCallback
from transformers import trainer as trainer_module

from st_bge.cli import main
from st_bge.config import ModelArguments, parse_recipe
from st_bge.m3 import BGEM3Model
from st_bge.modeling import load_model
from st_bge.training import train

QUERIES = [query for query, _ in TOPICS.values()]


def train_quickstart_cli(model, data, output_dir) -> int:
    """`st-bge train recipes/quickstart.yaml` with another model, data and output folder."""
    return main(
        [
            "train",
            str(RECIPES / "quickstart.yaml"),
            *flags(model_name_or_path=model, dataset_name_or_path=data, output_dir=output_dir),
        ]
    )


@pytest.fixture(scope="module")
def lora_run(tiny_bert_path, beir_folder, tmp_path_factory):
    """One LoRA + cached GIST run with a held-out split, evaluated every step, best checkpoint by nDCG@10."""
    output_dir = tmp_path_factory.mktemp("runs") / "lora"
    argv = flags(
        model_name_or_path=tiny_bert_path,
        dataset_name_or_path=beir_folder,
        max_seq_length=64,
        mini_batch_size=4,
        per_device_train_batch_size=4,
        num_train_epochs=1,
        max_steps=2,
        eval_strategy="steps",
        eval_steps=1,
        save_strategy="steps",
        save_steps=1,
        lora_target_modules=["query", "value"],
        output_dir=output_dir,
    )
    recipe = parse_recipe(["--config", str(RECIPES / "quickstart.yaml"), *argv])
    return train(recipe)


def test_results_are_written_as_json_markdown_and_latex(lora_run):
    saved = json.loads((lora_run.output_dir / "eval_results.json").read_text())
    assert list(saved["modes"]) == ["dense"]  # a dense model: one mode
    results = saved["modes"]["dense"]
    assert results["metrics"] == ["ndcg@10", "mrr@10", "recall@1", "recall@10", "recall@100", "map@100"]
    assert results["models"] == ["base", "fine-tuned"] and results["reference"] == "BM25"
    assert results["eval_set"]["queries"] == 4 and results["eval_set"]["corpus"] == 12  # the folder's test split
    scores = results["scores"]
    for metric in results["metrics"]:
        assert 0.0 <= scores["base"][metric] <= 1.0
        delta = results["delta"]["fine-tuned"][metric]
        assert delta == pytest.approx(scores["fine-tuned"][metric] - scores["base"][metric])
        for test in ("student", "fisher"):
            assert 0.0 <= results["p_values"]["fine-tuned"][test][metric] <= 1.0
    table = (lora_run.output_dir / "eval_results.md").read_text()
    header = "| Metric | BM25 | base | fine-tuned | Δ | Δ % | p (paired t-test) | p (Fisher's randomisation test) |"
    assert header in table
    bm25 = results["reference_scores"]["ndcg@10"]
    assert f"| ndcg@10 | {bm25:.4f} | {scores['base']['ndcg@10']:.4f}" in table
    assert f"{scores['fine-tuned']['ndcg@10']:.4f}" in table
    assert "\\begin{tabular}" in (lora_run.output_dir / "eval_results.tex").read_text()
    for png in ("training_curves.png", "metrics.png"):
        assert (lora_run.output_dir / png).read_bytes()[:4] == b"\x89PNG"
    log = json.loads((lora_run.output_dir / "training_log.json").read_text())
    assert [entry["step"] for entry in log if "eval_retrieval_ndcg@10" in entry] == [1, 2]


def test_best_checkpoint_is_chosen_by_the_ranx_metric(lora_run):
    state = lora_run.trainer.state
    assert state.best_metric is not None
    logged = [e["eval_retrieval_ndcg@10"] for e in state.log_history if "eval_retrieval_ndcg@10" in e]
    assert len(logged) == 2 and state.best_metric == max(logged)
    assert lora_run.comparison.modes["dense"].scores["fine-tuned"]["ndcg@10"] == pytest.approx(state.best_metric)


def test_folder_reloads_with_identical_embeddings(lora_run):
    reloaded = SentenceTransformer(str(lora_run.output_dir))
    assert reloaded.active_adapters() == ["default"]
    expected = lora_run.model.encode_query(QUERIES, convert_to_tensor=True)
    assert torch.allclose(reloaded.encode_query(QUERIES, convert_to_tensor=True), expected, atol=1e-6)


def test_card_has_recipe_results_and_usage_but_no_training_text(lora_run):
    card = (lora_run.output_dir / "README.md").read_text()
    front_matter = yaml.safe_load(card.split("---")[1])
    assert front_matter["library_name"] == "sentence-transformers"
    assert "widget" not in front_matter
    # The domain table, then the forgetting check's under its own heading.
    assert lora_run.comparison.to_markdown(forgetting=False) in card
    assert "### Outside the domain (forgetting check)" in card and lora_run.comparison.forgetting.to_markdown() in card
    assert '`loss: "cached_gist"`' in card and "`temperature: 0.05`" in card and "`lora_r: 16`" in card
    assert f'SentenceTransformer("{lora_run.output_dir}")' in card and "model.encode_query([" in card
    for query, code in TOPICS.values():
        assert query not in card and code not in card


def test_a_finished_run_leaves_the_model_not_its_checkpoints_or_an_empty_eval_folder(lora_run):
    """A checkpoint-* folder with optimizer.pt stayed beside the final model, and an empty eval/ folder."""
    assert not list(lora_run.output_dir.glob("checkpoint-*")) and not (lora_run.output_dir / "eval").exists()
    assert (lora_run.output_dir / "adapter_model.safetensors").is_file()


def test_the_python_api_trains_on_a_dataframe(tiny_bert_path, beir_folder, tmp_path):
    """A notebook user's rows: `train(recipe, train_dataset=frame, eval_set=...)`, no file written first."""
    import pandas as pd

    frame = pd.DataFrame({"question": [q for q, _ in TOPICS.values()], "answer": [c for _, c in TOPICS.values()]})
    recipe = parse_recipe(
        flags(
            model_name_or_path=tiny_bert_path,
            output_dir=tmp_path / "notebook",
            loss="mnrl",
            max_steps=1,
            per_device_train_batch_size=4,
            eval_bm25=False,
            **NO_EVAL_DURING_TRAINING,
        )
    )
    result = train(recipe, train_dataset=frame, eval_set=frame.head(4))
    assert result.comparison.eval_set["queries"] == 4
    assert (tmp_path / "notebook" / "model.safetensors").is_file()


def test_eval_enabled_false_holds_no_training_rows_out(tiny_bert_path, tmp_path):
    """Turning evaluation off must not still hold a fifth of the rows out for an evaluation that never runs."""
    import pandas as pd

    frame = pd.DataFrame({"anchor": [q for q, _ in TOPICS.values()], "positive": [c for _, c in TOPICS.values()]})
    recipe = parse_recipe(
        flags(
            model_name_or_path=tiny_bert_path,
            output_dir=tmp_path / "train-only",
            loss="mnrl",
            max_steps=1,
            per_device_train_batch_size=4,
            eval_split_size=0.2,
            eval_enabled=False,
            **NO_EVAL_DURING_TRAINING,
        )
    )
    result = train(recipe, train_dataset=frame)
    assert len(result.trainer.train_dataset) == len(TOPICS) and result.comparison is None


def test_output_dir_with_files_is_not_overwritten(lora_run, tiny_bert_path, beir_folder, capsys):
    before = sorted(p.name for p in lora_run.output_dir.iterdir())
    code = train_quickstart_cli(tiny_bert_path, beir_folder, lora_run.output_dir)
    assert code == 2
    assert capsys.readouterr().err == (
        f"st-bge: error: output_dir '{lora_run.output_dir}' already has files; choose another output_dir or pass "
        "--overwrite_output_dir true to write over them\n"
    )
    assert sorted(p.name for p in lora_run.output_dir.iterdir()) == before


def test_cli_reports_bad_data_in_one_line(tmp_path, tiny_bert_path, capsys):
    data = tmp_path / "bad.jsonl"
    data.write_text('{"anchor": "a", "positive": "b"}\n{"anchor": "a"}\n')
    code = train_quickstart_cli(tiny_bert_path, data, tmp_path / "out")
    assert code == 2
    assert capsys.readouterr().err == f"st-bge: error: {data}, line 2, field 'positive': missing column\n"
    assert not (tmp_path / "out").exists()


def accelerate_launch(config: str, recipe: str, output_dir, *argv: str, cwd) -> subprocess.CompletedProcess:
    """`accelerate launch --config_file accelerate_configs/<config> recipes/train.py --config <recipe> ...`."""
    command = [
        sys.executable,
        "-m",
        "accelerate.commands.launch",
        "--config_file",
        str(REPO / "accelerate_configs" / config),
        str(RECIPES / "train.py"),
        "--config",
        str(RECIPES / recipe),
        "--output_dir",
        str(output_dir),
        *argv,
    ]
    return subprocess.run(command, capture_output=True, text=True, cwd=cwd, env=os.environ, timeout=300)


def test_accelerate_launch_bge_m3_recipe_two_steps(tiny_xlmr_path, beir_folder, tmp_path):
    """The BGE-M3 recipe as users launch it, with a tiny local XLM-R (M3 heads included) in place of BAAI/bge-m3."""
    output_dir = tmp_path / "m3"
    argv = flags(
        model_name_or_path=tiny_xlmr_path,
        dataset_name_or_path=beir_folder,
        max_steps=2,
        per_device_train_batch_size=4,
        mini_batch_size=2,
        **NO_EVAL_DURING_TRAINING,
    )
    completed = accelerate_launch("cpu.yaml", "bge-m3/lora-cached-gist.yaml", output_dir, *argv, cwd=tmp_path)
    assert completed.returncode == 0, completed.stderr[-3000:]
    for mode in ("dense", "sparse", "colbert", "hybrid"):
        assert f"| {mode} | ndcg@10 |" in completed.stdout, mode
    assert (output_dir / "adapter_model.safetensors").is_file()
    # The dense loss does not train the heads: the adapter folder carries them unchanged, in BAAI's files.
    for name in ("sparse_linear.pt", "colbert_linear.pt"):
        saved, base = (torch.load(folder / name, weights_only=True) for folder in (output_dir, tiny_xlmr_path))
        assert saved.keys() == base.keys() == {"weight", "bias"}
        assert all(torch.equal(saved[key], base[key]) for key in base), name
    card = (output_dir / "README.md").read_text()
    assert "not trained by this run's loss: saved unchanged from the base model" in card
    assert "from st_bge import BGEM3Model" in card
    reloaded = SentenceTransformer(str(output_dir))
    assert reloaded[1].pooling_mode == "cls"
    assert json.loads((output_dir / "modules.json").read_text()) == json.loads(
        (tiny_xlmr_path / "modules.json").read_text()
    )


def test_two_cpu_processes_gather_negatives_and_report_once(tiny_bert_path, beir_folder, tmp_path):
    """DDP on CPU (gloo): both processes train, negatives are gathered, evaluation and files come from rank 0."""
    output_dir = tmp_path / "ddp"
    argv = flags(
        model_name_or_path=tiny_bert_path,
        dataset_name_or_path=beir_folder,
        max_steps=2,
        per_device_train_batch_size=2,
        mini_batch_size=2,
        lora_target_modules=["query", "value"],
        use_cpu=True,
        ddp_backend="gloo",
        **NO_EVAL_DURING_TRAINING,
    )
    completed = accelerate_launch("cpu_multi_process.yaml", "quickstart.yaml", output_dir, *argv, cwd=tmp_path)
    assert completed.returncode == 0, completed.stderr[-3000:]
    assert completed.stdout.count("| ndcg@10 |") == 1  # the results table is printed by the main process only
    assert "gather_across_devices=True" in completed.stderr
    assert (output_dir / "adapter_model.safetensors").is_file() and (output_dir / "eval_results.json").is_file()


def test_full_fine_tune_saves_a_model_that_reloads_identically(tiny_bert_path, beir_folder, tmp_path):
    argv = flags(
        model_name_or_path=tiny_bert_path,
        dataset_name_or_path=beir_folder,
        eval_split_size=0,
        max_steps=2,
        per_device_train_batch_size=4,
        output_dir=tmp_path / "full",
        **NO_EVAL_DURING_TRAINING,
    )
    recipe = parse_recipe(["--config", str(RECIPES / "bge-m3" / "full-mnrl.yaml"), *argv])
    result = train(recipe)
    assert result.comparison.eval_set["queries"] == 4  # the folder's test split is evaluated whatever eval_split_size
    assert (result.output_dir / "model.safetensors").is_file()
    assert not (result.output_dir / "adapter_config.json").exists()
    reloaded = SentenceTransformer(str(result.output_dir))
    assert reloaded[1].pooling_mode == "cls"
    expected = result.model.encode(QUERIES, convert_to_tensor=True)
    assert torch.allclose(reloaded.encode(QUERIES, convert_to_tensor=True), expected, atol=1e-6)


def test_full_fine_tune_of_bge_m3_keeps_three_modes_in_baai_layout(tiny_xlmr_path, beir_folder, tmp_path, caplog):
    """The dense full-MNRL recipe on a BGE-M3: every mode evaluated at every step, the output is BAAI's layout and
    FlagEmbedding's BGEM3FlagModel reads it as st-bge does."""
    from FlagEmbedding import BGEM3FlagModel

    argv = flags(
        model_name_or_path=tiny_xlmr_path,
        dataset_name_or_path=beir_folder,
        forgetting_dataset="none",  # the forgetting check has its own tests; here it would only add minutes
        max_steps=2,
        per_device_train_batch_size=4,
        learning_rate=1e-3,
        warmup_steps=0,  # the recipe's 10% warm-up would leave step 1 at learning rate 0, and it may be the best
        eval_strategy="steps",
        eval_steps=1,
        save_strategy="steps",
        save_steps=1,
        keep_checkpoints=True,
        output_dir=tmp_path / "full-m3",
    )
    result = train(parse_recipe(["--config", str(RECIPES / "bge-m3" / "full-mnrl.yaml"), *argv]))
    output = result.output_dir
    # Checkpoints carry the heads, and the best one reloads through BGEM3Model (sentence-transformers only logs
    # an error if it cannot, and goes on with the last step's weights).
    assert "Could not load the best model" not in caplog.text
    assert result.trainer.state.best_model_checkpoint is not None
    assert (output / "checkpoint-2" / "colbert_linear.pt").is_file()
    assert {"config.json", "model.safetensors", "modules.json", "sparse_linear.pt", "colbert_linear.pt"} <= {
        p.name for p in output.iterdir()
    }
    log = json.loads((output / "training_log.json").read_text())
    for key in ("ndcg@10", "sparse_ndcg@10", "colbert_ndcg@10", "hybrid_ndcg@10"):
        assert [e["step"] for e in log if f"eval_retrieval_{key}" in e] == [1, 2], key
    assert list(result.comparison.modes) == ["dense", "sparse", "colbert", "hybrid"]
    # The result keeps the final evaluation's runs: what encoding the held-out queries again would give.
    assert list(result.runs) == ["base", "fine-tuned"]
    again = result.trainer.evaluator.runs(result.model).runs
    kept = result.runs["fine-tuned"].runs
    assert list(kept) == list(again) == ["dense", "sparse", "colbert", "hybrid"]
    for mode in again:
        assert kept[mode].to_dict() == again[mode].to_dict(), mode
    card = ModelCard.load(output / "README.md")
    configs = {(r.metric_name, r.metric_config) for r in card.data.eval_results}
    assert {("ndcg@10", None), ("ndcg@10 (sparse)", "sparse"), ("ndcg@10 (hybrid)", "hybrid")} <= configs

    texts = [text for pair in TOPICS.values() for text in pair]
    ours = BGEM3Model(str(output)).encode_m3(texts, batch_size=4)
    assert torch.allclose(ours.dense, result.model.encode_m3(texts, batch_size=4).dense, atol=1e-6)
    assert not torch.allclose(ours.dense, BGEM3Model(str(tiny_xlmr_path)).encode_m3(texts, batch_size=4).dense)
    theirs = BGEM3FlagModel(str(output), use_fp16=False, devices="cpu").encode(
        texts, batch_size=4, return_dense=True, return_sparse=True, return_colbert_vecs=True
    )
    assert_same_m3_outputs(ours, theirs)


def test_training_text_enters_the_card_only_when_asked(tiny_bert_path, beir_folder, tmp_path):
    argv = flags(
        model_name_or_path=tiny_bert_path,
        dataset_name_or_path=beir_folder,
        card_include_examples=True,
        eval_base_model=False,
        max_steps=1,
        per_device_train_batch_size=4,
        output_dir=tmp_path / "with-examples",
        **NO_EVAL_DURING_TRAINING,
    )
    recipe = parse_recipe(["--config", str(RECIPES / "quickstart.yaml"), *argv])
    card = (train(recipe).output_dir / "README.md").read_text()
    assert "widget" in yaml.safe_load(card.split("---")[1])
    assert any(query in card for query in QUERIES)


def test_mixture_with_mined_negatives_trains_and_evaluates(tiny_bert_path, beir_folder, tmp_path):
    """Two sources with weights, hard negatives mined per source, one merged held-out eval set."""
    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text("".join(json.dumps({"anchor": q, "positive": d}) + "\n" for q, d in TOPICS.values()))
    argv = flags(
        model_name_or_path=tiny_bert_path,
        dataset_split="all",
        eval_split_size=0.25,
        mine_hard_negatives=True,
        mine_num_negatives=1,
        mine_relative_margin=0.0,
        mine_use_cache=False,
        loss="mnrl",
        max_steps=2,
        per_device_train_batch_size=2,
        output_dir=tmp_path / "mixture",
        **NO_EVAL_DURING_TRAINING,
    )
    argv += ["--dataset_mixture", json.dumps({str(beir_folder): 1, str(pairs): 1})]
    result = train(parse_recipe(argv))
    assert result.comparison.eval_set["name"] == "mixture"
    assert result.comparison.eval_set["queries"] == 3 + 3  # a quarter of each source's 12 queries
    for name in (beir_folder.name, "pairs"):
        report = json.loads((result.output_dir / "data_reports" / name / "mining_report.json").read_text())
        assert report["counts"]["kept"] > 0
        assert (result.output_dir / "data_reports" / name / "data_quality.json").is_file()
    card = (result.output_dir / "README.md").read_text()
    # The data summary lists the mining counts of every source (numbers, no text).
    assert f"- **Hard negatives:** mined with the base model: {beir_folder.name}: " in card
    assert "dropped_relative_margin " in card


@pytest.mark.parametrize(
    ("use_lora", "loss"), [(True, "cached_gist"), (False, "mnrl")], ids=["lora-cached_gist", "full-mnrl"]
)
def test_gradient_checkpointing_trains_the_same_weights(use_lora, loss, tiny_bert_path, beir_folder, tmp_path):
    """`--gradient_checkpointing true` (what the BGE-M3 launch lines pass) trades compute for memory only.

    With LoRA the encoder's inputs are frozen, a known way for checkpointed layers to pass no gradient to the
    adapter; with the cached losses the layers run a third time in the gradient-cache replay. Both must train the
    very weights that a run without checkpointing trains (dropout included: checkpointing restores the RNG state).
    """
    trained = {}
    for checkpointing in (False, True):
        result = train_two_steps(
            tiny_bert_path,
            beir_folder,
            tmp_path / f"checkpointing-{checkpointing}",
            loss=loss,
            use_lora=use_lora,
            gradient_checkpointing=checkpointing,
        )
        encoder = result.trainer.model[0].auto_model
        assert encoder.is_gradient_checkpointing is checkpointing
        trained[checkpointing] = {
            n: p.detach().clone() for n, p in result.trainer.model.named_parameters() if p.requires_grad
        }
    assert trained[True].keys() == trained[False].keys()
    for name, weight in trained[False].items():
        torch.testing.assert_close(trained[True][name], weight, rtol=0, atol=1e-6, msg=lambda m, n=name: f"{n}: {m}")
    # Not vacuous: training moved the weights.
    if use_lora:  # B matrices start at zero (the BERT pooler's adapter gets no gradient: CLS pooling skips it)
        lora_b = [weight for name, weight in trained[False].items() if "encoder" in name and "lora_B" in name]
        assert lora_b and all(weight.abs().max() > 1e-4 for weight in lora_b)
    else:
        base = dict(load_model(ModelArguments(model_name_or_path=str(tiny_bert_path))).named_parameters())
        assert all(
            not torch.allclose(weight, base[name]) for name, weight in trained[False].items() if "query" in name
        )


class RecordAutocast(TrainerCallback):
    """Records, for every forward call of one encoder layer, whether CPU autocast and gradients were on."""

    calls: ClassVar[list[tuple[bool, bool]]] = []

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        layer = next(module for name, module in model.named_modules() if name.endswith("layer.0.output.dense"))
        layer.register_forward_hook(
            lambda *_: self.calls.append((torch.is_autocast_enabled("cpu"), torch.is_grad_enabled()))
        )


def test_bf16_autocast_trains_cached_gist_like_fp32(tiny_bert_path, beir_folder, tmp_path, monkeypatch):
    """`--bf16 true` (the GPU launch lines' precision) through accelerate's autocast, here on CPU.

    The cached loss replays the forward pass inside backward, outside the Trainer's autocast block: the replay must
    run in bf16 too (accelerate wraps the model's own forward), or the cached gradients would be applied to another
    function than the one that produced the loss. The losses must follow the fp32 run's within bf16 rounding.
    """
    monkeypatch.setattr(trainer_module, "DEFAULT_CALLBACKS", [*trainer_module.DEFAULT_CALLBACKS, RecordAutocast])
    losses = {}
    for bf16 in (False, True):
        RecordAutocast.calls = []
        result = train_two_steps(
            tiny_bert_path,
            beir_folder,
            tmp_path / f"bf16-{bf16}",
            loss="cached_gist",
            use_lora=True,
            bf16=bf16,
            use_cpu=True,
        )
        assert result.trainer.accelerator.mixed_precision == ("bf16" if bf16 else "no")
        # Per step: 2 columns x 2 mini-batches embedded without gradients, then replayed with them.
        assert [grad for _, grad in RecordAutocast.calls] == 2 * ([False] * 4 + [True] * 4)
        assert all(autocast is bf16 for autocast, _ in RecordAutocast.calls)
        losses[bf16] = [entry["loss"] for entry in result.trainer.state.log_history if "loss" in entry]
    # Measured: bf16 within 4e-5 (relative) of fp32 at step 1, 1e-5 at step 2.
    assert losses[True] == pytest.approx(losses[False], rel=1e-2)


def test_evaluating_during_training_does_not_change_the_trained_weights(tiny_bert_path, beir_folder, tmp_path):
    """An evaluation iterates a DataLoader, which draws from the global torch generator: unless the trainer restores
    it, the dropout masks after each evaluation, and so the weights, depend on how often the run evaluates."""
    runs = {
        strategy: train_two_steps(
            tiny_bert_path,
            beir_folder,
            tmp_path / strategy,
            eval_enabled=True,
            max_steps=3,
            eval_strategy=strategy,
            eval_steps=1,
            eval_base_model=False,
        )
        for strategy in ("no", "steps")
    }
    log = runs["steps"].trainer.state.log_history
    assert [entry["step"] for entry in log if "eval_retrieval_ndcg@10" in entry] == [1, 2, 3]
    assert runs["steps"].model[0].auto_model.config.hidden_dropout_prob > 0  # there are masks to draw
    quiet, evaluated = (runs[strategy].model.state_dict() for strategy in ("no", "steps"))
    assert list(quiet) == list(evaluated)
    for name, weights in quiet.items():
        assert torch.equal(weights, evaluated[name]), name
