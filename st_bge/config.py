"""Recipe sections as dataclasses, and the parser that fills them from YAML and the command line.

A recipe is one flat YAML file (like alignment-handbook's) whose keys are the fields of the dataclasses below
plus every `SentenceTransformerTrainingArguments` field. The YAML gives defaults, command-line flags override
them, and a key that no section knows is an error naming the key, the file and the line, with the closest
valid key as a suggestion. `metadata["help"]` of every field is what `--help` prints.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import typing
from collections.abc import Callable, Sequence
from dataclasses import MISSING, dataclass, field, fields
from enum import Enum
from pathlib import Path
from typing import Any, Literal, NoReturn, TypeVar

import yaml
from sentence_transformers import SentenceTransformerTrainingArguments
from transformers import HfArgumentParser

from st_bge.bge import ENSEMBLE_WEIGHTS, LOSS_WEIGHTS, MODES
from st_bge.errors import ConfigError, did_you_mean
from st_bge.storage import PRE_TRAINING_FILES

LOSS_NAMES = ("mnrl", "cached_mnrl", "gist", "cached_gist", "m3_unified", "cached_m3_unified")
M3_HEADS = MODES
RETRIEVAL_MODES = (*MODES, "hybrid")
# What the parse functions take: command-line words (None: sys.argv), or the path of a recipe YAML file.
Argv = Sequence[str] | str | os.PathLike | None
SECRET_FIELDS = frozenset({"hub_token"})
# How a run was started, not how the model was trained: left out of the recipe in the card.
RUN_CONTROL_FIELDS = frozenset({"resume_from_checkpoint", "overwrite_output_dir"})
DEFAULT_METRICS = ["ndcg@10", "mrr@10", "recall@1", "recall@10", "recall@100", "map@100"]


@dataclass
class ModelArguments:
    """# Model: which encoder to fine-tune and how (full or LoRA)."""

    model_name_or_path: str = field(
        metadata={"help": "Hub id or local folder of any SentenceTransformer-loadable model, e.g. BAAI/bge-m3."}
    )
    model_revision: str | None = field(default=None, metadata={"help": "Hub revision (branch, tag or commit)."})
    pooling: Literal["auto", "cls", "mean", "lasttoken"] = field(
        default="auto",
        metadata={
            "help": "Pooling of the token embeddings. 'auto' gives BGE-family models CLS pooling + L2 normalisation "
            "(as BGE was trained) and keeps the saved pooling of any other Sentence Transformer model."
        },
    )
    max_seq_length: int | None = field(
        default=None, metadata={"help": "Truncate inputs to this many tokens (default: the model's own limit)."}
    )
    query_prompt: str | None = field(
        default="auto",
        metadata={
            "help": "Text prepended to every query (training anchors and evaluation queries). 'auto' uses BGE's "
            "retrieval instruction for bge-*-v1.5 models and nothing for others (BGE-M3 uses none); '' for none."
        },
    )
    use_lora: bool = field(default=False, metadata={"help": "Train a LoRA adapter (peft) instead of all weights."})
    lora_r: int = field(default=16, metadata={"help": "LoRA rank."})
    lora_alpha: int = field(default=32, metadata={"help": "LoRA scaling numerator (alpha / r scales the update)."})
    lora_dropout: float = field(default=0.1, metadata={"help": "Dropout on the LoRA branch."})
    lora_target_modules: list[str] = field(
        default_factory=lambda: ["all-linear"],
        metadata={"help": "Module names to adapt, or 'all-linear' for every linear layer of the encoder."},
    )
    trust_remote_code: bool = field(default=False, metadata={"help": "Allow custom modelling code from the Hub."})


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
    """# Hard negatives: mined with the base model through sentence-transformers' `mine_hard_negatives`."""

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


