"""A ranx retrieval evaluator that plugs into `SentenceTransformerTrainer`, so checkpoints are chosen by a ranx
metric (`metric_for_best_model: eval_<name>_<metric>`, e.g. `eval_retrieval_ndcg@10`).

For a BGE-M3 it scores every retrieval mode from one encoding: the dense metrics keep their names
(`retrieval_ndcg@10`), the others carry their mode (`retrieval_sparse_ndcg@10`, `retrieval_colbert_...`,
`retrieval_hybrid_...`), so a recipe can pick its best checkpoint by any of them."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from sentence_transformers import SentenceTransformer
from sentence_transformers.sentence_transformer.evaluation import BaseEvaluator

from st_bge.bge import ENSEMBLE_WEIGHTS
from st_bge.data.retrieval_set import RetrievalSet
from st_bge.evaluation.metrics import evaluate_run, to_qrels
from st_bge.evaluation.retrieval import ModeRuns, retrieve_modes

logger = logging.getLogger(__name__)

# Metric keys are `<name>_<metric>`; the Trainer logs them as `eval_<name>_<metric>`.
EVALUATOR_NAME = "retrieval"


class RanxRetrievalEvaluator(BaseEvaluator):
    """Retrieval over a `RetrievalSet` in each retrieval mode of the model, scored by ranx against its graded qrels.

    Args:
        retrieval_set: Queries, corpus and qrels to evaluate on.
        metrics: ranx metric names, e.g. `["ndcg@10", "mrr@10", "recall@100"]`.
        primary_metric: The metric (one of `metrics`) the Trainer selects the best checkpoint by.
        top_k: Documents retrieved per query.
        batch_size: Encoding batch size.
        name: Prefix of the returned metric keys (`<name>_<metric>`).
        modes: Retrieval modes to score (default: every mode the model has, `model_modes`).
        hybrid_weights: Weights of dense, sparse and ColBERT scores in the hybrid mode.
        colbert_max_memory_mb: ColBERT searches the whole corpus when its token vectors fit in this, else re-ranks.
    """

    def __init__(
        self,
        retrieval_set: RetrievalSet,
        metrics: Sequence[str],
        *,
        primary_metric: str = "ndcg@10",
        top_k: int = 100,
        batch_size: int = 64,
        name: str = EVALUATOR_NAME,
        modes: Sequence[str] | None = None,
        hybrid_weights: Sequence[float] = ENSEMBLE_WEIGHTS,
        colbert_max_memory_mb: float = 4096,
    ) -> None:
        super().__init__()
        if primary_metric not in metrics:
            raise ValueError(f"primary_metric {primary_metric!r} is not one of {list(metrics)}")
        self.retrieval_set = retrieval_set
        self.metrics = list(metrics)
        self.primary_metric = primary_metric
        self.top_k = top_k
        self.batch_size = batch_size
        self.name = name
        self.modes = list(modes) if modes else None
        self.hybrid_weights = list(hybrid_weights)
        self.colbert_max_memory_mb = colbert_max_memory_mb
        self.qrels = to_qrels(retrieval_set.qrels, name=retrieval_set.name)

    def runs(self, model: SentenceTransformer) -> ModeRuns:
        """The ranx runs of `model` on the retrieval set, one per mode."""
        return retrieve_modes(
            model,
            self.retrieval_set,
            self.modes,
            top_k=self.top_k,
            batch_size=self.batch_size,
            show_progress_bar=False,  # inside training: the Trainer's bar is the one to watch
            hybrid_weights=self.hybrid_weights,
            colbert_max_memory_mb=self.colbert_max_memory_mb,
        )

    def compute_metrics(self, model: SentenceTransformer) -> dict[str, float]:
        """Unprefixed ranx metrics of `model` on the retrieval set; modes other than dense as `<mode>_<metric>`."""
        metrics = {}
        for mode, run in self.runs(model).runs.items():
            prefix = "" if mode == "dense" else f"{mode}_"
            metrics.update({prefix + key: value for key, value in evaluate_run(self.qrels, run, self.metrics).items()})
        return metrics

    def __call__(
        self, model: SentenceTransformer, output_path: str | None = None, epoch: int = -1, steps: int = -1
    ) -> dict[str, float]:
        metrics = self.compute_metrics(model)
        scores = ", ".join(f"{key} {value:.4f}" for key, value in metrics.items())
        logger.info("Retrieval on %s: %s", self.retrieval_set.name, scores)
        metrics = self.prefix_name_to_metrics(metrics, self.name)
        self.store_metrics_in_model_card_data(model, metrics, epoch, steps)
        return metrics

    @property
    def description(self) -> str:
        return "Retrieval (ranx)"

    def get_config_dict(self) -> dict[str, Any]:
        config = {"dataset": self.retrieval_set.name, "top_k": self.top_k}
        return {**config, "modes": self.modes} if self.modes else config
