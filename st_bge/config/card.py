"""# Card and Hub: what the generated model card says."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal


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
