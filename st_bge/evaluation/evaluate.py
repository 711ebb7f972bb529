"""`st-bge eval`: several models on one or more retrieval sets, compared with significance, analysed per query.

For each retrieval set, into `<output_dir>/<set name>/`:
- `eval_results.{json,md,tex}`: ranx metrics, Δ, Δ % and p-values of every model against the first, in every
  retrieval mode the models have (dense; sparse, colbert and hybrid for BGE-M3), BM25 beside them;
- `per_query_<metric>.csv`: per-query scores of the primary metric, worst regression first;
- `failures_<model>.csv`: the failing queries of each model (and mode: `failures_<model>-<mode>.csv`) with the
  top wrong document;
- `metrics.png`, `per_query_delta_<model>.png`, `embeddings_pca.png` (unless `plots: false`).
A forgetting set is evaluated the same way and reported beside the domain sets in `<output_dir>/summary.md`.
"""

from __future__ import annotations

import csv
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path

from sentence_transformers import SentenceTransformer

from st_bge.config import EvalRecipe, ModelArguments
from st_bge.data import ANY_SPLIT, RetrievalSet, load_retrieval_set
from st_bge.errors import ConfigError
from st_bge.evaluation.analysis import (
    FAILURE_CLASSES,
    analyse_run,
    failure_counts,
    per_query_deltas,
    write_failures_csv,
)
from st_bge.evaluation.bm25 import bm25_run
from st_bge.evaluation.cache import EmbeddingCache
from st_bge.evaluation.comparison import RetrievalComparison, compare_modes
from st_bge.evaluation.forgetting import forgetting_source
from st_bge.evaluation.metrics import per_query_scores, to_qrels
from st_bge.evaluation.plots import plot_embedding_maps, plot_metric_bars, plot_per_query_deltas
from st_bge.evaluation.retrieval import ModeRuns, mode_notes, model_modes, optimize_hybrid_weights, retrieve_modes
from st_bge.markdown import markdown_table
from st_bge.modeling import load_model
from st_bge.storage import CARD_INPUTS, check_output_dir

logger = logging.getLogger(__name__)

MAX_MAP_QUERIES = 200  # queries drawn in the embedding map


@dataclass
class SetResult:
    """The comparison on one retrieval set, and the failure counts of each model (and mode)."""

    comparison: RetrievalComparison
    failures: dict[str, dict[str, int]]
    folder: Path
    forgetting: bool = False
    # Models evaluated on queries their training data held: what the summary warns about.
    warnings: list[str] = field(default_factory=list)


def parse_model_specs(specs: list[str]) -> dict[str, str]:
    """`["base=BAAI/bge-m3", "outputs/x"]` -> `{"base": "BAAI/bge-m3", "x": "outputs/x"}` (names must differ)."""
    models: dict[str, str] = {}
    for spec in specs:
        name, _, path = spec.rpartition("=") if "=" in spec else (Path(spec.rstrip("/")).name, "", spec)
        if name in models:
            raise ConfigError(f"models: two models are named '{name}'; name them as name=path")
        models[name] = path
    return models


