"""`st-bge data check`, `st-bge data mine` and `st-bge data score`: the data stage of a training recipe, on its own.

Both read the data exactly as `st-bge train` would (same recipe, same flags) and go through the same
`prepare_data`, so a clean `data check` means training starts on the same rows.
"""

from __future__ import annotations

from pathlib import Path

from st_bge.config import Recipe, check_output_dir
from st_bge.data import load_training_data, source_names
from st_bge.data.preparation import PreparedData, prepare_data
from st_bge.errors import ConfigError


def check_data(recipe: Recipe) -> list[str]:
    """Print the quality report of the recipe's data (mined first if the recipe mines); return the verdicts.

    The model, if the recipe names one, gives the token lengths and the truncation share; `data_check: off` in a
    training recipe does not silence an explicit check.
    """
    if recipe.quality.data_check == "off":
        recipe.quality.data_check = "warn"
    prepared = _prepare(recipe, mine=recipe.mining.mine_hard_negatives)
    print(prepared.to_markdown())
    return [report.verdict for report in prepared.quality.values()]


def mine_data(recipe: Recipe) -> Path:
    """Mine hard negatives for the recipe's training rows; write `<source>.jsonl` per source and the reports.

    Raises:
        ConfigError: no model is named, or `mine_output_dir` already has files (without --overwrite_output_dir).
    """
    if recipe.model.model_name_or_path is None:
        raise ConfigError("st-bge data mine needs the model that mines: set model_name_or_path")
    output_dir = Path(recipe.mining.mine_output_dir)
    check_output_dir(output_dir, overwrite=recipe.training.overwrite_output_dir)
    prepared = _prepare(recipe, mine=True)
    output_dir.mkdir(parents=True, exist_ok=True)
    names = source_names(list(prepared.data.train_sets))
    for source, rows in prepared.data.train_sets.items():
        rows.to_json(output_dir / f"{names[source]}.jsonl", lines=True, force_ascii=False)
    prepared.save(output_dir)
    print(prepared.to_markdown())
    files = ", ".join(f"{name}.jsonl" for name in names.values())
    print(f"\nWritten to {output_dir}: {files} (train on it with dataset_name_or_path), mining and quality reports")
    return output_dir


def score_data(recipe: Recipe) -> Path:
    """Score the recipe's training rows with a teacher cross-encoder; write FlagEmbedding lines with `pos_scores` /
    `neg_scores` per source (train on them with `kd_loss`) and `score_report.json`.

    Raises:
        ConfigError: no teacher is named, or `score_output_dir` already has files (without --overwrite_output_dir).
    """
    from st_bge.data.scoring import load_teacher, score_rows, write_scored
    from st_bge.markdown import markdown_table

    output_dir = Path(recipe.scoring.score_output_dir)
    check_output_dir(output_dir, overwrite=recipe.training.overwrite_output_dir)
    teacher = load_teacher(recipe.scoring)
    data = load_training_data(recipe.data)
    names = source_names(list(data.train_sets))
    scored = {source: score_rows(rows, teacher, recipe.scoring) for source, rows in data.train_sets.items()}
    paths, summaries = write_scored(scored, output_dir, names)
    keys = list(next(iter(summaries.values())))
    print(
        markdown_table(
            ["Source", *keys], [[name, *(summary.get(k, "") for k in keys)] for name, summary in summaries.items()]
        )
    )
    print(
        f"\nWritten to {output_dir}: {', '.join(p.name for p in paths)} (train on it with kd_loss), score_report.json"
    )
    return output_dir


def _prepare(recipe: Recipe, *, mine: bool) -> PreparedData:
    from st_bge.modeling import load_model

    data = load_training_data(recipe.data)
    model = load_model(recipe.model) if recipe.model.model_name_or_path else None
    return prepare_data(data, model, recipe.mining, recipe.quality, mine=mine)
