"""The data sections: where the training pairs come from (# Data), the checks run on them (# Data checks), the hard
negatives mined for them (# Hard negatives) and a teacher's scores of them (# Teacher scores)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from st_bge.errors import ConfigError


@dataclass
class DataArguments:
    """# Data: where the training pairs come from and what is held out for evaluation."""

    dataset_name_or_path: str | None = field(
        default=None,
        metadata={
            "help": "Training data: a Hub dataset id, a jsonl/json/csv/parquet file, a BEIR folder (corpus.jsonl, "
            "queries.jsonl, qrels/<split>.tsv) or a LlamaIndex EmbeddingQAFinetuneDataset .json file."
        },
    )
    dataset_mixture: dict[str, float] | None = field(
        default=None,
        metadata={
            "help": "Several training sources instead of dataset_name_or_path, each with a sampling weight, e.g. "
            '{"data/en.jsonl": 2, "data/zh": 1}: a source gives weight / (sum of weights) of the rows of an epoch '
            "(drawn without or, past its size, with repetition) and every batch comes from one source."
        },
    )
    dataset_format: Literal["auto", "pairs", "flagembedding", "rag_logs", "beir", "llamaindex"] = field(
        default="auto",
        metadata={
            "help": "'pairs': one record per (anchor, positive[, negative...]) with columns named by column_mapping; "
            "'flagembedding': {query, pos: [...], neg: [...]} lines; 'rag_logs': {query, retrieved: [{text, "
            "helpful}, ...]} lines of a RAG system; 'beir': a BEIR folder; 'llamaindex': {queries, corpus, "
            "relevant_docs}; 'auto' detects it per source."
        },
    )
    dataset_config_name: str | None = field(default=None, metadata={"help": "Hub dataset configuration."})
    dataset_split: str = field(
        default="auto",
        metadata={
            "help": "Hub split, or the BEIR qrels split(s) to train on: a name, comma-separated names, 'all', or "
            "'auto': a Hub dataset's train split; a BEIR folder's train split (without one, every split but test), "
            "evaluated on its test split, the best checkpoint chosen on its dev split. 'auto' never trains on a "
            "test split: a folder with only one needs eval_split_size (queries held out of it, and the reports say "
            "so) or dataset_split: test."
        },
    )
    dataset_revision: str | None = field(default=None, metadata={"help": "Hub dataset revision."})
    column_mapping: dict[str, str] | None = field(
        default=None,
        metadata={
            "help": "For 'pairs' data: which source column is the anchor, the positive and the negatives, as "
            'a mapping (JSON on the command line), e.g. {"anchor": "question", "positive": "answer"}.'
        },
    )
    num_negatives: int | None = field(
        default=None,
        metadata={
            "help": "Hard negatives per training row (FlagEmbedding data, RAG logs); default: the fewest any record has, at "
            "most 7 (FlagEmbedding's train_group_size 8 = 1 positive + 7 negatives)."
        },
    )
    max_train_samples: int | None = field(
        default=None, metadata={"help": "Keep only the first N training rows (after the split), for quick runs."}
    )
    eval_dataset_name_or_path: str | None = field(
        default=None,
        metadata={
            "help": "A retrieval set to evaluate on: a BEIR folder, a LlamaIndex file, or pairs / FlagEmbedding data "
            "(each anchor a query). Overrides eval_split_size."
        },
    )
    eval_dataset_split: str = field(default="test", metadata={"help": "qrels split of eval_dataset_name_or_path."})
    eval_split_size: float = field(
        default=0.0,
        metadata={
            "help": "Fraction of the training queries held out for evaluation (split by query, so no query is "
            "in both). Used when no eval_dataset_name_or_path is given and the data has no test split of its own "
            "left out of training; 0 disables evaluation."
        },
    )
    split_seed: int = field(default=42, metadata={"help": "Seed of the train/eval split."})

    def validate(self) -> None:
        """Checks no single field's type can express.

        Raises:
            ConfigError: eval_split_size outside [0, 1), a non-positive mixture weight, or column_mapping on data
                that is not 'pairs'.
        """
        if not 0.0 <= self.eval_split_size < 1.0:
            raise ConfigError(f"eval_split_size must be in [0, 1), got {self.eval_split_size}")
        if self.dataset_mixture is not None and not all(
            isinstance(weight, (int, float)) and weight > 0 for weight in self.dataset_mixture.values()
        ):
            raise ConfigError(f"dataset_mixture weights must be positive numbers, got {self.dataset_mixture}")
        if self.column_mapping is not None and self.dataset_format not in ("auto", "pairs"):
            raise ConfigError(f"column_mapping applies to 'pairs' data, not dataset_format '{self.dataset_format}'")


