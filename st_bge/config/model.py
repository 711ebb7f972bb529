"""# Model: which encoder to fine-tune and how (full or LoRA)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal


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
    merge_with_base: float | None = field(
        default=None,
        metadata={
            "help": "After training, keep base + w * (fine-tuned - base) with this w (0: the base, 1: the fine-tune; "
            "LoRA: the adapter scaled exactly): less of the domain gain for less change elsewhere. The output is the "
            "merged model, evaluated beside base and fine-tuned; the fine-tune as trained goes to "
            "<output_dir>/fine-tuned, for `st-bge merge` to dial again."
        },
    )
