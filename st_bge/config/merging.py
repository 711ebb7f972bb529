"""# Merge: a fine-tune interpolated with its base model, or several fine-tunes of one base summed (`st-bge merge`)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from st_bge.config.parser import Argv, parse_section
from st_bge.errors import ConfigError


@dataclass
class MergeArguments:
    """# Merge: `base + sum_i weight_i * (fine-tuned_i - base)`, written as an st-bge output folder (`st-bge merge`).

    One fine-tune at weight w is the dial between the base (0) and the fine-tune (1); several are task arithmetic,
    as LM-Cocktail and LoRA-hub combine them.
    """

    model_dirs: list[str] = field(
        metadata={
            "help": "Output folders of `st-bge train` (LoRA adapters or full fine-tunes of one base model).",
            "aliases": ["--model_dir", "--models"],
        }
    )
    weights: list[float] = field(
        metadata={
            "help": "One weight per model_dir: how much of its change from the base to keep (0: the base, 1: the "
            "fine-tune as trained).",
            "aliases": ["--weight"],
        }
    )
    output_dir: str = field(metadata={"help": "Where the merged model goes (a new or empty folder)."})
    base_model: str | None = field(
        default=None,
        metadata={
            "help": "The base model the fine-tunes started from (Hub id or folder); default: the one an adapter's "
            "adapter_config.json names, else the training recipe's model_name_or_path."
        },
    )
    overwrite_output_dir: bool = field(default=False, metadata={"help": "Allow a non-empty output_dir."})

    def validate(self) -> None:
        """Raises:
        ConfigError: the weights do not pair with the folders, or one is not a finite number.
        """
        if len(self.weights) != len(self.model_dirs):
            raise ConfigError(
                f"weights: {len(self.weights)} given for {len(self.model_dirs)} model_dirs; give one per folder"
            )
        bad = [weight for weight in self.weights if not math.isfinite(weight)]
        if bad:
            raise ConfigError(f"weights: {bad[0]} is not a finite number")


def parse_merge_arguments(argv: Argv = None, *, prog: str | None = None, usage: str | None = None) -> MergeArguments:
    """Parse and check `st-bge merge` flags (or a YAML of them)."""
    arguments = parse_section(MergeArguments, argv, prog, usage)
    arguments.validate()
    return arguments