@dataclass
class QualityArguments:
    """# Data checks: the quality and leakage report run before training (also `st-bge data check`)."""

    data_check: Literal["enforce", "warn", "off"] = field(
        default="enforce",
        metadata={
            "help": "'enforce': a 'fail' verdict of the data quality report stops training before it starts; "
            "'warn': report only; 'off': skip the report. The report is saved as data_quality.{json,md}."
        },
    )
    eval_overlap: Literal["report", "refuse"] = field(
        default="report",
        metadata={
            "help": "Queries or positive documents found in both the training and the evaluation data inflate "
            "the results: 'report' lists the overlap in the report, 'refuse' stops with an error."
        },
    )


@dataclass
class MiningArguments:
    """# Hard negatives: mined with the base model (docs/mining.md)."""

    mine_hard_negatives: bool = field(
        default=False,
        metadata={"help": "Mine hard negatives for the training rows before training (also `st-bge data mine`)."},
    )
    mine_num_negatives: int = field(default=3, metadata={"help": "Negatives kept per (anchor, positive) row."})
    mine_range_min: int = field(
        default=0, metadata={"help": "Skip this many top-ranked candidates (the likeliest false negatives)."}
    )
    mine_range_max: int | None = field(default=100, metadata={"help": "Consider candidates up to this rank."})
    mine_absolute_margin: float | None = field(
        default=None,
        metadata={"help": "Drop a candidate whose score is above (positive score - margin): a likely false negative."},
    )
    mine_relative_margin: float | None = field(
        default=0.05,
        metadata={
            "help": "Drop a candidate whose score is above (1 - margin) x positive score (NV-Retriever's "
            "positive-aware filter; 0.05 keeps negatives below 95% of the positive)."
        },
    )
    mine_max_score: float | None = field(
        default=None, metadata={"help": "Drop a candidate scored above this, whatever the positive's score."}
    )
    mine_cross_encoder: str | None = field(
        default=None, metadata={"help": "A cross-encoder (Hub id or folder) that rescores the candidates."}
    )
    mine_sampling_strategy: Literal["top", "random"] = field(
        default="top", metadata={"help": "Keep the top-scored surviving candidates, or a random sample of them."}
    )
    mine_batch_size: int = field(default=64, metadata={"help": "Encoding batch size while mining."})
    mine_cache_dir: str | None = field(
        default=None,
        metadata={
            "help": "Cache of mined datasets, keyed by model, data and the mining settings (default "
            "~/.cache/st-bge/mined, or $ST_BGE_CACHE/mined)."
        },
    )
    mine_use_cache: bool = field(default=True, metadata={"help": "Read and write the mining cache."})
    mine_output_dir: str = field(
        default="outputs/mined",
        metadata={
            "help": "Where `st-bge data mine` writes the mined rows (<source>.jsonl, columns anchor, positive, "
            "negative_1..n: a 'pairs' file to train on) and the mining and quality reports."
        },
    )


@dataclass
class ScoringArguments:
    """# Teacher scores: a cross-encoder's scores of the training rows, for distillation (`st-bge data score`)."""

    score_cross_encoder: str | None = field(
        default=None,
        metadata={
            "help": "The teacher: a sentence-transformers CrossEncoder (Hub id or folder), e.g. BAAI/bge-reranker-v2-m3."
        },
    )
    score_max_length: int = field(default=512, metadata={"help": "Truncate each (query, document) pair to this."})
    score_normalize: bool = field(
        default=False,
        metadata={
            "help": "Map the scores through a sigmoid into (0, 1) (FlagEmbedding's normalize); default: raw logits."
        },
    )
    score_batch_size: int = field(default=64, metadata={"help": "Pairs per forward pass of the cross-encoder."})
    score_output_dir: str = field(
        default="outputs/scored",
        metadata={
            "help": "Where `st-bge data score` writes <source>.jsonl (FlagEmbedding lines with pos_scores / neg_scores: "
            "train on it with kd_loss) and score_report.json."
        },
    )
    score_cache_dir: str | None = field(
        default=None,
        metadata={
            "help": "Cache of scores, keyed by the teacher's weights, the pairs and the settings (default "
            "~/.cache/st-bge/scores, or $ST_BGE_CACHE/scores)."
        },
    )
    score_use_cache: bool = field(default=True, metadata={"help": "Read and write the score cache."})
