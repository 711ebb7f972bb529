"""Comparisons against hand-computed means, deltas and p-values."""

from __future__ import annotations

import itertools
import math
import statistics

import pytest
from scipy import stats

from st_bge.evaluation.comparison import ModelComparison, RetrievalComparison, compare_modes, compare_runs
from st_bge.evaluation.metrics import per_query_scores, to_qrels, to_run

# Per-query MRR@10: base [1/2, 1/3, 1, 1/5], fine-tuned [1, 1, 1/4, 1]. The differences have distinct sizes
# and no two sign patterns give the same total, so the randomisation test has no ties at its threshold.
QRELS = to_qrels({"q1": {"d1": 1}, "q2": {"d2": 1}, "q3": {"d3": 1}, "q4": {"d4": 1}})
BASE = to_run(
    {
        "q1": {"x": 5, "d1": 4},
        "q2": {"x": 5, "y": 4, "d2": 3},
        "q3": {"d3": 5},
        "q4": {"a": 5, "b": 4, "c": 3, "e": 2, "d4": 1},
    }
)
FINE_TUNED = to_run({"q1": {"d1": 5}, "q2": {"d2": 5}, "q3": {"a": 5, "b": 4, "c": 3, "d3": 2}, "q4": {"d4": 5}})
BASE_MRR = [1 / 2, 1 / 3, 1, 1 / 5]
TUNED_MRR = [1, 1, 1 / 4, 1]


def test_per_query_scores():
    assert per_query_scores(QRELS, BASE, "mrr@10") == pytest.approx(
        dict(zip(["q1", "q2", "q3", "q4"], BASE_MRR, strict=True))
    )


def test_means_deltas_and_p_values_match_hand_computation():
    comparison = compare_runs(
        QRELS, {"base": BASE, "tuned": FINE_TUNED}, ["mrr@10"], eval_set={"name": "toy"}, max_p=0.05
    )
    base_mean, tuned_mean = statistics.mean(BASE_MRR), statistics.mean(TUNED_MRR)
    assert comparison.scores["base"]["mrr@10"] == pytest.approx(base_mean)
    assert comparison.delta("tuned", "mrr@10") == pytest.approx(tuned_mean - base_mean)
    assert comparison.relative("tuned", "mrr@10") == pytest.approx(100 * (tuned_mean - base_mean) / base_mean)

    # Paired t-test, two-sided: t = mean(d) / (sd(d) / sqrt(n)), n - 1 degrees of freedom.
    diffs = [t - b for t, b in zip(TUNED_MRR, BASE_MRR, strict=True)]
    t = statistics.mean(diffs) / (statistics.stdev(diffs) / math.sqrt(len(diffs)))
    assert comparison.p_values["tuned"]["student"]["mrr@10"] == pytest.approx(2 * stats.t.sf(abs(t), len(diffs) - 1))

    # Fisher's randomisation test: the share of the 2^n sign flips whose |mean difference| reaches the observed
    # one; ranx samples 1000 flips, so it estimates this exact value.
    observed = abs(statistics.mean(diffs))
    flips = list(itertools.product([1, -1], repeat=len(diffs)))
    exact = sum(abs(statistics.mean(s * d for s, d in zip(f, diffs, strict=True))) >= observed - 1e-12 for f in flips)
    assert comparison.p_values["tuned"]["fisher"]["mrr@10"] == pytest.approx(exact / len(flips), abs=0.05)
    assert not comparison.significant("tuned", "mrr@10")


def test_identical_runs_have_p_one_and_render():
    comparison = compare_runs(QRELS, {"a": BASE, "b": BASE}, ["mrr@10", "ndcg@10"], eval_set={"name": "toy"})
    assert comparison.p_values["b"]["student"] == {"mrr@10": 1.0, "ndcg@10": 1.0}
    table = comparison.to_markdown()
    assert (
        table.splitlines()[0] == "| Metric | a | b | Δ | Δ % | p (paired t-test) | p (Fisher's randomisation test) |"
    )
    assert "| mrr@10 | 0.5083 | 0.5083 | +0.0000 | +0.0% | 1 | 1 |" in table


def test_runs_are_not_mutated():
    compare_runs(QRELS, {"base": BASE, "tuned": FINE_TUNED}, ["mrr@10"], eval_set={})
    assert dict(BASE.scores) == {} and BASE.name is None


def test_randomisation_p_below_its_resolution_is_shown_as_a_bound():
    comparison = ModelComparison(
        eval_set={"name": "toy"},
        metrics=["ndcg@10"],
        models=["base", "tuned"],
        scores={"base": {"ndcg@10": 0.1}, "tuned": {"ndcg@10": 0.3}},
        p_values={"tuned": {"student": {"ndcg@10": 1.2e-5}, "fisher": {"ndcg@10": 0.0}}},
        max_p=0.05,
    )
    assert "| ndcg@10 | 0.1000 | 0.3000* | +0.2000 | +200.0% | 1.2e-05 | < 0.001 |" in comparison.to_markdown()