def evaluate_models(recipe: EvalRecipe) -> list[SetResult]:
    """Run the evaluation recipe; every input is read and checked before the first model is loaded."""
    run_args, evaluation = recipe.run, recipe.evaluation
    output_dir = Path(run_args.output_dir)
    check_output_dir(output_dir, overwrite=run_args.overwrite_output_dir)
    models = parse_model_specs(run_args.models)
    sources = [(path, run_args.eval_dataset_split, False) for path in run_args.eval_datasets]
    sets = [(load_retrieval_set(path, split), False) for path, split, _ in sources]
    domain_queries = (text for retrieval_set, _ in sets for text in retrieval_set.queries.values())
    forgetting = forgetting_source(evaluation.forgetting_dataset, languages=None, texts=domain_queries)
    if forgetting is not None:
        sources.append((forgetting, evaluation.forgetting_dataset_split, True))
        sets.append((load_retrieval_set(forgetting, evaluation.forgetting_dataset_split), True))
    warnings = {
        retrieval_set.name: trained_on_warnings(models, retrieval_set.name, split)
        for (retrieval_set, _), (_, split, _) in zip(sets, sources, strict=True)
    }
    paths = {retrieval_set.name: path for (retrieval_set, _), (path, _, _) in zip(sets, sources, strict=True)}
    names = [retrieval_set.name for retrieval_set, _ in sets]
    if len(set(names)) != len(names):
        raise ConfigError(f"eval_datasets and forgetting_dataset need distinct folder or file names, got {names}")
    dev_sets = {}
    if run_args.hybrid_fusion == "optimize":
        # The domain sets' own dev queries; the forgetting check keeps eval_hybrid_weights (a general set has no dev
        # split, and tuning on it would fit the check to itself).
        general = {retrieval_set.name for retrieval_set, forgetting in sets if forgetting}
        dev_sets = {
            name: load_retrieval_set(path, run_args.fusion_dev_split)
            for name, path in paths.items()
            if name not in general
        }
    cache = EmbeddingCache(run_args.embedding_cache_dir) if run_args.use_embedding_cache else None

    runs: dict[str, dict[str, ModeRuns]] = {retrieval_set.name: {} for retrieval_set, _ in sets}
    map_embeddings: dict[str, dict[str, tuple]] = {retrieval_set.name: {} for retrieval_set, _ in sets}
    for name, path in models.items():
        logger.info("Evaluating %s (%s)", name, path)
        model = load_model(ModelArguments(model_name_or_path=path))
        modes = _modes_of(model, evaluation.eval_modes, name)
        search = {
            "top_k": evaluation.eval_top_k,
            "batch_size": run_args.batch_size,
            "show_progress_bar": True,
            "cache": cache,
            "hybrid_weights": evaluation.eval_hybrid_weights,
            "colbert_max_memory_mb": evaluation.eval_colbert_max_memory_mb,
        }
        for retrieval_set, _ in sets:
            mode_runs = retrieve_modes(model, retrieval_set, modes, **search)
            if "hybrid" in modes and retrieval_set.name in dev_sets:
                dev = dev_sets[retrieval_set.name]
                candidates = retrieve_modes(model, dev, ["hybrid"], **search).candidates
                weights = optimize_hybrid_weights(to_qrels(dev.qrels), candidates, evaluation.eval_primary_metric)
                logger.info(
                    "%s on %s: hybrid weights tuned on %d dev queries: %s", name, dev.name, len(dev.qrels), weights
                )
                mode_runs.set_hybrid_weights(weights, evaluation.eval_top_k)
            runs[retrieval_set.name][name] = mode_runs
            if run_args.plots:
                map_embeddings[retrieval_set.name][name] = _map_embeddings(model, retrieval_set, run_args.batch_size)

    results = []
    for retrieval_set, forgetting in sets:
        folder = output_dir / (f"forgetting-{retrieval_set.name}" if forgetting else retrieval_set.name)
        result = _report_set(retrieval_set, runs[retrieval_set.name], recipe, folder, forgetting)
        result.warnings = warnings[retrieval_set.name]
        if run_args.plots:
            plot_embedding_maps(map_embeddings[retrieval_set.name], folder / "embeddings_pca.png", retrieval_set.name)
        results.append(result)
    (output_dir / "summary.md").write_text(summary_markdown(results, evaluation.eval_primary_metric), encoding="utf-8")
    return results


def trained_on_warnings(models: dict[str, str], set_name: str, split: str) -> list[str]:
    """A line per model whose card (`st_bge_card.json`, written by `st-bge train`) says it was trained on this
    retrieval set's `split`: its scores there measure memory, not retrieval."""
    warnings = []
    for name, path in models.items():
        card_inputs = Path(path) / CARD_INPUTS
        if not card_inputs.is_file():
            continue
        trained = json.loads(card_inputs.read_text(encoding="utf-8")).get("data_summary", {}).get("trained_splits", {})
        splits = trained.get(set_name, [])
        if split in splits or ANY_SPLIT in splits:
            what = f"qrels/{split}.tsv of {set_name}" if ANY_SPLIT not in splits else set_name
            warnings.append(
                f"{name} was trained on {what} (its card says so): its scores on these queries measure what it "
                "memorised, not how it retrieves; evaluate it on a split it was not trained on"
            )
            logger.warning("%s", warnings[-1])
    return warnings


def _modes_of(model: SentenceTransformer, requested: list[str] | None, name: str) -> list[str]:
    """The modes `eval_modes` asks for that `model` has (all it has by default)."""
    available = model_modes(model)
    if requested is None:
        return available
    modes = [mode for mode in requested if mode in available]
    if not modes:
        raise ConfigError(f"eval_modes {requested}: model '{name}' has none of them (it has {available})")
    skipped = [mode for mode in requested if mode not in available]
    if skipped:
        logger.info("%s has no %s mode: evaluated in %s", name, " or ".join(skipped), modes)
    return modes


