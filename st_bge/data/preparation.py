"""Between reading the data and the first training step: hard-negative mining, then the quality and leakage report.

`st-bge train` and `check_data` / `mine` (`st-bge data check|mine`) share this one path, so that what `data check` reports is exactly
what training will see. Mining comes first, so the report also judges the mined negatives (a negative identical
to its positive is a false negative, whoever produced it). Every source of a mixture is mined and checked on its
own, against the one evaluation set.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

from sentence_transformers import SentenceTransformer

from st_bge.config import MiningArguments, QualityArguments, Recipe
from st_bge.data import TrainingData, load_training_data, source_names
from st_bge.data.formats import SCORES_COLUMN
from st_bge.data.mining import MiningResult, mine_negatives
from st_bge.data.quality import QualityReport, check_quality
from st_bge.errors import ConfigError, DataError
from st_bge.storage import DATA_QUALITY_MARKDOWN, DATA_REPORTS_FOLDER, check_output_dir

logger = logging.getLogger(__name__)


@dataclass
class PreparedData:
    """The training data as it will be trained on, with the report of each source and, if mined, the mining."""

    data: TrainingData
    quality: dict[str, QualityReport] = field(default_factory=dict)
    mining: dict[str, MiningResult] = field(default_factory=dict)

    def report_dir(self, output_dir: str | Path, name: str) -> Path:
        """Where the reports of source `name` go: `output_dir` itself, or `data_reports/<name>` in a mixture."""
        return Path(output_dir) if len(self.data.train_sets) == 1 else Path(output_dir) / DATA_REPORTS_FOLDER / name

    def report_path(self, output_dir: str | Path, name: str) -> Path:
        """The quality report of source `name`, as `save` writes it."""
        return self.report_dir(output_dir, name) / DATA_QUALITY_MARKDOWN

    def save(self, output_dir: str | Path) -> None:
        """Reports beside the model: `data_quality.{json,md}` and `mining_report.json` (+ the dropped sample),
        in a subfolder per source for a mixture. These hold text samples: they stay local, never in the card."""
        for name in self.data.train_sets:
            folder = self.report_dir(output_dir, name)
            if name in self.quality:
                self.quality[name].save(folder)
            if name in self.mining:
                self.mining[name].save(folder)

    def summary(self) -> dict[str, object]:
        """The data summary plus mining counts and report verdicts: numbers only, safe for a public card."""
        summary = self.data.summary()
        if self.mining:
            summary["hard_negative_mining"] = {name: result.counts for name, result in self.mining.items()}
        if self.quality:
            summary["data_check"] = {name: report.verdict for name, report in self.quality.items()}
            summary["token_lengths"] = {
                name: {group: {"p50": t.p50, "p90": t.p90, "max": t.max} for group, t in report.token_lengths.items()}
                for name, report in self.quality.items()
                if report.token_lengths
            }
        return summary

    def to_markdown(self) -> str:
        """Every report, one after the other, for the terminal."""
        parts = [f"# Hard-negative mining: {name}\n\n{result.to_markdown()}" for name, result in self.mining.items()]
        parts += [report.to_markdown() for report in self.quality.values()]
        return "\n\n".join(parts)


def prepare_data(
    data: TrainingData,
    model: SentenceTransformer | None,
    mining: MiningArguments,
    quality: QualityArguments,
    *,
    mine: bool,
    language: list[str] | None = None,
) -> PreparedData:
    """Mine hard negatives (if `mine`) with `model`, replacing `data.train` with the mined rows, then check every
    source; the verdict is enforced by `enforce_verdict`, so that `st-bge data check` can report a 'fail' too.

    Raises:
        DataError: `eval_overlap: refuse` and training queries or positives are also in the evaluation set.
    """
    prepared = PreparedData(data)
    if mine:
        if model is None:
            raise DataError(data.source, "mining hard negatives needs a model: set model_name_or_path")
        scored = [name for name, rows in data.train_sets.items() if SCORES_COLUMN in rows.column_names]
        if scored:
            raise DataError(
                scored[0],
                "has a teacher's pos_scores / neg_scores for its own negatives, which mining would replace: turn "
                "mine_hard_negatives off, or mine first and score the mined rows (st-bge data score)",
            )
        prepared.mining = _mine(data, model, mining)
    if quality.data_check != "off":
        prepared.quality = {
            name: check_quality(
                rows,
                data.eval,
                tokenizer=model.tokenizer if model is not None else None,
                max_seq_length=model.max_seq_length if model is not None else None,
                name=name,
                rows_from_test=data.rows_from_test.get(name, 0),
                language=language,
                notes=[
                    note
                    for note in (data.provenance.get(name), data.evaluation and f"evaluation: {data.evaluation}")
                    if note
                ],
            )
            for name, rows in prepared.data.train_sets.items()
        }
        _refuse_eval_overlap(prepared.quality, quality)
    return prepared


def enforce_verdict(prepared: PreparedData, quality: QualityArguments, output_dir: str | Path) -> None:
    """Stop before training when a report's verdict is 'fail' and `data_check` is 'enforce'.

    Raises:
        DataError: naming the source, its reasons and how to train anyway.
    """
    for name, report in prepared.quality.items():
        if report.verdict == "fail":
            reasons = "; ".join(report.reasons)
            where = prepared.report_path(output_dir, name)
            if quality.data_check == "enforce":
                raise DataError(
                    name,
                    f"data quality check failed: {reasons} (report: {where}); fix the data, or set data_check: warn "
                    "to train anyway",
                )
            logger.warning("%s: data quality check failed (data_check: warn, training anyway): %s", name, reasons)


def _mine(data: TrainingData, model: SentenceTransformer, args: MiningArguments) -> dict[str, MiningResult]:
    results = {
        name: mine_negatives(rows, model, args, corpus=data.corpora.get(name), source=name)
        for name, rows in data.train_sets.items()
    }
    data.replace_train_sets({name: result.dataset for name, result in results.items()})
    return results


def _refuse_eval_overlap(reports: dict[str, QualityReport], args: QualityArguments) -> None:
    if args.eval_overlap != "refuse":
        return
    for name, report in reports.items():
        if report.has_eval_overlap:
            raise DataError(
                name,
                "training data overlaps the evaluation set (see the eval overlap section of data_quality.md), which "
                "inflates the results; remove the overlap or set eval_overlap: report",
            )


def check_data(recipe: Recipe) -> PreparedData:
    """The data stage of a training recipe alone: its rows as training would see them (mined first if the recipe
    mines) and their quality reports (`PreparedData.quality`, a verdict per source).

    The model, if the recipe names one, gives the token lengths and the truncation share; `data_check: off` in a
    training recipe does not silence an explicit check.
    """
    if recipe.quality.data_check == "off":
        recipe.quality.data_check = "warn"
    return _prepare(recipe, mine=recipe.mining.mine_hard_negatives)


@dataclass
class MinedData:
    """What `mine` wrote: one trainable `<source>.jsonl` per source, with the mining and quality reports."""

    output_dir: Path
    files: list[Path]
    prepared: PreparedData


def mine(recipe: Recipe) -> MinedData:
    """Mine hard negatives for the recipe's training rows into `mine_output_dir` (one `<source>.jsonl` per
    source, trainable with `dataset_name_or_path`, and the reports).

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
    files = []
    for source, rows in prepared.data.train_sets.items():
        files.append(output_dir / f"{names[source]}.jsonl")
        rows.to_json(files[-1], lines=True, force_ascii=False)
    prepared.save(output_dir)
    return MinedData(output_dir, files, prepared)


def _prepare(recipe: Recipe, *, mine: bool) -> PreparedData:
    from st_bge.modeling import load_model  # the modeling stack only when a model is named

    data = load_training_data(recipe.data)
    model = load_model(recipe.model) if recipe.model.model_name_or_path else None
    return prepare_data(data, model, recipe.mining, recipe.quality, mine=mine, language=recipe.card.language)