def test_every_model_is_also_tested_against_the_reference_run():
    comparison = compare_runs(
        QRELS, {"tuned": FINE_TUNED}, ["mrr@10"], eval_set={"name": "toy"}, reference=("BM25", BASE)
    )
    assert comparison.models == ["tuned"] and comparison.reference == "BM25"
    assert comparison.reference_scores["mrr@10"] == pytest.approx(statistics.mean(BASE_MRR))
    diffs = [t - b for t, b in zip(TUNED_MRR, BASE_MRR, strict=True)]
    t = statistics.mean(diffs) / (statistics.stdev(diffs) / math.sqrt(len(diffs)))
    expected = 2 * stats.t.sf(abs(t), len(diffs) - 1)
    assert comparison.reference_p_values["tuned"]["student"]["mrr@10"] == pytest.approx(expected)


def mode_comparison(mode, models, scores, p_values, reference_p):
    return ModelComparison(
        eval_set={"name": "toy", "queries": 4},
        metrics=["ndcg@10"],
        models=models,
        scores={model: {"ndcg@10": score} for model, score in zip(models, scores, strict=True)},
        p_values={model: {"student": {"ndcg@10": p}} for model, p in p_values.items()},
        max_p=0.05,
        mode=mode,
        reference="BM25",
        reference_scores={"ndcg@10": 0.2},
        reference_p_values={model: {"student": {"ndcg@10": p}} for model, p in reference_p.items()},
    )


def test_modes_and_bm25_in_one_table_and_back_from_json(tmp_path):
    dense = mode_comparison("dense", ["base", "tuned"], [0.1, 0.3], {"tuned": 0.01}, {"base": 0.5, "tuned": 0.04})
    # A mode only the fine-tuned model has (new heads on a dense base): no baseline, so no Δ in that row.
    sparse = mode_comparison("sparse", ["tuned"], [0.25], {}, {"tuned": 0.3})
    comparison = RetrievalComparison({"dense": dense, "sparse": sparse}, notes=["colbert: exact."])
    assert comparison.to_markdown() == (
        "| Mode | Metric | BM25 | base | tuned | Δ | Δ % | p (paired t-test) |\n"
        "|:--|--:|--:|--:|--:|--:|--:|--:|\n"
        "| dense | ndcg@10 | 0.2000 | 0.1000 | 0.3000*† | +0.2000 | +200.0% | 0.01 |\n"
        "| sparse | ndcg@10 | 0.2000 |  | 0.2500 |  |  |  |\n"
        "\n"
        "\\* p ≤ 0.05 against base (paired t-test).\n"
        "\n"
        "† p ≤ 0.05 against BM25 (paired t-test).\n"
        "\n"
        "colbert: exact."
    )
    comparison.save(tmp_path)
    loaded = RetrievalComparison.load(tmp_path)
    assert loaded.to_dict() == comparison.to_dict() and loaded.to_markdown() == comparison.to_markdown()


def test_plots_show_error_bars_an_honest_scale_the_base_and_the_kept_checkpoint():
    """training_curves.png zoomed its axis so +0.014 looked steep, without the base or the kept epoch; metrics.png
    promised stars it never drew and had no error bars."""
    from st_bge.evaluation.plots import metric_bars_figure, training_curves_figure

    log = [
        {"step": 1, "loss": 1.0},
        {"step": 1, "eval_m": 0.70},
        {"step": 2, "loss": 0.5},
        {"step": 2, "eval_m": 0.714},
    ]
    figure = training_curves_figure(log, "eval_m", base_score=0.70, best_step=2)
    metric_axis = figure.axes[1]
    assert metric_axis.get_ylim() == (0, 1)
    labels = [line.get_label() for line in metric_axis.get_lines()]
    assert "base model 0.7000" in labels and "checkpoint kept" in labels
    kept = metric_axis.get_lines()[labels.index("checkpoint kept")]
    assert list(kept.get_xdata()) == [2] and list(kept.get_ydata()) == [0.714]

    qrels = to_qrels({"q1": {"d1": 1}, "q2": {"d2": 1}, "q3": {"d3": 1}})
    same = to_run({"q1": {"d1": 1.0}, "q2": {"d2": 1.0}, "q3": {"d9": 1.0}})
    comparison = compare_modes(
        qrels, {"base": {"dense": same}, "tuned": {"dense": same}}, ["ndcg@10"], eval_set={"name": "x"}
    )
    bars = metric_bars_figure(comparison)
    assert "no difference from base significant at p ≤ 0.05" in bars._suptitle.get_text()
    from matplotlib.container import ErrorbarContainer

    assert any(isinstance(container, ErrorbarContainer) for container in bars.axes[0].containers)
    assert comparison.primary.ci95["base"]["ndcg@10"] > 0
