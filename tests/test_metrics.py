"""ranx metrics through st-bge's wrapper, against values computed by hand."""

from __future__ import annotations

import math

import pytest

from st_bge.evaluation.comparison import compare_runs
from st_bge.evaluation.metrics import evaluate_run, per_query_scores, to_qrels, to_run


def test_graded_metrics_match_hand_computed_values():
    # q1: d1 is highly relevant (2), d2 relevant (1); the run ranks d1, d3 (not relevant), d2.
    # q2: d9 relevant (1); the run ranks it second.
    qrels = to_qrels({"q1": {"d1": 2, "d2": 1}, "q2": {"d9": 1}})
    run = to_run({"q1": {"d1": 0.9, "d3": 0.8, "d2": 0.7}, "q2": {"d4": 0.6, "d9": 0.5}})
    metrics = evaluate_run(qrels, run, ["ndcg@10", "mrr@10", "recall@1", "recall@10", "map@100", "precision@2"])

    # nDCG with linear gains: q1 DCG = 2/log2(2) + 1/log2(4) = 2.5, ideal = 2 + 1/log2(3); q2 = (1/log2(3)) / 1
    ndcg_q1 = 2.5 / (2 + 1 / math.log2(3))
    ndcg_q2 = 1 / math.log2(3)
    assert metrics["ndcg@10"] == pytest.approx((ndcg_q1 + ndcg_q2) / 2)
    assert metrics["mrr@10"] == pytest.approx((1 + 1 / 2) / 2)
    assert metrics["recall@1"] == pytest.approx((1 / 2 + 0) / 2)
    assert metrics["recall@10"] == pytest.approx(1.0)
    # AP q1 = (1/1 + 2/3) / 2, AP q2 = 1/2
    assert metrics["map@100"] == pytest.approx(((1 + 2 / 3) / 2 + 1 / 2) / 2)
    assert metrics["precision@2"] == pytest.approx((1 / 2 + 1 / 2) / 2)


def test_single_metric_is_a_dict_and_the_run_is_not_mutated():
    qrels = to_qrels({"q1": {"d1": 1}})
    run = to_run({"q1": {"d1": 1.0}})
    assert evaluate_run(qrels, run, ["ndcg@10"]) == {"ndcg@10": 1.0}
    assert run.mean_scores == {}


def test_a_query_missing_from_the_run_scores_zero():
    qrels = to_qrels({"q1": {"d1": 1}, "q2": {"d2": 1}})
    run = to_run({"q1": {"d1": 1.0}})
    assert evaluate_run(qrels, run, ["recall@10"]) == {"recall@10": 0.5}


def test_a_run_that_retrieved_nothing_scores_zero():
    """A sparse head that weights no token retrieves nothing for any query: 0, not ranx's error on an empty run."""
    qrels = to_qrels({"q1": {"d1": 1}, "q2": {"d2": 1}})
    run = to_run({"q1": {}, "q2": {}}, name="sparse")
    assert evaluate_run(qrels, run, ["ndcg@10", "recall@10"]) == {"ndcg@10": 0.0, "recall@10": 0.0}
    assert per_query_scores(qrels, run, "ndcg@10") == {"q1": 0.0, "q2": 0.0}
    base = to_run({"q1": {"d1": 1.0}, "q2": {"d2": 1.0}}, name="base")
    comparison = compare_runs(qrels, {"base": base, "fine-tuned": run}, ["ndcg@10"], eval_set={"name": "tiny"})
    assert comparison.scores == {"base": {"ndcg@10": 1.0}, "fine-tuned": {"ndcg@10": 0.0}}


def test_integer_ids_become_strings():
    qrels = to_qrels({1: {10: 1}})
    run = to_run({1: {10: 0.3, 11: 0.9}})
    assert evaluate_run(qrels, run, ["mrr@10"]) == {"mrr@10": 0.5}


def test_fisher_randomisation_is_seeded_and_agrees_with_ranx():
    """The same differences give the same p-value every time; it estimates what ranx's (unseeded) test does."""
    import numpy as np
    from ranx.statistical_tests.fisher_randomization_test import fisher_randomization_test

    from st_bge.evaluation.metrics import fisher_randomisation_p

    rng = np.random.default_rng(0)
    control = rng.random(200)
    treatment = control + rng.normal(0.03, 0.2, size=200)
    ours = [fisher_randomisation_p(treatment - control, 10_000, seed=42) for _ in range(3)]
    assert ours[0] == ours[1] == ours[2]
    theirs = fisher_randomization_test(control, treatment, n_permutations=10_000)[0]
    assert abs(ours[0] - theirs) < 0.02  # Monte Carlo error of 10,000 draws at p ~ 0.05: about 0.002-0.005
    assert 0.0 < ours[0] < 0.5
    assert fisher_randomisation_p(np.zeros(50), 1000, seed=1) == 1.0  # no difference: every flip reaches it
    assert fisher_randomisation_p(np.full(50, 0.5), 1000, seed=1) < 0.01
