"""Recipes and command arguments: one module per section, each validating itself (`validate()`), the parser in
`parser`, a training recipe and its cross-section checks in `recipe`. The names below are the package's face."""

from st_bge.config.card import CardArguments
from st_bge.config.data import DataArguments, MiningArguments, QualityArguments, ScoringArguments
from st_bge.config.evaluation import (
    EVAL_SECTIONS,
    EvalRecipe,
    EvalRunArguments,
    EvaluationArguments,
    parse_eval_recipe,
)
from st_bge.config.loss import LOSSES, LossArguments, LossKind
from st_bge.config.merging import MergeArguments, parse_merge_arguments
from st_bge.config.model import ModelArguments
from st_bge.config.parser import Argv, RecipeParser
from st_bge.config.publishing import ExportArguments, PushArguments, parse_export_arguments, parse_push_arguments
from st_bge.config.recipe import SECTIONS, Recipe, parse_data_recipe, parse_recipe, parse_synth_recipe
from st_bge.config.serving import (
    EndpointCheckArguments,
    ServeArguments,
    parse_endpoint_check_arguments,
    parse_serve_arguments,
)
from st_bge.config.synthesis import SynthArguments
from st_bge.config.training import StBgeTrainingArguments

__all__ = [
    "EVAL_SECTIONS",
    "LOSSES",
    "SECTIONS",
    "Argv",
    "CardArguments",
    "DataArguments",
    "EndpointCheckArguments",
    "EvalRecipe",
    "EvalRunArguments",
    "EvaluationArguments",
    "ExportArguments",
    "LossArguments",
    "LossKind",
    "MergeArguments",
    "MiningArguments",
    "ModelArguments",
    "PushArguments",
    "QualityArguments",
    "Recipe",
    "RecipeParser",
    "ScoringArguments",
    "ServeArguments",
    "StBgeTrainingArguments",
    "SynthArguments",
    "parse_data_recipe",
    "parse_endpoint_check_arguments",
    "parse_eval_recipe",
    "parse_export_arguments",
    "parse_merge_arguments",
    "parse_push_arguments",
    "parse_recipe",
    "parse_serve_arguments",
    "parse_synth_recipe",
]
