"""# Evaluation: the ranx metrics of every run, and the models and data of `st-bge eval`."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from st_bge.bge import ENSEMBLE_WEIGHTS, MODES
from st_bge.config.fields import check_mode_weights
from st_bge.config.parser import Argv, RecipeParser
from st_bge.errors import ConfigError

RETRIEVAL_MODES = (*MODES, "hybrid")
DEFAULT_METRICS = ["ndcg@10", "mrr@10", "recall@1", "recall@10", "recall@100", "map@100"]


@dataclass
class EvaluationArguments:
    """# Evaluation: ranx retrieval metrics on the held-out or given retrieval set."""

    eval_metrics: list[str] = field(
        default_factory=lambda: list(DEFAULT_METRICS),
        metadata={"help": "ranx metric names, e.g. ndcg@10 mrr@10 recall@100 map@100 precision@5 hit_rate@10."},
    )
    eval_primary_metric: str = field(
        default="ndcg@10", metadata={"help": "The metric that picks the best checkpoint; one of eval_metrics."}
    )
    eval_top_k: int = field(default=100, metadata={"help": "Documents retrieved per query."})
    eval_max_p: float = field(
        default=0.05, metadata={"help": "Significance threshold of the paired tests against the baseline model."}
    )
    eval_enabled: bool = field(
        default=True,
        metadata={
            "help": "Evaluate at all: false trains only (no base vs fine-tuned table, no checkpoint selection), even "
            "where the data has an eval set of its own (a BEIR folder's test split)."
        },
    )
    eval_base_model: bool = field(
        default=True, metadata={"help": "Evaluate the base model before training, for the base vs fine-tuned table."}
    )
    eval_modes: list[str] | None = field(
        default=None,
        metadata={
            "help": "Retrieval modes to evaluate, among dense, sparse, colbert and hybrid; default: every mode the "
            "model has (dense; for BGE-M3 also sparse, colbert and hybrid)."
        },
    )
    eval_bm25: bool = field(
        default=True,
        metadata={"help": "Also rank the corpus with BM25 and show it beside the models, with significance tests."},
    )
    eval_hybrid_weights: list[float] = field(
        default_factory=lambda: list(ENSEMBLE_WEIGHTS),
        metadata={"help": "Weights of the dense, sparse and ColBERT scores in the hybrid mode (BGE-M3's 1 0.3 1)."},
    )
    forgetting_dataset: str = field(
        default="auto",
        metadata={
            "help": "A general-domain retrieval set on which base and fine-tuned are also compared, to show what "
            "fine-tuning cost outside the domain. 'auto': the set st-bge ships for the recipe's language (en: a "
            "SQuAD dev sample, zh: a CMRC 2018 dev sample; by `language`, else the script of the evaluation "
            "queries); a BEIR folder or Hub id; 'none': no check."
        },
    )
    forgetting_dataset_split: str = field(default="test", metadata={"help": "qrels split of forgetting_dataset."})
    eval_colbert_max_memory_mb: float = field(
        default=4096,
        metadata={
            "help": "ColBERT scores the whole corpus when its token vectors (float32) fit in this many MB, else it "
            "re-ranks each query's dense and sparse top-k (eval_top_k)."
        },
    )

    def validate(self) -> None:
        """Raises:
        ConfigError: a primary metric not among eval_metrics, an unknown mode, or bad hybrid weights.
        """
        if self.eval_primary_metric not in self.eval_metrics:
            raise ConfigError(
                f"eval_primary_metric '{self.eval_primary_metric}' must be one of eval_metrics {self.eval_metrics}"
            )
        unknown = [mode for mode in self.eval_modes or [] if mode not in RETRIEVAL_MODES]
        if unknown:
            raise ConfigError(f"eval_modes: unknown mode(s) {unknown}; choose among {list(RETRIEVAL_MODES)}")
        check_mode_weights("eval_hybrid_weights", self.eval_hybrid_weights)


@dataclass
class EvalRunArguments:
    """# Models and data of `st-bge eval` / `recipes/evaluate.py` (metrics: the # Evaluation section)."""

    models: list[str] = field(
        metadata={
            "help": "Models to evaluate (Hub id, local folder, adapter folder); the first is the baseline the others "
            "are compared with. 'name=path' gives a model a name in the tables.",
            "aliases": ["--model", "--model_dir"],
        }
    )
    eval_datasets: list[str] = field(
        metadata={"help": "Retrieval sets: BEIR folders, or pairs / FlagEmbedding files (anchor = query)."}
    )
    eval_dataset_split: str = field(default="test", metadata={"help": "qrels split of the BEIR folders."})
    hybrid_fusion: Literal["weights", "optimize"] = field(
        default="weights",
        metadata={
            "help": "'weights': the hybrid mode uses eval_hybrid_weights; 'optimize': the weights that maximise "
            "eval_primary_metric on the fusion_dev_split queries (ranx.optimize_fusion), then used on the test set."
        },
    )
    fusion_dev_split: str = field(
        default="dev", metadata={"help": "qrels split of each BEIR folder that hybrid_fusion 'optimize' tunes on."}
    )
    stat_tests: list[str] = field(
        default_factory=lambda: ["student", "fisher"],
        metadata={"help": "ranx significance tests: student (paired t-test), fisher (randomisation test)."},
    )
    output_dir: str = field(default="outputs/eval", metadata={"help": "Where results, CSVs and plots go."})
    overwrite_output_dir: bool = field(default=False, metadata={"help": "Allow writing into a non-empty output_dir."})
    batch_size: int = field(default=64, metadata={"help": "Encoding batch size."})
    embedding_cache_dir: str | None = field(
        default=None,
        metadata={"help": "Corpus embedding cache (default ~/.cache/st-bge/embeddings, or $ST_BGE_CACHE)."},
    )
    use_embedding_cache: bool = field(default=True, metadata={"help": "Read and write the embedding cache."})
    plots: bool = field(default=True, metadata={"help": "Draw PNG plots next to the results."})

    def validate(self) -> None:
        """Raises:
        ConfigError: an unknown significance test.
        """
        unknown_tests = sorted(set(self.stat_tests) - {"student", "fisher"})
        if unknown_tests:
            raise ConfigError(f"stat_tests: unknown test(s) {unknown_tests}; use student and/or fisher")


@dataclass
class EvalRecipe:
    """The sections of one evaluation run. Built by `parse_eval_recipe`."""

    run: EvalRunArguments
    evaluation: EvaluationArguments


EVAL_SECTIONS = (EvalRunArguments, EvaluationArguments)


def parse_eval_recipe(argv: Argv = None, *, prog: str | None = None, usage: str | None = None) -> EvalRecipe:
    """Parse an evaluation recipe the way `recipes/evaluate.py` and `st-bge eval` do."""
    recipe = EvalRecipe(*RecipeParser(EVAL_SECTIONS, prog=prog, usage=usage).parse_sections(argv))
    recipe.run.validate()
    recipe.evaluation.validate()
    return recipe
