"""Plots a person would rather look at than read: PNG files, drawn headless.

`matplotlib.figure.Figure` renders through the Agg canvas without pyplot, so no display, backend choice or global
figure state is involved.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import torch
from matplotlib.figure import Figure

from st_bge.evaluation.comparison import ModelComparison, RetrievalComparison


def plot_metric_bars(comparison: RetrievalComparison, path: str | Path) -> Path:
    """`metric_bars_figure` as a PNG."""
    return _save(metric_bars_figure(comparison), path)


def metric_bars_figure(comparison: RetrievalComparison) -> Figure:
    """One panel per retrieval mode (then per mode of the forgetting check's set, if there is one): a group per
    metric, a bar per model (BM25 first, in grey) with its 95% confidence interval; * over a bar that differs
    significantly from its mode's baseline, and the title says when none does."""
    panels = dict(comparison.modes)
    if comparison.forgetting is not None:
        general = comparison.forgetting.eval_set.get("name", "general set")
        panels |= {f"forgetting check, {general}: {mode}": c for mode, c in comparison.forgetting.modes.items()}
    columns = min(2, len(panels))
    rows = -(-len(panels) // columns)
    figure = Figure(figsize=(columns * (1.6 * len(comparison.metrics) + 2), 4 * rows))
    axes = figure.subplots(rows, columns, squeeze=False).flatten()
    colours = {model: f"C{index}" for index, model in enumerate(comparison.models)}
    for axis, (title, panel) in zip(axes, panels.items(), strict=False):
        _metric_bars(axis, panel, colours)
        axis.set_title(title)
    for axis in axes[len(panels) :]:
        axis.set_visible(False)
    handles = {label: handle for axis in axes for handle, label in zip(*axis.get_legend_handles_labels(), strict=True)}
    figure.legend(handles.values(), handles.keys(), loc="upper right")
    title = comparison.eval_set.get("name", "")
    baselines = list(dict.fromkeys(c.baseline for c in panels.values() if len(c.models) > 1))
    if baselines:
        starred = any(
            c.significant(model, metric) for c in panels.values() for model in c.models[1:] for metric in c.metrics
        )
        against = " / ".join(baselines)
        title += (
            f": * p ≤ {comparison.max_p:g} vs {against}"
            if starred
            else f": no difference from {against} significant at p ≤ {comparison.max_p:g}"
        )
    figure.suptitle(f"{title} (bars: 95% confidence intervals)")
    return figure


def _metric_bars(axis, comparison: ModelComparison, colours: Mapping[str, str]) -> None:
    metrics = comparison.metrics
    bars = [(comparison.reference, comparison.reference_scores, "tab:gray")] if comparison.reference else []
    bars += [(model, comparison.scores[model], colours[model]) for model in comparison.models]
    width = 0.8 / len(bars)
    for index, (label, scores, colour) in enumerate(bars):
        xs = [m + index * width for m in range(len(metrics))]
        values = [scores[metric] for metric in metrics]
        errors = [comparison.ci95.get(label, {}).get(metric, 0.0) for metric in metrics]
        axis.bar(xs, values, width, label=label, color=colour, yerr=errors, capsize=2, ecolor="black")
        if label in comparison.models[1:]:
            for x, value, metric in zip(xs, values, metrics, strict=True):
                if comparison.significant(label, metric):
                    error = comparison.ci95.get(label, {}).get(metric, 0.0)
                    axis.text(x, value + error + 0.01, "*", ha="center", fontsize=14)
    axis.set_xticks([m + width * (len(bars) - 1) / 2 for m in range(len(metrics))], metrics, rotation=30)
    axis.set_ylim(0, 1.08)


def plot_per_query_deltas(deltas: Sequence[tuple[str, float, float, float]], metric: str, label: str, path) -> Path:
    """Per-query change of `metric`, sorted: how many queries got better, stayed, got worse."""
    values = [delta for *_, delta in deltas]
    better, worse = sum(v > 0 for v in values), sum(v < 0 for v in values)
    figure = Figure(figsize=(8, 3.5))
    axis = figure.subplots()
    colours = ["tab:green" if v > 0 else "tab:red" if v < 0 else "tab:gray" for v in values]
    axis.bar(range(len(values)), values, color=colours, width=1.0)
    axis.axhline(0, color="black", linewidth=0.8)
    axis.set_xlabel("queries (sorted by change)")
    axis.set_ylabel(f"Δ {metric}")
    axis.set_title(f"{label}: {better} better, {len(values) - better - worse} unchanged, {worse} worse")
    return _save(figure, path)


def plot_embedding_maps(
    embeddings: Mapping[str, tuple[torch.Tensor, torch.Tensor]], path: str | Path, title: str = ""
) -> Path:
    """2-D PCA map per model of query and document embeddings, each query joined to its relevant document.

    Args:
        embeddings: model name -> (query embeddings, embeddings of each query's relevant document), row-aligned.
    """
    figure = Figure(figsize=(5 * len(embeddings), 4.5))
    axes = figure.subplots(1, len(embeddings), squeeze=False)
    for axis, (model, (queries, documents)) in zip(axes[0], embeddings.items(), strict=True):
        points = torch.cat([queries, documents]).float()
        centred = points - points.mean(dim=0)
        _, _, components = torch.linalg.svd(centred, full_matrices=False)
        xy = (centred @ components[:2].T).numpy()
        n = len(queries)
        for i in range(n):
            axis.plot([xy[i, 0], xy[n + i, 0]], [xy[i, 1], xy[n + i, 1]], color="lightgray", linewidth=0.5)
        axis.scatter(xy[:n, 0], xy[:n, 1], s=8, label="queries")
        axis.scatter(xy[n:, 0], xy[n:, 1], s=8, label="relevant documents")
        axis.set_title(model)
        axis.set_xticks([])
        axis.set_yticks([])
    axes[0][0].legend(loc="best")
    figure.suptitle(title or "Query and document embeddings (PCA)")
    return _save(figure, path)


def plot_training_curves(
    log_history: Sequence[Mapping[str, float]],
    metric_key: str | None,
    path,
    *,
    base_score: float | None = None,
    best_step: int | None = None,
) -> Path:
    """`training_curves_figure` as a PNG."""
    return _save(training_curves_figure(log_history, metric_key, base_score=base_score, best_step=best_step), path)


def training_curves_figure(
    log_history: Sequence[Mapping[str, float]],
    metric_key: str | None,
    *,
    base_score: float | None = None,
    best_step: int | None = None,
) -> Figure:
    """Training loss over steps, and the evaluation metric (if logged) on a second axis that spans 0 to 1, so that
    a change of 0.01 looks like one; the base model's score as a dashed line and the checkpoint kept as a star."""
    losses = [(entry["step"], entry["loss"]) for entry in log_history if "loss" in entry and "step" in entry]
    figure = Figure(figsize=(7, 4))
    axis = figure.subplots()
    if losses:
        axis.plot(*zip(*losses, strict=True), color="tab:blue", label="training loss")
    axis.set_xlabel("step")
    axis.set_ylabel("training loss", color="tab:blue")
    evals = [(e["step"], e[metric_key]) for e in log_history if metric_key and metric_key in e and "step" in e]
    if evals:
        second = axis.twinx()
        second.plot(*zip(*evals, strict=True), color="tab:orange", marker="o", label=metric_key)
        second.set_ylabel(metric_key, color="tab:orange")
        second.set_ylim(0, 1)
        if base_score is not None:
            second.axhline(base_score, color="tab:gray", linestyle="--", label=f"base model {base_score:.4f}")
        kept = [(step, value) for step, value in evals if step == best_step]
        if kept:
            second.plot(*kept[0], marker="*", markersize=16, color="tab:red", linestyle="", label="checkpoint kept")
        second.legend(loc="lower right")
    axis.set_title("Training")
    return figure


def _save(figure: Figure, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    return path