@dataclass
class SynthArguments:
    """# Synthetic queries: training pairs from a bare corpus (`st-bge data synth`), for a domain with no queries."""

    synth_corpus: str | None = field(
        default=None,
        metadata={
            "help": "The passages to write queries for: a BEIR folder (its corpus.jsonl), a corpus jsonl/json/csv/"
            "parquet file (a `text` column, optional `_id`/`id` and `title`), or pairs / FlagEmbedding / Hub data "
            "(its positives)."
        },
    )
    synth_corpus_split: str = field(default="train", metadata={"help": "Hub split of synth_corpus."})
    synth_generator: Literal["ict", "openai"] = field(
        default="ict",
        metadata={
            "help": "'ict': no model, the inverse cloze task (a sentence of the passage is the query and is removed "
            "from it; Lee et al. 2019); 'openai': an LLM behind any OpenAI-compatible chat endpoint (vLLM, TGI, "
            "llama.cpp, Ollama, a hosted API) writes the queries."
        },
    )
    synth_output_dir: str = field(
        default="outputs/synth",
        metadata={
            "help": "Where train.jsonl (anchor, positive: give it to dataset_name_or_path), synthetic_eval/ (a BEIR folder: "
            "eval_dataset_name_or_path), the generations journal and synth_report.{json,md} are written. Running "
            "again with the same generation settings resumes: passages already answered are not asked again."
        },
    )
    synth_queries_per_passage: int = field(default=1, metadata={"help": "Queries written per passage."})
    synth_max_passages: int | None = field(
        default=None, metadata={"help": "Use a seeded sample of this many passages (default: all)."}
    )
    synth_base_url: str | None = field(
        default=None,
        metadata={"help": "OpenAI-compatible base URL, e.g. http://127.0.0.1:8000/v1 (default: OpenAI's API)."},
    )
    synth_model: str | None = field(default=None, metadata={"help": "The chat model the endpoint serves."})
    synth_api_key_env: str = field(
        default="OPENAI_API_KEY",
        metadata={
            "help": "Environment variable holding the endpoint's key (never written to a file, log or card; a local "
            "server without one gets 'EMPTY')."
        },
    )
    synth_language: Literal["auto", "en", "zh"] = field(
        default="auto",
        metadata={"help": "Language of the default prompt and the queries ('auto': Chinese if most passages are)."},
    )
    synth_domain: str | None = field(
        default=None, metadata={"help": "The domain, for the prompt, e.g. 'medical consultations' or 'Python code'."}
    )
    synth_prompt_template: str | None = field(
        default=None,
        metadata={
            "help": "The prompt sent per passage, with {passage}, {n} (queries per passage) and optionally "
            "{domain}, {language}, {examples}; default: a built-in English or Chinese prompt asking for a JSON "
            "list of queries."
        },
    )
    synth_few_shot_file: str | None = field(
        default=None,
        metadata={"help": "A jsonl of {passage, query} examples shown in the prompt ({examples})."},
    )
    synth_temperature: float = field(default=0.7, metadata={"help": "Sampling temperature of the LLM."})
    synth_max_tokens: int = field(default=256, metadata={"help": "Most tokens the LLM may write per passage."})
    synth_concurrency: int = field(default=8, metadata={"help": "Requests in flight at once."})
    synth_max_retries: int = field(
        default=5, metadata={"help": "Retries of a request after a 429, a 5xx, a timeout or a dropped connection."}
    )
    synth_retry_delay: float = field(
        default=1.0,
        metadata={
            "help": "Seconds before the first retry, doubled each time up to 60 (with jitter); a Retry-After "
            "header wins."
        },
    )
    synth_timeout: float = field(default=60.0, metadata={"help": "Seconds a request may take."})
    synth_max_failures: int = field(
        default=50,
        metadata={
            "help": "Stop after this many passages ran out of retries (what was written so far is kept; run "
            "again to resume)."
        },
    )
    synth_ict_keep_sentence: float = field(
        default=0.1,
        metadata={
            "help": "ICT: how often the query sentence stays in its passage (Lee et al. keep it 10% of the time, "
            "so that the model still learns word overlap)."
        },
    )
    synth_min_query_chars: int = field(default=5, metadata={"help": "Drop queries shorter than this (characters)."})
    synth_max_query_chars: int = field(default=300, metadata={"help": "Drop queries longer than this (characters)."})
    synth_round_trip: bool = field(
        default=True,
        metadata={
            "help": "Keep a training query only if a retriever ranks its own passage in the top synth_filter_top_k "
            "of the corpus (Promptagator's round-trip consistency)."
        },
    )
    synth_filter_model: str | None = field(
        default=None, metadata={"help": "The round-trip retriever (default: model_name_or_path, the base model)."}
    )
    synth_filter_cross_encoder: str | None = field(
        default=None,
        metadata={
            "help": "A cross-encoder that reranks the retriever's top synth_filter_candidates before the top-k test."
        },
    )
    synth_filter_top_k: int = field(
        default=3, metadata={"help": "Round trip: the own passage must rank within this many."}
    )
    synth_filter_candidates: int = field(
        default=20, metadata={"help": "Round trip with a cross-encoder: retrieved passages it reranks."}
    )
    synth_batch_size: int = field(default=64, metadata={"help": "Encoding batch size of the round-trip filter."})
    synth_eval_split_size: float = field(
        default=0.1,
        metadata={
            "help": "Fraction of the passages whose queries are held out as a synthetic eval set (split by passage; "
            "the round-trip filter is not applied to them, so that the base model does not choose its own test)."
        },
    )
    synth_seed: int = field(default=42, metadata={"help": "Seed of the passage sample, ICT choices and the split."})


