"""Evaluation stage: retrieval in every mode -> ranx Runs -> ranx metrics -> base vs fine-tuned report, BM25 beside."""

from st_bge.evaluation.comparison import ModelComparison, RetrievalComparison, compare_modes, compare_runs
from st_bge.evaluation.evaluator import RanxRetrievalEvaluator
from st_bge.evaluation.metrics import evaluate_run, to_qrels, to_run
from st_bge.evaluation.retrieval import ModeRuns, retrieve, retrieve_modes

__all__ = [
    "ModeRuns",
    "ModelComparison",
    "RanxRetrievalEvaluator",
    "RetrievalComparison",
    "compare_modes",
    "compare_runs",
    "evaluate_run",
    "retrieve",
    "retrieve_modes",
    "to_qrels",
    "to_run",
]
