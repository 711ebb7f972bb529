"""A training recipe: every section of one run, the cross-section checks, and the functions that parse it.

A recipe is one flat YAML file (like alignment-handbook's) whose keys are the fields of the sections (one module
each in this package) plus every `SentenceTransformerTrainingArguments` field. The YAML gives defaults, command-line
flags override them, and a key that no section knows is an error naming the key, the file and the line, with the
closest valid key as a suggestion. `metadata["help"]` of every field is what `--help` prints.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import MISSING, dataclass, fields
from enum import Enum
from typing import Any

from st_bge.config.card import CardArguments
from st_bge.config.data import DataArguments, MiningArguments, QualityArguments, ScoringArguments
from st_bge.config.evaluation import EvaluationArguments
from st_bge.config.loss import LossArguments
from st_bge.config.model import ModelArguments
from st_bge.config.parser import Argv, RecipeParser
from st_bge.config.synthesis import SynthArguments
from st_bge.config.training import StBgeTrainingArguments
from st_bge.errors import ConfigError

SECRET_FIELDS = frozenset({"hub_token"})
# How a run was started, not how the model was trained: left out of the recipe in the card.
RUN_CONTROL_FIELDS = frozenset({"resume_from_checkpoint", "overwrite_output_dir"})


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
    training: StBgeTrainingArguments
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
        sections["loss"] = {key: value for key, value in sections["loss"].items() if self.loss.uses(key)}
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
    StBgeTrainingArguments,
)


def validate(recipe: Recipe) -> None:
    """Each training section's own checks, then those across sections."""
    for section in (recipe.data, recipe.loss, recipe.evaluation, recipe.training):
        section.validate()
    if recipe.loss.m3_freeze_encoder and recipe.model.use_lora:
        raise ConfigError("m3_freeze_encoder trains the heads only: it cannot be combined with use_lora")
    weight = recipe.model.merge_with_base
    if weight is not None and not (math.isfinite(weight) and weight >= 0):
        raise ConfigError(f"merge_with_base: {weight} is not a weight >= 0 (0: the base model, 1: the fine-tune)")


def validate_synth(recipe: Recipe) -> None:
    """The checks of `st-bge data synth`: its own section's, and a retriever for the round-trip filter."""
    synth = recipe.synth
    synth.validate()
    if synth.synth_round_trip and not (synth.synth_filter_model or recipe.model.model_name_or_path):
        raise ConfigError(
            "the round-trip filter needs a retriever: set model_name_or_path (the base model) or synth_filter_model, "
            "or turn the filter off with --synth_round_trip false"
        )


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