@dataclass
class LossArguments:
    """# Loss: the contrastive objective and its BGE-style temperature."""

    loss: Literal["mnrl", "cached_mnrl", "gist", "cached_gist", "m3_unified", "cached_m3_unified"] = field(
        default="cached_gist",
        metadata={
            "help": "'mnrl': MultipleNegativesRankingLoss (InfoNCE with in-batch negatives); 'gist': GISTEmbedLoss "
            "(a frozen guide model masks likely false negatives); 'm3_unified': BGE-M3's unified loss over its "
            "dense, sparse and ColBERT heads with self-distillation (m3_* fields); 'cached_*': the GradCache "
            "variants, whose activation memory does not grow with the batch, so large batches add in-batch negatives."
        },
    )
    temperature: float = field(
        default=0.02, metadata={"help": "Softmax temperature; BGE uses 0.02 (MNRL scale = 1 / temperature = 50)."}
    )
    mini_batch_size: int = field(default=32, metadata={"help": "Forward mini-batch of the cached losses."})
    guide_model_name_or_path: str | None = field(
        default=None, metadata={"help": "Guide model of the GIST losses; default: a frozen copy of the base model."}
    )
    gist_margin_strategy: Literal["absolute", "relative"] = field(
        default="absolute", metadata={"help": "How the guide's margin against the positive is measured."}
    )
    gist_margin: float = field(
        default=0.0, metadata={"help": "Mask in-batch candidates the guide scores above (positive - margin)."}
    )
    gist_contrast_anchors: bool = field(default=True, metadata={"help": "GIST: also contrast anchor vs anchor."})
    gist_contrast_positives: bool = field(default=True, metadata={"help": "GIST: also contrast positive vs positive."})
    gist_precompute_guide: bool = field(
        default=True,
        metadata={
            "help": "GIST: embed each distinct training input with the frozen guide once, before training (cached on "
            "disk like the corpus embeddings), instead of at every step; the loss is the same."
        },
    )
    gather_across_devices: bool | None = field(
        default=None,
        metadata={
            "help": "Share in-batch negatives across processes, so that N processes train as one on the global "
            "batch; default: on when more than one process runs."
        },
    )
    kd_loss: Literal["none", "kl_div", "m3_kd_loss", "distill_kl_div", "margin_mse"] = field(
        default="none",
        metadata={
            "help": "Distil a teacher's scores (FlagEmbedding data's pos_scores / neg_scores, e.g. from `st-bge data "
            "score`): 'kl_div' / 'm3_kd_loss' as FlagEmbedding defines them, added to the in-batch loss of mnrl, "
            "cached_mnrl, m3_unified or cached_m3_unified; 'distill_kl_div' / 'margin_mse': sentence-transformers' "
            "DistillKLDivLoss / MarginMSELoss (the row's own candidates only) in place of loss: mnrl."
        },
    )
    m3_heads: list[str] = field(
        default_factory=lambda: list(M3_HEADS),
        metadata={
            "help": "m3_unified: the heads trained together, any of dense sparse colbert; the others stay as loaded. "
            "With one head the loss is that head's InfoNCE."
        },
    )
    m3_freeze_encoder: bool = field(
        default=False,
        metadata={"help": "m3_unified: train the heads only, the encoder frozen (FlagEmbedding's fix_encoder)."},
    )
    m3_add_heads: bool = field(
        default=False,
        metadata={
            "help": "Give a model without BGE-M3 heads new (randomly initialised) sparse and ColBERT heads, so that "
            "m3_unified makes it a three-mode retriever."
        },
    )
    m3_colbert_dim: int | None = field(
        default=None,
        metadata={
            "help": "Width of a new ColBERT head (m3_add_heads); default: the hidden size, as BGE-M3's (vLLM "
            "serves only that)."
        },
    )
    m3_ensemble_weights: list[float] = field(
        default_factory=lambda: list(ENSEMBLE_WEIGHTS),
        metadata={"help": "m3_unified: weights of the dense, sparse and ColBERT scores in the ensemble score."},
    )
    m3_loss_weights: list[float] = field(
        default_factory=lambda: list(LOSS_WEIGHTS),
        metadata={
            "help": "m3_unified: weights of the dense, sparse and ColBERT InfoNCE terms and self-distillation terms "
            "(the ensemble's term has weight 1); BGE-M3: 1 0.1 1."
        },
    )
    m3_self_distill: bool = field(
        default=True,
        metadata={"help": "m3_unified: distil every head from the detached softmax of their ensemble score."},
    )
    m3_self_distill_start_step: int = field(
        default=0,
        metadata={
            "help": "m3_unified: first training step (0-based) with self-distillation. FlagEmbedding's "
            "self_distill_start_step s corresponds to s + 1 here (it distils once its step counter exceeds s)."
        },
    )
    m3_flagembedding_compatible: bool = field(
        default=False,
        metadata={
            "help": "m3_unified: FlagEmbedding 1.4's exact loss: only dense candidates gathered across processes, "
            "and a candidate's padding counts as ColBERT similarity 0. Default: every head's candidates gathered, "
            "padding ignored (as in inference)."
        },
    )


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
    eval_colbert_max_memory_mb: float = field(
        default=4096,
        metadata={
            "help": "ColBERT scores the whole corpus when its token vectors (float32) fit in this many MB, else it "
            "re-ranks each query's dense and sparse top-k (eval_top_k)."
        },
    )


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
    forgetting_dataset: str | None = field(
        default=None,
        metadata={
            "help": "A general-purpose retrieval set to check that fine-tuning did not cost general quality; "
            "reported beside the domain sets."
        },
    )
    forgetting_dataset_split: str = field(default="test", metadata={"help": "qrels split of forgetting_dataset."})
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


@dataclass
class CardArguments:
    """# Card and Hub: what the generated model card says; publishing uses the Trainer's `push_to_hub`,
    `hub_model_id`, `hub_private_repo` and `hub_revision` (one commit at the end, as `st-bge push` makes)."""

    language: list[str] | None = field(default=None, metadata={"help": "Language codes for the card, e.g. en zh."})
    license: str | None = field(
        default=None,
        metadata={
            "help": "License of the fine-tuned model, e.g. apache-2.0 (default: the base model's, from its card)."
        },
    )
    card_datasets: list[str] | None = field(
        default=None,
        metadata={
            "help": "Hub dataset ids for the card's `datasets:` metadata, e.g. google-research-datasets/mbpp "
            "(default: the training sources that are Hub datasets)."
        },
    )
    hub_variant: Literal["adapter", "merged", "both"] = field(
        default="adapter",
        metadata={"help": "With push_to_hub: push the LoRA adapter, the merged model, or both (see `st-bge push`)."},
    )
    card_include_examples: bool = field(
        default=False,
        metadata={
            "help": "Put training-text samples and widget examples in the model card. Off by default: training "
            "data is often private, and the card is public once pushed."
        },
    )