def _report_set(
    retrieval_set: RetrievalSet, runs: dict[str, ModeRuns], recipe: EvalRecipe, folder: Path, forgetting: bool
) -> SetResult:
    evaluation, run_args = recipe.evaluation, recipe.run
    qrels = to_qrels(retrieval_set.qrels, name=retrieval_set.name)
    bm25 = ("BM25", bm25_run(retrieval_set, top_k=evaluation.eval_top_k)) if evaluation.eval_bm25 else None
    comparison = compare_modes(
        qrels,
        {name: mode_runs.runs for name, mode_runs in runs.items()},
        evaluation.eval_metrics,
        eval_set={**retrieval_set.summary(), "top_k": evaluation.eval_top_k},
        reference=bm25,
        notes=mode_notes(runs, evaluation.eval_top_k),
        stat_tests=run_args.stat_tests,
        max_p=evaluation.eval_max_p,
    )
    comparison.save(folder)
    metric = evaluation.eval_primary_metric
    # One label per (model, mode): the model's name for dense, `<model>-<mode>` otherwise.
    labelled = {
        _label(name, mode): (mode, run) for name, mode_runs in runs.items() for mode, run in mode_runs.runs.items()
    }
    per_query = {label: per_query_scores(qrels, run, metric) for label, (_, run) in labelled.items()}
    baselines = {mode: _label(c.baseline, mode) for mode, c in comparison.modes.items()}
    compared = [(label, baselines[mode]) for label, (mode, _) in labelled.items() if label != baselines[mode]]
    labels = list(labelled)
    with open(folder / f"per_query_{metric}.csv", "w", newline="", encoding="utf-8") as file:
        writer = csv.writer(file)
        writer.writerow(["query_id", *labels, *(f"delta_{label}" for label, _ in compared)])
        last = compared[-1] if compared else None
        order = per_query_deltas(per_query[last[1]], per_query[last[0]]) if last else []
        for query_id in [row[0] for row in order] or sorted(per_query[labels[0]]):
            row = [per_query[label][query_id] for label in labels]
            writer.writerow(
                [query_id, *row, *(per_query[label][query_id] - per_query[base][query_id] for label, base in compared)]
            )
    failures = {}
    for label, (_, run) in labelled.items():
        outcomes = analyse_run(retrieval_set, run)
        write_failures_csv(folder / f"failures_{_file_name(label)}.csv", retrieval_set, outcomes)
        failures[label] = failure_counts(outcomes)
    (folder / "failures.json").write_text(json.dumps(failures, indent=2) + "\n", encoding="utf-8")
    if run_args.plots:
        plot_metric_bars(comparison, folder / "metrics.png")
        for label, base in compared:
            deltas = per_query_deltas(per_query[base], per_query[label])
            plot_per_query_deltas(
                deltas, metric, f"{label} vs {base}", folder / f"per_query_delta_{_file_name(label)}.png"
            )
    return SetResult(comparison=comparison, failures=failures, folder=folder, forgetting=forgetting)


def _label(model: str, mode: str) -> str:
    return model if mode == "dense" else f"{model}-{mode}"


def _map_embeddings(model: SentenceTransformer, retrieval_set: RetrievalSet, batch_size: int) -> tuple:
    """Embeddings of up to MAX_MAP_QUERIES queries and, row-aligned, one relevant document of each."""
    pairs = []
    for query_id in sorted(retrieval_set.qrels)[:MAX_MAP_QUERIES]:
        relevant = [d for d, g in sorted(retrieval_set.qrels[query_id].items()) if g > 0]
        if relevant:
            pairs.append((retrieval_set.queries[query_id], retrieval_set.corpus[relevant[0]]))
    queries = model.encode_query([q for q, _ in pairs], batch_size=batch_size, convert_to_tensor=True).cpu()
    documents = model.encode_document([d for _, d in pairs], batch_size=batch_size, convert_to_tensor=True).cpu()
    return queries, documents


def summary_markdown(results: list[SetResult], metric: str) -> str:
    """Every set's table, then the primary metric's change per set: domain gain beside the forgetting check."""
    parts = ["# Evaluation summary\n"]
    for result in results:
        kind = " (forgetting check)" if result.forgetting else ""
        parts.append(f"## {result.comparison.eval_set['name']}{kind}\n")
        parts += [f"**Warning:** {warning}\n" for warning in result.warnings]
        parts.append(f"{result.comparison.to_markdown()}\n")
        rows = [[name, *(classes[c] for c in FAILURE_CLASSES)] for name, classes in result.failures.items()]
        parts.append(f"Failing queries per class:\n\n{markdown_table(['Model', *FAILURE_CLASSES], rows)}\n")
    comparisons = [r for r in results if len(r.comparison.models) > 1]
    if comparisons:
        parts.append(f"## Change in {metric} against {comparisons[0].comparison.models[0]}\n")
        rows = []
        for result in comparisons:
            set_label = result.comparison.eval_set["name"] + (" (forgetting check)" if result.forgetting else "")
            for mode, comparison in result.comparison.modes.items():
                for model in comparison.models[1:]:
                    relative = comparison.relative(model, metric)
                    rows.append(
                        [
                            set_label,
                            mode,
                            model,
                            f"{comparison.delta(model, metric):+.4f}",
                            "n/a" if relative is None else f"{relative:+.1f}%",
                            "yes" if comparison.significant(model, metric) else "no",
                        ]
                    )
        parts.append(markdown_table(["Set", "Mode", "Model", "Δ", "Δ %", "significant"], rows))
    return "\n".join(parts) + "\n"


def _file_name(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name)
