"""Run a recipe: data -> model (+ LoRA) -> loss -> SentenceTransformerTrainer -> ranx eval -> saved folder + card.

Every check on the user's input (recipe, output folder, data files, model path) happens before the first
training step, so a mistake costs seconds, not a run. Under several processes (`accelerate launch`), the
base-model evaluation, the final evaluation, the card and the results files are produced on the main process.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import logging
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from sentence_transformers import SentenceTransformer, SentenceTransformerTrainer
from transformers import set_seed
from transformers.trainer import TRAINER_STATE_NAME
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR

from st_bge.config import ModelArguments, Recipe
from st_bge.data import InMemoryData, RetrievalSet, TrainingData, load_retrieval_set, load_training_data
from st_bge.data.formats import SCORES_COLUMN
from st_bge.data.preparation import PreparedData, enforce_verdict, prepare_data
from st_bge.data.sources import is_hub_dataset_id
from st_bge.errors import ConfigError, DataError
from st_bge.evaluation import RanxRetrievalEvaluator, RetrievalComparison, compare_modes
from st_bge.evaluation.bm25 import bm25_run
from st_bge.evaluation.evaluator import EVALUATOR_NAME
from st_bge.evaluation.forgetting import forgetting_source
from st_bge.evaluation.metrics import evaluate_run
from st_bge.evaluation.plots import plot_metric_bars, plot_training_curves
from st_bge.evaluation.retrieval import ModeRuns, mode_notes
from st_bge.guide import precompute_guide
from st_bge.losses import build_loss, require_m3_heads
from st_bge.m3 import BGEM3Model, M3StepCallback, M3UnifiedLoss
from st_bge.m3.card import heads_notes
from st_bge.merging import WeightDial, base_state, merge_record
from st_bge.model_card import StBgeModelCardData, attach_card_data
from st_bge.modeling import add_lora, frozen_copy, load_model
from st_bge.sampling import TokenBudgetBatchSampler, padding_report, random_batches
from st_bge.storage import check_output_dir, point_adapter_at

logger = logging.getLogger(__name__)

# Model names in the base vs fine-tuned comparison (and merged, with `merge_with_base`).
BASE, FINE_TUNED, MERGED = "base", "fine-tuned", "merged"
# Where a run with `merge_with_base` keeps the fine-tune as trained (its output_dir holds the merged model).
UNMERGED_DIR = "fine-tuned"


@dataclass
class TrainResult:
    """What a run produced: the trainer (with the trained model in memory), its folder and the results.

    `runs` holds the evaluation's ranx runs per model (`base`, `fine-tuned`; empty without an evaluation set), so a
    caller comparing several runs on the same queries (benchmarks/sweep.py) need not encode the corpus again.
    """

    trainer: SentenceTransformerTrainer
    output_dir: Path
    comparison: RetrievalComparison | None
    runs: dict[str, ModeRuns] = field(default_factory=dict)

    @property
    def model(self) -> SentenceTransformer:
        return self.trainer.model


class StBgeTrainer(SentenceTransformerTrainer):
    """`SentenceTransformerTrainer` whose evaluations hand the training back the torch random state they found.

    `Trainer.evaluate` iterates a DataLoader (an empty one when only an evaluator is set), and each iteration of a
    DataLoader draws its base seed from the global torch generator. Without this, every later dropout mask (and any
    other draw from that generator) moved with each evaluation, so the trained weights depended on `eval_strategy`
    and `eval_steps` (same seed, quickstart recipe: LoRA weights up to 5.1e-4 apart with and without per-epoch
    evaluation).
    """

    def evaluate(self, *args, **kwargs) -> dict[str, float]:
        device = self.args.device
        on_accelerator = device.type != "cpu"  # the CPU generator is always kept
        with torch.random.fork_rng(
            devices=[device] if on_accelerator else [], device_type=device.type if on_accelerator else None
        ):
            return super().evaluate(*args, **kwargs)


def build_evaluator(recipe: Recipe, retrieval_set: RetrievalSet | None) -> RanxRetrievalEvaluator | None:
    if retrieval_set is None:
        return None
    evaluation = recipe.evaluation
    return RanxRetrievalEvaluator(
        retrieval_set,
        evaluation.eval_metrics,
        primary_metric=evaluation.eval_primary_metric,
        top_k=evaluation.eval_top_k,
        batch_size=recipe.training.per_device_eval_batch_size,
        modes=evaluation.eval_modes,
        hybrid_weights=evaluation.eval_hybrid_weights,
        colbert_max_memory_mb=evaluation.eval_colbert_max_memory_mb,
    )


def train(recipe: Recipe, *, train_dataset: InMemoryData | None = None, eval_set: Any = None) -> TrainResult:
    """Run the recipe end to end and return the trained model, where it was saved and its results.

    Args:
        recipe: The parsed recipe (`parse_recipe`).
        train_dataset: In-memory training rows (a `datasets.Dataset` or a pandas DataFrame, columns as in a data
            file) in place of the recipe's `dataset_name_or_path`.
        eval_set: In place of `eval_dataset_name_or_path`: a `RetrievalSet`, in-memory rows (each anchor a query,
            its positives relevant) or a path.
    """
    args = recipe.training
    checkpoint = _checkpoint_to_resume(args.resume_from_checkpoint, args.output_dir)
    # Resuming writes into the run's own folder by design.
    check_output_dir(args.output_dir, overwrite=args.overwrite_output_dir or checkpoint is not None)
    set_seed(args.seed)
    if recipe.evaluation.eval_enabled:
        data = load_training_data(recipe.data, train_dataset=train_dataset, eval_set=eval_set)
    else:  # no queries held out of the training rows for an evaluation that will not run
        no_hold_out = dataclasses.replace(recipe.data, eval_split_size=0.0, eval_dataset_name_or_path=None)
        data = load_training_data(no_hold_out, train_dataset=train_dataset)
        data.eval = data.selection = data.evaluation = None  # a BEIR folder's own test split too
    _check_evaluation_settings(recipe, data)
    _check_teacher_scores(recipe, data)
    general_set = _forgetting_set(recipe, data)

    model = load_model(recipe.model, as_m3=recipe.loss.kind.m3 or recipe.loss.m3_add_heads)
    if recipe.loss.kind.m3 and not recipe.loss.m3_add_heads:
        require_m3_heads(model, recipe.loss)
    prepared = _prepare_data(recipe, data, model)

    if data.eval is not None:
        logger.info(
            "Preparing the ranx evaluation on %s (the first run compiles ranx's metrics with numba, about a minute; "
            "NUMBA_CACHE_DIR keeps them for later runs)",
            data.eval.name,
        )
    evaluator = build_evaluator(recipe, data.eval)
    # What picks the best checkpoint: a split of its own (a BEIR folder's dev), so that the test queries choose nothing.
    selector = build_evaluator(recipe, data.selection) or evaluator
    general = build_evaluator(recipe, general_set)
    runs: dict[str, ModeRuns] = {}
    general_runs: dict[str, ModeRuns] = {}
    # The domain's evaluation, then the forgetting check's: each model is evaluated on both, under one name.
    evaluations = [(evaluator, runs), (general, general_runs)]
    if evaluator is not None and recipe.evaluation.eval_base_model and args.process_index == 0:
        _evaluate(model, BASE, evaluations)  # before any new head: the base model's own modes
    curve_base = _base_score_on(selector, evaluator, runs, model, recipe.evaluation.eval_primary_metric)

    # The base's tensors that merging goes back toward, copied before any head is added or step taken.
    merge_base = None
    if recipe.model.merge_with_base is not None and args.process_index == 0:  # the main process merges and saves
        merge_base = base_state(model, adapter=recipe.model.use_lora)
    notes = _configure_heads(model, recipe) if isinstance(model, BGEM3Model) else []
    card_data = StBgeModelCardData(
        recipe=recipe.to_dict(),
        recipe_changes=recipe.changed_settings(),
        data_summary=prepared.summary(),
        adapter=recipe.model.use_lora,
        notes=notes,
        include_examples=recipe.card.card_include_examples,
        language=recipe.card.language,
        license=recipe.card.license,
        model_id=args.hub_model_id,
        dataset_ids=_card_datasets(recipe),
        load_id=args.output_dir,
        m3=isinstance(model, BGEM3Model) and model.m3_heads is not None,
    )
    attach_card_data(model, card_data, base_model=recipe.model.model_name_or_path)

    guide = _load_guide(recipe, model) if recipe.loss.kind.guided else None
    if recipe.model.use_lora:
        add_lora(model, recipe.model)
    loss = build_loss(model, recipe.loss, guide=guide, world_size=args.world_size)

    query_prompt = model.prompts.get("query")
    if query_prompt and args.prompts is None:
        # Train queries exactly as `encode_query` will encode them; an explicit `prompts` in the recipe wins.
        args.prompts = {"anchor": query_prompt}
        logger.info("Training prompts: %s", args.prompts)

    if args.max_tokens_per_batch:
        args.batch_sampler = _token_budget_sampler(data, model, args)
    # st-bge pushes once, after the run, through `st_bge.publish` (staged folder, Hub ids, one commit); the
    # Trainer's own push would upload checkpoints with the local base-model path in adapter_config.json.
    push_requested, args.push_to_hub = args.push_to_hub, False
    trainer = StBgeTrainer(
        model=model,
        args=args,
        train_dataset=data.epoch_rows(),
        loss=loss,
        evaluator=selector,
        callbacks=[M3StepCallback(loss)] if isinstance(loss, M3UnifiedLoss) else None,
    )
    if recipe.loss.kind.guided and recipe.loss.gist_precompute_guide:
        # Batches the training's forward passes already fit (with gradients): the mini-batch of a cached loss.
        batch_size = getattr(loss, "mini_batch_size", args.per_device_train_batch_size)
        with args.main_process_first(desc="GIST guide embeddings"):  # the others read the main process's cache
            loss.guide = precompute_guide(loss, trainer.data_collator, trainer.train_dataset, batch_size=batch_size)
    trainer.train(resume_from_checkpoint=checkpoint)

    comparison = None
    if trainer.is_world_process_zero():
        _evaluate(trainer.model, FINE_TUNED, evaluations)  # the best checkpoint, if one was selected
        if merge_base is not None:
            _merge_with_base(trainer.model, merge_base, recipe, card_data)
            _evaluate(trainer.model, MERGED, evaluations)
        if evaluator is not None:
            comparison = _compare(recipe, evaluator, runs, how=data.evaluation)
            if general is not None:
                comparison.forgetting = _compare(recipe, general, general_runs)
        card_data.comparison = comparison
    trainer.save_model(args.output_dir)
    if trainer.is_world_process_zero():
        base = recipe.model.model_name_or_path
        if recipe.model.use_lora and not Path(base).exists():
            point_adapter_at(Path(args.output_dir), base)  # the Hub id, not the local copy it was trained from
        _write_reports(trainer, comparison, recipe, curve_base=curve_base)
        if not args.keep_checkpoints:
            _remove_checkpoints(Path(args.output_dir))
        if push_requested:
            _push(recipe)
    return TrainResult(trainer=trainer, output_dir=Path(args.output_dir), comparison=comparison, runs=runs)


def _card_datasets(recipe: Recipe) -> list[str]:
    """The card's `datasets:` Hub ids: the recipe's `card_datasets`, else its sources that are Hub datasets."""
    if recipe.card.card_datasets is not None:
        return recipe.card.card_datasets
    sources = list(recipe.data.dataset_mixture or [recipe.data.dataset_name_or_path or ""])
    return [source for source in sources if source and is_hub_dataset_id(source)]


def _configure_heads(model: BGEM3Model, recipe: Recipe) -> list[str]:
    """Add the heads `m3_add_heads` asks for, let train what the loss trains, freeze the rest; the card's notes.

    A head the loss does not train must not require gradients: it stays exactly as loaded, and DDP, which expects a
    gradient for every trainable parameter, would otherwise stop.
    """
    loss = recipe.loss
    added = model.add_missing_heads(loss.m3_colbert_dim) if loss.m3_add_heads else []
    trained = [head for head in loss.m3_train_heads if head != "dense"] if loss.kind.m3 else []
    if model.m3_heads is not None:
        for mode, head in model.m3_heads.by_mode().items():
            head.requires_grad_(mode in trained)
    if loss.kind.m3 and loss.m3_freeze_encoder:
        model[0].auto_model.requires_grad_(False)
        logger.info("m3_freeze_encoder: training the %s head(s) only", ", ".join(trained))
    notes = heads_notes(model, trained=trained, added=added)
    for note in notes:
        logger.warning(note)
    return notes


def _checkpoint_to_resume(value: str | bool | None, output_dir: str) -> str | None:
    """The checkpoint folder `resume_from_checkpoint` names; 'auto' or 'true': output_dir's last complete one.

    A run killed while saving leaves a higher-numbered folder without a (whole) trainer_state.json, which
    transformers' `get_last_checkpoint` would pick and then fail on, so it is skipped. Checked here, before data
    and model loading, like every other user input.

    Raises:
        ConfigError: no complete checkpoint to resume from, or the given folder is not a checkpoint.
    """
    if value is None or str(value).lower() == "false":  # a YAML `true`/`false` arrives as a bool
        return None
    if str(value).lower() not in ("auto", "true"):
        if not _is_complete(Path(value)):
            raise ConfigError(
                f"resume_from_checkpoint '{value}' is not a checkpoint folder (no valid {TRAINER_STATE_NAME})"
            )
        return str(value)
    folders = [f for f in Path(output_dir).glob(f"{PREFIX_CHECKPOINT_DIR}-*") if f.name.split("-")[-1].isdigit()]
    for folder in sorted(folders, key=lambda f: int(f.name.split("-")[-1]), reverse=True):
        if _is_complete(folder):
            logger.info("Resuming from %s", folder)
            return str(folder)
        logger.warning("Skipping %s: no valid %s (the run stopped while saving it)", folder, TRAINER_STATE_NAME)
    raise ConfigError(
        f"resume_from_checkpoint {value}: no {PREFIX_CHECKPOINT_DIR}-* folder with a valid {TRAINER_STATE_NAME} "
        f"in output_dir '{output_dir}' to resume from; train without resume_from_checkpoint to start afresh"
    )


def _is_complete(checkpoint: Path) -> bool:
    """A checkpoint is complete once its trainer_state.json, which the Trainer writes last, is whole JSON."""
    try:
        json.loads((checkpoint / TRAINER_STATE_NAME).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return True


def _evaluate(
    model: SentenceTransformer,
    name: str,
    evaluations: list[tuple[RanxRetrievalEvaluator | None, dict[str, ModeRuns]]],
) -> None:
    """Evaluate `model` as `name` with each evaluator there is, into its runs (the domain's, the forgetting
    check's)."""
    for evaluator, runs in evaluations:
        if evaluator is not None:
            logger.info("Evaluating the %s model on %s", name, evaluator.retrieval_set.name)
            runs[name] = evaluator.runs(model)


def _merge_with_base(
    model: SentenceTransformer, merge_base: dict, recipe: Recipe, card_data: StBgeModelCardData
) -> None:
    """Save the fine-tune as trained into `UNMERGED_DIR` of the output folder, then set `model` to base +
    merge_with_base * (fine-tuned - base), in place, and record the merge for the card."""
    weight = recipe.model.merge_with_base
    unmerged = Path(recipe.training.output_dir) / UNMERGED_DIR
    model.save(str(unmerged))
    logger.info("The fine-tune as trained is in %s; merging it with its base at weight %g", unmerged, weight)
    WeightDial(model, merge_base).set(weight)
    base = recipe.model.model_name_or_path
    card_data.merge = merge_record(
        base, [(FINE_TUNED, weight, recipe.model.use_lora)], made_by="the recipe's `merge_with_base`"
    )


def _forgetting_set(recipe: Recipe, data: TrainingData) -> RetrievalSet | None:
    """The general-domain set of the forgetting check (`forgetting_dataset`), read before training; none when the
    run does not evaluate.

    Raises:
        ConfigError: the set cannot be read, or has the evaluation set's name (their results would share a name in
            every report).
    """
    if data.eval is None:
        return None
    evaluation = recipe.evaluation
    source = forgetting_source(
        evaluation.forgetting_dataset, languages=recipe.card.language, texts=data.eval.queries.values()
    )
    if source is None:
        return None
    try:
        general = load_retrieval_set(source, evaluation.forgetting_dataset_split)
    except DataError as error:
        raise ConfigError(f"forgetting_dataset: {error} (forgetting_dataset: none turns the check off)") from error
    if general.name == data.eval.name:
        raise ConfigError(
            f"forgetting_dataset '{source}' is named like the evaluation set ({general.name}): use a general-domain "
            "set of another name, or forgetting_dataset: none"
        )
    return general


def _compare(
    recipe: Recipe,
    evaluator: RanxRetrievalEvaluator,
    runs: dict[str, ModeRuns],
    *,
    how: str | None = None,
) -> RetrievalComparison:
    """Base vs fine-tuned on the evaluator's set in every mode, BM25 beside them (`eval_bm25`); `how`: how its
    queries were chosen, for the reports."""
    evaluation = recipe.evaluation
    retrieval_set = evaluator.retrieval_set
    reference = ("BM25", bm25_run(retrieval_set, top_k=evaluator.top_k)) if evaluation.eval_bm25 else None
    return compare_modes(
        evaluator.qrels,
        {name: mode_runs.runs for name, mode_runs in runs.items()},
        evaluator.metrics,
        eval_set={**retrieval_set.summary(), "top_k": evaluator.top_k, "how": how},
        reference=reference,
        notes=mode_notes(runs, evaluator.top_k),
        max_p=evaluation.eval_max_p,
    )


def _base_score_on(
    selector: RanxRetrievalEvaluator | None,
    evaluator: RanxRetrievalEvaluator | None,
    runs: dict[str, ModeRuns],
    model: SentenceTransformer,
    metric: str,
) -> float | None:
    """The base model's `metric` on the set the training curve shows (the selection set), for the curve's base
    line: read off the base evaluation when that set is the eval set, else measured on it (a dev split is small)."""
    if selector is None or BASE not in runs:
        return None
    if selector is evaluator:
        return evaluate_run(evaluator.qrels, runs[BASE].runs["dense"], [metric])[metric]
    return selector.compute_metrics(model)[metric]


def _remove_checkpoints(output_dir: Path) -> None:
    """Remove what only a stopped run needs (checkpoint-* folders with their optimizer states) once the final model
    is saved beside them, and the empty `eval/` folder the evaluator's Trainer makes."""
    for checkpoint in output_dir.glob(f"{PREFIX_CHECKPOINT_DIR}-*"):
        if checkpoint.is_dir():
            shutil.rmtree(checkpoint)
            logger.info("Removed %s (the final model is saved; keep_checkpoints: true keeps them)", checkpoint)
    eval_folder = output_dir / "eval"
    if eval_folder.is_dir() and not any(eval_folder.iterdir()):
        eval_folder.rmdir()


def _write_reports(
    trainer: SentenceTransformerTrainer,
    comparison: RetrievalComparison | None,
    recipe: Recipe,
    *,
    curve_base: float | None = None,
) -> None:
    """Card inputs, results, training log and plots beside the model (main process only)."""
    output_dir = Path(recipe.training.output_dir)
    trainer.model.model_card_data.save_inputs(output_dir)  # for `st-bge push` to render the card again
    log_history = trainer.state.log_history
    (output_dir / "training_log.json").write_text(json.dumps(log_history, indent=2) + "\n", encoding="utf-8")
    metric = recipe.evaluation.eval_primary_metric
    metric_key = f"eval_{EVALUATOR_NAME}_{metric}" if comparison else None
    plot_training_curves(
        log_history,
        metric_key,
        output_dir / "training_curves.png",
        base_score=curve_base,
        best_step=trainer.state.best_global_step,
    )
    if comparison is not None:
        comparison.save(output_dir)
        plot_metric_bars(comparison, output_dir / "metrics.png")


def _token_budget_sampler(data: TrainingData, model: SentenceTransformer, args) -> functools.partial:
    """The Trainer's batch sampler factory for `max_tokens_per_batch`, after logging the padding it saves."""
    sampler = functools.partial(
        TokenBudgetBatchSampler,
        tokenizer=model.tokenizer,
        max_tokens=args.max_tokens_per_batch,
        max_length=model.max_seq_length,
        lengths_cache={},
    )
    batch_size = args.per_device_train_batch_size
    for name, rows in data.train_sets.items():
        budget = sampler(rows, batch_size, drop_last=False, seed=args.seed)
        with_budget = padding_report(budget.column_lengths, budget.batches())
        without = padding_report(budget.column_lengths, random_batches(len(rows), batch_size, args.seed))
        logger.info(
            "%s: padding %.1f%% of the tokens with random batches of %d, %.1f%% with a budget of %d tokens "
            "(%d batches instead of %d)",
            name,
            100 * without.waste,
            batch_size,
            100 * with_budget.waste,
            args.max_tokens_per_batch,
            with_budget.batches,
            without.batches,
        )
    return sampler


def _push(recipe: Recipe) -> None:
    from st_bge.config import PushArguments
    from st_bge.publish import push

    args = recipe.training
    push_args = PushArguments(
        model_dir=args.output_dir,
        repo_id=args.hub_model_id,
        variant=recipe.card.hub_variant if recipe.model.use_lora else "adapter",
        private=bool(args.hub_private_repo),
        revision=args.hub_revision,
    )
    for result in push(push_args):
        logger.info("Pushed the %s to %s@%s", result.variant, args.hub_model_id, result.revision)


def _prepare_data(recipe: Recipe, data: TrainingData, model: SentenceTransformer) -> PreparedData:
    """Mine (main process first, so the others read its cache), report beside the model, stop on a 'fail'."""
    args = recipe.training
    with args.main_process_first(desc="hard-negative mining and data checks"):
        prepared = prepare_data(
            data,
            model,
            recipe.mining,
            recipe.quality,
            mine=recipe.mining.mine_hard_negatives,
            language=recipe.card.language,
        )
    if args.process_index == 0 and (prepared.quality or prepared.mining):
        prepared.save(args.output_dir)
        for name, quality in prepared.quality.items():
            report = prepared.report_path(args.output_dir, name)
            reasons = "".join(f"\n  - {reason}" for reason in quality.reasons)
            logger.info("Data check of %s: %s (report: %s)%s", name, quality.verdict, report, reasons)
    enforce_verdict(prepared, recipe.quality, args.output_dir)
    return prepared


def _check_evaluation_settings(recipe: Recipe, data: TrainingData) -> None:
    args = recipe.training
    if data.eval is None and (args.eval_strategy != "no" or args.load_best_model_at_end):
        raise ConfigError(
            f"eval_strategy '{getattr(args.eval_strategy, 'value', args.eval_strategy)}' needs evaluation data: set "
            "eval_split_size or eval_dataset_name_or_path (and eval_enabled: true)"
        )
    metric = (args.metric_for_best_model or "").removeprefix("eval_")
    if args.load_best_model_at_end and not metric.startswith(f"{EVALUATOR_NAME}_"):
        raise ConfigError(
            f"load_best_model_at_end selects checkpoints by metric_for_best_model, which must be a ranx metric such "
            f"as 'eval_{EVALUATOR_NAME}_{recipe.evaluation.eval_primary_metric}', not '{args.metric_for_best_model}'"
        )


def _check_teacher_scores(recipe: Recipe, data: TrainingData) -> None:
    """A distillation loss needs every source's teacher scores, and a loss without one must not see them (the
    Trainer would hand the scores to it as labels)."""
    sets = data.train_sets
    for name, rows in sets.items():
        has_scores = SCORES_COLUMN in rows.column_names
        if recipe.loss.kd_loss != "none" and not has_scores:
            raise ConfigError(
                f"kd_loss '{recipe.loss.kd_loss}' needs a teacher's scores, which {name} has not: FlagEmbedding lines "
                "with pos_scores / neg_scores (st-bge data score --score_cross_encoder <reranker> writes them)"
            )
        if recipe.loss.kd_loss == "none" and has_scores:
            logger.info("%s: teacher scores present and unused (set kd_loss to distil them)", name)
            sets[name] = rows.remove_columns(SCORES_COLUMN)
    data.replace_train_sets(sets)


def _load_guide(recipe: Recipe, model: SentenceTransformer) -> SentenceTransformer:
    """The GIST guide: the recipe's guide model, or a frozen copy of the base model (taken before LoRA)."""
    if recipe.loss.guide_model_name_or_path is None:
        return frozen_copy(model)
    guide_args = ModelArguments(
        model_name_or_path=recipe.loss.guide_model_name_or_path, max_seq_length=recipe.model.max_seq_length
    )
    return frozen_copy(load_model(guide_args))
