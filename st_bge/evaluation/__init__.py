"""Evaluation stage: dense retrieval -> ranx Run -> ranx metrics -> base vs fine-tuned report."""

from st_bge.evaluation.comparison import ModelComparison, compare_runs
from st_bge.evaluation.evaluator import RanxRetrievalEvaluator
from st_bge.evaluation.metrics import evaluate_run, to_qrels, to_run
from st_bge.evaluation.retrieval import retrieve

__all__ = [
    "ModelComparison",
    "RanxRetrievalEvaluator",
    "compare_runs",
    "evaluate_run",
    "retrieve",
    "to_qrels",
    "to_run",
]