@dataclass
class PushArguments:
    """# Push: publish a training output folder to the Hub (`st-bge push`; a recipe's `push_to_hub` uses the
    Trainer's `hub_model_id`, `hub_private_repo` and `hub_revision` with these defaults)."""

    model_dir: str = field(
        metadata={"help": "The folder `st-bge train` wrote (adapter or full model).", "aliases": ["--model"]}
    )
    repo_id: str = field(metadata={"help": "Hub repository, 'user/name' or 'org/name'; created if missing."})
    variant: Literal["adapter", "merged", "both"] = field(
        default="adapter",
        metadata={
            "help": "'adapter': the LoRA adapter with the Sentence Transformers config (loads the base model from "
            "the Hub, needs peft); 'merged': the base model with the adapter merged in (no peft needed); 'both': "
            "the adapter on `revision` and the merged model on `merged_revision`."
        },
    )
    private: bool = field(default=False, metadata={"help": "Create the repository as private."})
    revision: str | None = field(
        default=None, metadata={"help": "Branch to push to (created from main if missing); default: main."}
    )
    merged_revision: str = field(default="merged", metadata={"help": "Branch of the merged model with variant both."})
    create_pr: bool = field(
        default=False, metadata={"help": "Open a pull request instead of committing to the branch."}
    )
    overwrite: bool = field(
        default=False,
        metadata={
            "help": "Replace a model already on the branch (its files are deleted in the same commit); without it, "
            "pushing onto a model is refused: use another --revision or --create_pr."
        },
    )
    base_model: str | None = field(
        default=None,
        metadata={
            "help": "Hub id of the base model, written into adapter_config.json in place of a local path; default: "
            "the one the training recipe named."
        },
    )
    commit_message: str | None = field(default=None, metadata={"help": "Commit message; default: a summary."})
    onnx: bool = field(
        default=False,
        metadata={"help": "Also export the merged model to ONNX (onnx/model.onnx) and int8 (onnx/model_qint8.onnx)."},
    )


@dataclass
class ExportArguments:
    """# Export: ONNX and int8 ONNX files of a model, checked against PyTorch (`st-bge export`)."""

    model_dir: str = field(
        metadata={"help": "A model folder (an adapter is merged into its base model first).", "aliases": ["--model"]}
    )
    output_dir: str = field(metadata={"help": "Where model.onnx, model_qint8.onnx and onnx_check.json go."})
    quantize: bool = field(default=True, metadata={"help": "Also write the dynamic int8 quantisation."})
    check_dataset: str | None = field(
        default=None,
        metadata={
            "help": "Texts to check the export on (a BEIR folder's corpus, or pairs/FlagEmbedding documents): cosine "
            "agreement with PyTorch and encoding speed of each file."
        },
    )
    batch_size: int = field(default=32, metadata={"help": "Encoding batch size of the check."})
    overwrite_output_dir: bool = field(default=False, metadata={"help": "Allow a non-empty output_dir."})


@dataclass
class ServeArguments:
    """# Serve: an OpenAI-compatible embeddings server for a trained model (`st-bge serve`, extra `st-bge[serve]`)."""

    model: str = field(
        metadata={
            "help": "What `st-bge train` wrote (adapter or full model, merged on load), a model folder or a Hub id.",
            "aliases": ["--model_dir"],
        }
    )
    host: str = field(default="127.0.0.1", metadata={"help": "Address to listen on (0.0.0.0: every interface)."})
    port: int = field(default=8000, metadata={"help": "Port to listen on."})
    served_model_name: str | None = field(
        default=None,
        metadata={
            "help": "The `model` requests name (default: the folder's name or the Hub id); NAME:query and "
            "NAME:document pick a side."
        },
    )
    backend: Literal["torch", "onnx"] = field(
        default="torch", metadata={"help": "torch, or onnx: the int8 file `st-bge export` writes (dense only)."}
    )
    onnx_file: str | None = field(
        default=None, metadata={"help": "The ONNX file of --backend onnx (default: <model>/onnx/model_qint8.onnx)."}
    )
    device: str | None = field(default=None, metadata={"help": "torch device (default: CUDA if there is one)."})
    default_input_type: Literal["query", "document"] = field(
        default="document",
        metadata={"help": "The side of a request that names none (`input_type`): its prompt is applied."},
    )
    truncatable: bool = field(
        default=False,
        metadata={"help": "The model was trained for truncated embeddings (Matryoshka): accept `dimensions`."},
    )
    max_inputs_per_request: int = field(default=2048, metadata={"help": "Most texts one request may carry."})
    max_input_tokens: int | None = field(
        default=None,
        metadata={
            "help": "Most tokens (prompt included) per text; longer ones are refused unless the request sets "
            "`truncate` (default: the model's max_seq_length)."
        },
    )
    batching: bool = field(
        default=True,
        metadata={
            "help": "Merge the texts of concurrent requests into shared forward passes (false: one forward "
            "pass per request)."
        },
    )
    max_batch_tokens: int = field(
        default=16384, metadata={"help": "Token budget of one forward pass: texts x longest text (padding included)."}
    )
    max_batch_size: int | None = field(
        default=None,
        metadata={
            "help": "Most texts in one forward pass (default: 8 on CPU, where larger passes were slower "
            "(benchmarks/HISTORY.md), 256 on a GPU)."
        },
    )
    batch_wait_ms: float = field(
        default=0.0,
        metadata={
            "help": "How long a forward pass waits for more texts once one is queued (0: run with what is "
            "queued; texts that arrive meanwhile join the next pass)."
        },
    )
    cache_size: int = field(
        default=10_000, metadata={"help": "Embeddings kept in the LRU cache, by (text, side, outputs); 0: none."}
    )
    graceful_shutdown_s: float = field(
        default=30.0, metadata={"help": "On SIGTERM/SIGINT, how long requests in flight may take to finish."}
    )


