"""# Synthesis: training queries written for a corpus that has none (`st-bge data synth`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from st_bge.errors import ConfigError


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

    def validate(self) -> None:
        """The checks of `st-bge data synth`, which needs a corpus but no training data (it writes them).

        Raises:
            ConfigError: no corpus, a generator without what it needs, or a count or share out of range.
        """
        if self.synth_corpus is None:
            raise ConfigError(
                "st-bge data synth needs the passages: st-bge data synth <corpus>, or synth_corpus in the recipe"
            )
        if self.synth_generator == "openai" and not self.synth_model:
            raise ConfigError("synth_generator 'openai' needs synth_model, the chat model the endpoint serves")
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
            if getattr(self, name) < lowest:
                raise ConfigError(f"{name} must be at least {lowest}, got {getattr(self, name)}")
        if self.synth_max_passages is not None and self.synth_max_passages < 1:
            raise ConfigError(f"synth_max_passages must be at least 1, got {self.synth_max_passages}")
        if self.synth_max_query_chars < self.synth_min_query_chars:
            raise ConfigError("synth_max_query_chars must not be below synth_min_query_chars")
        if self.synth_filter_cross_encoder and self.synth_filter_candidates < self.synth_filter_top_k:
            raise ConfigError("synth_filter_candidates must be at least synth_filter_top_k")
        for name in ("synth_eval_split_size", "synth_ict_keep_sentence"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise ConfigError(f"{name} must be in [0, 1), got {getattr(self, name)}")
        if self.synth_timeout <= 0 or self.synth_retry_delay < 0:
            raise ConfigError("synth_timeout must be positive and synth_retry_delay not negative")
