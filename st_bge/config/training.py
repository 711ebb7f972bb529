"""# Training: every `SentenceTransformerTrainingArguments` field, with the defaults a BGE fine-tune wants."""

from __future__ import annotations

from dataclasses import dataclass, field

from sentence_transformers import SentenceTransformerTrainingArguments

from st_bge.errors import ConfigError


@dataclass
class StBgeTrainingArguments(SentenceTransformerTrainingArguments):
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

    def validate(self) -> None:
        """Raises:
        ConfigError: a Hub token in the recipe or on the command line, or push_to_hub without hub_model_id.
        """
        if self.hub_token is not None:
            raise ConfigError(
                "hub_token does not belong in a recipe or on the command line (it would end up in files and shell "
                "history): set the HF_TOKEN environment variable or run `hf auth login`"
            )
        if self.push_to_hub and not self.hub_model_id:
            raise ConfigError("push_to_hub needs hub_model_id, the Hub repository to push to (e.g. user/my-bge)")