@dataclass
class EndpointCheckArguments:
    """# Endpoint check: does an OpenAI-compatible embeddings endpoint give the local model's vectors
    (`st-bge check-endpoint`)?"""

    base_url: str = field(metadata={"help": "The endpoint's OpenAI base URL, e.g. http://127.0.0.1:8000/v1."})
    model: str = field(
        metadata={
            "help": "The local model it should match: an st-bge output folder or a Hub id.",
            "aliases": ["--model_dir"],
        }
    )
    endpoint_model: str | None = field(
        default=None, metadata={"help": "The `model` to request (default: the first the endpoint lists)."}
    )
    check_dataset: str | None = field(
        default=None,
        metadata={
            "help": "Texts to compare (a BEIR folder, pairs or FlagEmbedding data: its queries and documents; "
            "default: a built-in sample in English, Chinese and Python)."
        },
    )
    max_texts: int = field(default=256, metadata={"help": "Most texts compared per side."})
    prompts: Literal["client", "server"] = field(
        default="client",
        metadata={
            "help": "client: send each text with its side's prompt prepended (what an endpoint that applies "
            "none needs: text-embeddings-inference, vLLM); server: send st-bge's `input_type`."
        },
    )
    api_key_env: str = field(
        default="OPENAI_API_KEY",
        metadata={"help": "Environment variable holding the endpoint's key, if it needs one."},
    )
    min_cosine: float = field(
        default=0.999, metadata={"help": "Lowest cosine to the local vector that passes (exit code 1 below it)."}
    )
    batch_size: int = field(default=32, metadata={"help": "Texts per request."})


@dataclass
class TrainingArguments(SentenceTransformerTrainingArguments):
    """# Training: every SentenceTransformerTrainingArguments field, with the defaults a BGE fine-tune wants."""

    output_dir: str = field(
        default="outputs/st-bge", metadata={"help": "Where the adapter or model, card and eval results are written."}
    )
    overwrite_output_dir: bool = field(
        default=False, metadata={"help": "Allow writing into an output_dir that already has files in it."}
    )
    resume_from_checkpoint: str | None = field(
        default=None,
        metadata={
            "help": "Continue a stopped run in its output_dir: 'auto' (or 'true') takes the last complete "
            "checkpoint-* folder there, or give a checkpoint folder. Weights, optimizer, scheduler, RNG states and "
            "the position in the data are restored, so the run ends as if it had not stopped."
        },
    )
    keep_checkpoints: bool = field(
        default=False,
        metadata={
            "help": "Keep the checkpoint-* folders (optimizer states included) after a run that finished; by default "
            "they are removed once the final model is saved, as only a stopped run needs them."
        },
    )
    # In-batch negatives are only negatives if they differ from the anchor's own positive.
    batch_sampler: str = field(
        default="no_duplicates",
        metadata={"help": "'no_duplicates' (default: no text twice in a batch), 'batch_sampler' or 'group_by_label'."},
    )
    max_tokens_per_batch: int | None = field(
        default=None,
        metadata={
            "help": "Length-aware batching, as BGE-M3 was trained: rows of similar length are batched together and "
            "a batch holds at most this many tokens (rows x longest row), so long documents get smaller batches "
            "(per_device_train_batch_size is the largest). Replaces batch_sampler; the padding saved is logged."
        },
    )


@dataclass
class Recipe:
    """All sections of one run. Built by `parse_recipe`."""

    model: ModelArguments
    data: DataArguments
    quality: QualityArguments
    mining: MiningArguments
    scoring: ScoringArguments
    synth: SynthArguments
    loss: LossArguments
    evaluation: EvaluationArguments
    card: CardArguments
    training: TrainingArguments
    # The keys the YAML and the flags set: the training section of the card lists these, not the ~100 defaults.
    given: frozenset[str] = frozenset()

    def to_dict(self) -> dict[str, dict[str, Any]]:
        """The settings that apply to this run, by section, as plain values (enums as their values): training
        arguments only where the recipe or flags set them, never secrets; mining, teacher scores, synthesis, the GIST
        guide and BGE-M3's settings only where the run uses them, so a plain MiniLM run does not list 40 unused keys."""
        names = ["model", "data", "quality", "evaluation", "card"]
        if self.mining.mine_hard_negatives:
            names.insert(names.index("quality"), "mining")
        if self.loss.kd_loss != "none":
            names.insert(names.index("quality"), "scoring")
        if any(f.name in self.given for f in fields(self.synth)):
            names.insert(names.index("quality"), "synth")
        names.insert(names.index("evaluation"), "loss")
        sections = {name: _plain(vars(getattr(self, name))) for name in names}
        sections["loss"] = {key: value for key, value in sections["loss"].items() if self._loss_uses(key)}
        sections["training"] = {
            f.name: _plain(getattr(self.training, f.name))
            for f in fields(self.training)
            if f.name in self.given and f.name not in SECRET_FIELDS | RUN_CONTROL_FIELDS
        }
        return sections

    def changed_settings(self) -> dict[str, dict[str, Any]]:
        """The settings of `to_dict` that differ from st-bge's defaults (training arguments: those the recipe or flags
        set), as sentence-transformers' cards list "non-default hyperparameters"."""
        defaults = {f.name: _default(f) for section in SECTIONS[:-1] for f in fields(section)}
        changed = {
            name: {key: value for key, value in values.items() if name == "training" or value != defaults.get(key)}
            for name, values in self.to_dict().items()
        }
        return {name: values for name, values in changed.items() if values}

    def _loss_uses(self, key: str) -> bool:
        loss = self.loss
        if key.startswith("m3_"):
            return loss.loss in ("m3_unified", "cached_m3_unified") or loss.m3_add_heads
        if key.startswith("gist_") or key == "guide_model_name_or_path":
            return "gist" in loss.loss
        if key == "mini_batch_size":
            return loss.loss.startswith("cached_")
        return True


def _plain(value: Any) -> Any:
    """Enums as their values (`IntervalStrategy.EPOCH` -> 'epoch'), recursively: what a card or JSON should show."""
    if isinstance(value, dict):
        return {key: _plain(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_plain(item) for item in value]
    return value.value if isinstance(value, Enum) else value


def _default(f: Any) -> Any:
    return f.default_factory() if f.default_factory is not MISSING else f.default


SECTIONS = (
    ModelArguments,
    DataArguments,
    QualityArguments,
    MiningArguments,
    ScoringArguments,
    SynthArguments,
    LossArguments,
    EvaluationArguments,
    CardArguments,
    TrainingArguments,
)


@dataclass
class EvalRecipe:
    """The sections of one evaluation run. Built by `parse_eval_recipe`."""

    run: EvalRunArguments
    evaluation: EvaluationArguments


EVAL_SECTIONS = (EvalRunArguments, EvaluationArguments)


class HelpFormatter(argparse.HelpFormatter):
    """`--help` as a field's own text, with its default said once: argparse's `ArgumentDefaultsHelpFormatter`
    appends "(default: None)" after texts that already explain their default, and %-expands the text, so a
    literal "10%" in a help text crashed every help page."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = (action.help or "").replace("%", "%%")
        if (
            action.default in (None, argparse.SUPPRESS)
            or action.required
            or isinstance(action, argparse._StoreFalseAction)  # its default is its twin's
            or "default" in text.lower()
        ):
            return text
        return f"{text} (default: %(default)s)"


class RecipeParser(HfArgumentParser):
    """`HfArgumentParser` over the recipe sections, with trl-style `--config recipe.yaml` defaults.

    `prog` and `usage` are what `--help` and errors show (e.g. "st-bge push" and "st-bge push MODEL_DIR ...");
    a bad flag or value is a `ConfigError` of one line pointing to `--help`, not a page of usage.
    """

    def __init__(
        self,
        sections: Sequence[type] = SECTIONS,
        optional: Sequence[str] = (),
        *,
        prog: str | None = None,
        usage: str | None = None,
    ) -> None:
        super().__init__(
            sections,
            prog=prog,
            usage=usage,
            description="A YAML file of fields (--config FILE, or RECIPE.yaml in the usage line) gives their values; "
            "a flag overrides one, and `--field null` unsets it.",
            formatter_class=HelpFormatter,
        )
        self.given_keys: set[str] = set()  # what the last parse set explicitly (YAML keys and flags)
        for action in self._actions:
            field_type = _field_type(sections, action.dest)
            if field_type == "dict":
                action.type = _json_mapping(action.dest)
            if action.type is not None and field_type is not None and "None" in field_type:
                action.type = _nullable(action.type)  # `--field null` unsets what the YAML set
            if action.dest in optional:  # a field some commands can do without (then None)
                action.required = False
                action.default = None
            if isinstance(action, argparse._StoreFalseAction):  # HfArgumentParser's `--no_<field>` twin
                action.help = f"Same as --{action.dest} false."

    def error(self, message: str) -> NoReturn:
        raise ConfigError(f"{message} (`{self.prog} --help` lists every field)")

    def parse_sections(self, argv: Argv = None) -> list[Any]:
        """Parse `--config FILE` (optional) and flags into one instance per section; a lone path is the recipe.

        Raises:
            ConfigError: an unknown key in the YAML or on the command line, or a value of the wrong type.
        """
        if isinstance(argv, (str, os.PathLike)):
            argv = ["--config", os.fspath(argv)]
        argv = list(sys.argv[1:] if argv is None else argv)
        self.given_keys = {item[2:].split("=")[0].removeprefix("no_") for item in argv if item.startswith("--")}
        if "--config" in argv:
            index = argv.index("--config")
            if index + 1 >= len(argv):
                raise ConfigError("--config needs a path to a recipe YAML file")
            path = Path(argv[index + 1])
            del argv[index : index + 2]
            self._set_yaml_defaults(path)
        *sections, unknown = self.parse_args_into_dataclasses(args=argv, return_remaining_strings=True)
        if unknown:
            flag = next((item for item in unknown if item.startswith("--")), unknown[0])
            raise ConfigError(f"unknown command-line argument {flag!r}{self._suggest(flag.lstrip('-'))}")
        return sections

    def _set_yaml_defaults(self, path: Path) -> None:
        if not path.is_file():
            raise ConfigError(f"{path}: recipe file not found")
        text = path.read_text(encoding="utf-8")
        try:
            config = yaml.safe_load(text) or {}
            lines = {key.value: key.start_mark.line + 1 for key, _ in yaml.compose(text).value} if config else {}
        except yaml.YAMLError as error:
            raise ConfigError(f"{path}: not valid YAML: {error}") from None
        if not isinstance(config, dict):
            raise ConfigError(f"{path}: a recipe is a mapping of keys to values, got {type(config).__name__}")
        # The first action of a dest is the one with its type and choices; a True-default bool also has a
        # `--no_<field>` action after it.
        actions: dict[str, Any] = {}
        for action in self._actions:
            actions.setdefault(action.dest, action)
        for key, value in config.items():
            where = f"{path}, line {lines.get(key, '?')}"
            action = actions.get(key)
            if action is None or key == "help":
                raise ConfigError(f"{where}: unknown key '{key}'{self._suggest(key)}")
            if isinstance(value, str) and action.type is not None:
                try:
                    action.type(value)
                except (TypeError, ValueError) as error:
                    raise ConfigError(f"{where}: key '{key}': invalid value {value!r} ({error})") from None
            if action.choices is not None and value not in action.choices:
                raise ConfigError(f"{where}: key '{key}': {value!r} is not one of {list(action.choices)}")
            action.required = False
        # set_defaults reaches every action of a dest (e.g. `--no_<field>` too), so a YAML `false` sticks.
        self.set_defaults(**config)
        self.given_keys |= set(config)

    def _suggest(self, key: str) -> str:
        return did_you_mean(key, (action.dest for action in self._actions if action.dest != "help"))


def _field_type(sections: Sequence[type], name: str) -> str | None:
    """A field's annotation as written ("dict" for mappings): `HfArgumentParser` overwrites `Field.type` with what
    it parses (`str | None` becomes `str`), so the annotations are read from the class."""
    for section in sections:
        hints = typing.get_type_hints(section)
        if name in hints:
            return "dict" if str(hints[name]).startswith("dict") else str(hints[name])
    return None


def _nullable(parse: Callable[[str], Any]) -> Callable[[str], Any]:
    """`parse`, with the YAML spelling `null` for None: `--dataset_name_or_path null` unsets a recipe's value."""

    def parse_or_none(value: str) -> Any:
        return None if value == "null" else parse(value)

    parse_or_none.__name__ = getattr(parse, "__name__", "value")
    return parse_or_none


def _json_mapping(name: str):
    def parse(value: str) -> dict[str, str]:
        try:
            mapping = json.loads(value)
        except json.JSONDecodeError as error:
            raise ValueError(f"{name} must be a JSON object: {error}") from None
        if not isinstance(mapping, dict):
            raise ValueError(f"{name} must be a JSON object, got {value!r}")
        return mapping

    parse.__name__ = "JSON object"
    return parse


def check_output_dir(output_dir: str | Path, *, overwrite: bool) -> None:
    """Refuse to write into a folder that already holds files unless `overwrite`: nothing the user had is lost.

    Raises:
        ConfigError: `output_dir` is a file, or a non-empty folder and `overwrite` is false.
    """
    output_dir = Path(output_dir)
    if output_dir.is_file():
        raise ConfigError(f"output_dir '{output_dir}' is a file")
    if output_dir.is_dir() and not overwrite and any(p.name not in PRE_TRAINING_FILES for p in output_dir.iterdir()):
        raise ConfigError(
            f"output_dir '{output_dir}' already has files; choose another output_dir or pass "
            "--overwrite_output_dir true to write over them"
        )


def _validate_evaluation(evaluation: EvaluationArguments) -> None:
    if evaluation.eval_primary_metric not in evaluation.eval_metrics:
        raise ConfigError(
            f"eval_primary_metric '{evaluation.eval_primary_metric}' must be one of eval_metrics "
            f"{evaluation.eval_metrics}"
        )
    unknown = [mode for mode in evaluation.eval_modes or [] if mode not in RETRIEVAL_MODES]
    if unknown:
        raise ConfigError(f"eval_modes: unknown mode(s) {unknown}; choose among {list(RETRIEVAL_MODES)}")
    weights = evaluation.eval_hybrid_weights
    if len(weights) != 3 or any(weight < 0 for weight in weights):
        raise ConfigError(
            f"eval_hybrid_weights: three non-negative weights (dense, sparse, colbert) are needed, got {weights}"
        )


def validate(recipe: Recipe) -> None:
    """Cross-field checks that no single field's type can express."""
    data, loss = recipe.data, recipe.loss
    _validate_evaluation(recipe.evaluation)
    if not 0.0 <= data.eval_split_size < 1.0:
        raise ConfigError(f"eval_split_size must be in [0, 1), got {data.eval_split_size}")
    if loss.temperature <= 0:
        raise ConfigError(f"temperature must be positive, got {loss.temperature}")
    flagembedding_kd = ("mnrl", "cached_mnrl", "m3_unified", "cached_m3_unified")
    if loss.kd_loss in ("kl_div", "m3_kd_loss") and loss.loss not in flagembedding_kd:
        raise ConfigError(
            f"kd_loss '{loss.kd_loss}' is added to an in-batch loss: use loss {' / '.join(flagembedding_kd)}"
        )
    if loss.kd_loss in ("distill_kl_div", "margin_mse") and loss.loss != "mnrl":
        raise ConfigError(
            f"kd_loss '{loss.kd_loss}' is a loss of its own, in place of the in-batch one: set loss: mnrl"
        )
    unknown_heads = sorted(set(loss.m3_heads) - set(M3_HEADS))
    if unknown_heads or not loss.m3_heads:
        raise ConfigError(f"m3_heads: {loss.m3_heads} is not a subset of {list(M3_HEADS)}")
    for name in ("m3_ensemble_weights", "m3_loss_weights"):
        weights = getattr(loss, name)
        if len(weights) != 3 or any(weight < 0 for weight in weights):
            raise ConfigError(f"{name}: three non-negative weights (dense, sparse, colbert) are needed, got {weights}")
    if loss.m3_freeze_encoder and recipe.model.use_lora:
        raise ConfigError("m3_freeze_encoder trains the heads only: it cannot be combined with use_lora")
    if recipe.training.hub_token is not None:
        raise ConfigError(
            "hub_token does not belong in a recipe or on the command line (it would end up in files and shell "
            "history): set the HF_TOKEN environment variable or run `hf auth login`"
        )
    if recipe.training.push_to_hub and not recipe.training.hub_model_id:
        raise ConfigError("push_to_hub needs hub_model_id, the Hub repository to push to (e.g. user/my-bge)")
    if data.dataset_mixture is not None and not all(
        isinstance(weight, (int, float)) and weight > 0 for weight in data.dataset_mixture.values()
    ):
        raise ConfigError(f"dataset_mixture weights must be positive numbers, got {data.dataset_mixture}")
    if data.column_mapping is not None and data.dataset_format not in ("auto", "pairs"):
        raise ConfigError(f"column_mapping applies to 'pairs' data, not dataset_format '{data.dataset_format}'")


def validate_synth(recipe: Recipe) -> None:
    """The checks of `st-bge data synth`, which needs a corpus but no training data (it writes them)."""
    synth = recipe.synth
    if synth.synth_corpus is None:
        raise ConfigError(
            "st-bge data synth needs the passages: st-bge data synth <corpus>, or synth_corpus in the recipe"
        )
    if synth.synth_generator == "openai" and not synth.synth_model:
        raise ConfigError("synth_generator 'openai' needs synth_model, the chat model the endpoint serves")
    if synth.synth_round_trip and not (synth.synth_filter_model or recipe.model.model_name_or_path):
        raise ConfigError(
            "the round-trip filter needs a retriever: set model_name_or_path (the base model) or synth_filter_model, "
            "or turn the filter off with --synth_round_trip false"
        )
    at_least = {
        "synth_queries_per_passage": 1,
        "synth_concurrency": 1,
        "synth_max_retries": 0,
        "synth_max_failures": 1,
        "synth_filter_top_k": 1,
        "synth_batch_size": 1,
        "synth_max_tokens": 1,
        "synth_min_query_chars": 1,
    }
    for name, lowest in at_least.items():
        if getattr(synth, name) < lowest:
            raise ConfigError(f"{name} must be at least {lowest}, got {getattr(synth, name)}")
    if synth.synth_max_passages is not None and synth.synth_max_passages < 1:
        raise ConfigError(f"synth_max_passages must be at least 1, got {synth.synth_max_passages}")
    if synth.synth_max_query_chars < synth.synth_min_query_chars:
        raise ConfigError("synth_max_query_chars must not be below synth_min_query_chars")
    if synth.synth_filter_cross_encoder and synth.synth_filter_candidates < synth.synth_filter_top_k:
        raise ConfigError("synth_filter_candidates must be at least synth_filter_top_k")
    for name in ("synth_eval_split_size", "synth_ict_keep_sentence"):
        if not 0.0 <= getattr(synth, name) < 1.0:
            raise ConfigError(f"{name} must be in [0, 1), got {getattr(synth, name)}")
    if synth.synth_timeout <= 0 or synth.synth_retry_delay < 0:
        raise ConfigError("synth_timeout must be positive and synth_retry_delay not negative")


def parse_recipe(
    argv: Argv = None,
    *,
    optional: Sequence[str] = (),
    check: Callable[[Recipe], None] = validate,
    prog: str | None = None,
    usage: str | None = None,
) -> Recipe:
    """Parse a training recipe the way `recipes/train.py` and `st-bge train` do: command-line words, or the path of
    a recipe (`parse_recipe("recipes/quickstart.yaml")`). Fields in `optional` may be left out (None); `check` runs
    the cross-field checks; `prog` and `usage` are what `--help` and errors call the command."""
    parser = RecipeParser(SECTIONS, optional=optional, prog=prog, usage=usage)
    sections = parser.parse_sections(argv)
    recipe = Recipe(*sections, given=frozenset(parser.given_keys))
    check(recipe)
    return recipe


def parse_data_recipe(argv: Argv = None, *, prog: str | None = None, usage: str | None = None) -> Recipe:
    """Parse a training recipe (or flags) for `st-bge data check|mine|score`, where the model is optional."""
    return parse_recipe(argv, optional=("model_name_or_path",), prog=prog, usage=usage)


def parse_synth_recipe(argv: Argv = None, *, prog: str | None = None, usage: str | None = None) -> Recipe:
    """Parse a recipe (or flags) for `st-bge data synth`: the corpus is needed, the training data are not (they are
    what it writes), and the model only as the round-trip retriever."""
    return parse_recipe(argv, optional=("model_name_or_path",), check=validate_synth, prog=prog, usage=usage)


SectionT = TypeVar("SectionT")


def _parse_section(section: type[SectionT], argv: Argv, prog: str | None, usage: str | None) -> SectionT:
    """Flags (or a YAML of them) as one section: the arguments of a subcommand that is not a recipe."""
    (parsed,) = RecipeParser((section,), prog=prog, usage=usage).parse_sections(argv)
    return parsed


def parse_push_arguments(argv: Argv = None, *, prog: str | None = None, usage: str | None = None) -> PushArguments:
    """Parse `st-bge push` flags (or a YAML of them)."""
    return _parse_section(PushArguments, argv, prog, usage)


def parse_export_arguments(argv: Argv = None, *, prog: str | None = None, usage: str | None = None) -> ExportArguments:
    """Parse `st-bge export` flags (or a YAML of them)."""
    return _parse_section(ExportArguments, argv, prog, usage)


def parse_serve_arguments(argv: Argv = None, *, prog: str | None = None, usage: str | None = None) -> ServeArguments:
    """Parse `st-bge serve` flags (or a YAML of them)."""
    return _parse_section(ServeArguments, argv, prog, usage)


def parse_endpoint_check_arguments(
    argv: Argv = None, *, prog: str | None = None, usage: str | None = None
) -> EndpointCheckArguments:
    """Parse `st-bge check-endpoint` flags (or a YAML of them)."""
    return _parse_section(EndpointCheckArguments, argv, prog, usage)


def parse_eval_recipe(argv: Argv = None, *, prog: str | None = None, usage: str | None = None) -> EvalRecipe:
    """Parse an evaluation recipe the way `recipes/evaluate.py` and `st-bge eval` do."""
    recipe = EvalRecipe(*RecipeParser(EVAL_SECTIONS, prog=prog, usage=usage).parse_sections(argv))
    _validate_evaluation(recipe.evaluation)
    unknown_tests = sorted(set(recipe.run.stat_tests) - {"student", "fisher"})
    if unknown_tests:
        raise ConfigError(f"stat_tests: unknown test(s) {unknown_tests}; use student and/or fisher")
    return recipe
