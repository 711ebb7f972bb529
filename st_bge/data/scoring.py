"""A teacher's scores for the training rows: a cross-encoder (reranker) scores every (query, positive) and
(query, negative) pair, for knowledge distillation (`kd_loss`), as FlagEmbedding's `scripts/add_reranker_score.py`
does for its `pos_scores` / `neg_scores`.

Scores are cached on disk like mined negatives, keyed by the teacher's weights, the pairs and the settings, so a
second run (or the same pairs in another recipe) does not score again.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

import torch
from datasets import Dataset
from sentence_transformers import CrossEncoder

from st_bge.config import Recipe, ScoringArguments
from st_bge.data import load_training_data, source_names
from st_bge.data.formats import SCORES_COLUMN, text_columns
from st_bge.errors import ConfigError
from st_bge.storage import (
    SCORE_REPORT,
    cache_dir,
    check_output_dir,
    model_fingerprint,
    save_atomically,
    texts_fingerprint,
)

logger = logging.getLogger(__name__)


@dataclass
class ScoredRows:
    """A source's rows with their teacher scores (`scores`: [positive, negatives...] per row) and a summary."""

    rows: Dataset
    from_cache: bool

    def summary(self) -> dict[str, object]:
        scores = torch.tensor(self.rows[SCORES_COLUMN])
        positives, negatives = scores[:, 0], scores[:, 1:]
        summary: dict[str, object] = {
            "rows": len(self.rows),
            "pairs_scored": scores.numel(),
            "from_cache": self.from_cache,
            "positive_mean": float(positives.mean()),
        }
        if negatives.numel():
            summary["negative_mean"] = float(negatives.mean())
            # How often the teacher disagrees with the labels: a negative scored above its own positive.
            summary["rows_with_a_negative_above_the_positive"] = int((negatives > positives[:, None]).any(1).sum())
        return summary

    def to_flagembedding(self) -> list[dict[str, object]]:
        """One FlagEmbedding line per row: `{query, pos, neg, pos_scores, neg_scores}`."""
        negatives = text_columns(self.rows.column_names)[2:]
        lines = []
        for row in self.rows:
            lines.append(
                {
                    "query": row["anchor"],
                    "pos": [row["positive"]],
                    "neg": [row[column] for column in negatives],
                    "pos_scores": [row[SCORES_COLUMN][0]],
                    "neg_scores": row[SCORES_COLUMN][1:],
                }
            )
        return lines


def load_teacher(args: ScoringArguments) -> CrossEncoder:
    """The cross-encoder that scores.

    Raises:
        ConfigError: no teacher is named, or it cannot be loaded.
    """
    from st_bge.modeling import load_cross_encoder

    if not args.score_cross_encoder:
        raise ConfigError("scoring needs a teacher: set score_cross_encoder (e.g. BAAI/bge-reranker-v2-m3)")
    return load_cross_encoder(args.score_cross_encoder, "score_cross_encoder", max_length=args.score_max_length)


def score_rows(rows: Dataset, teacher: CrossEncoder, args: ScoringArguments) -> ScoredRows:
    """`rows` (anchor, positive, negative_1..n) with a `scores` column: the teacher's score of each row's
    (anchor, positive) and (anchor, negative_i) pair; an existing `scores` column is replaced."""
    texts = text_columns(rows.column_names)
    rows = rows.select_columns(texts)
    candidates = texts[1:]
    pairs = [(row["anchor"], row[column]) for row in rows for column in candidates]
    entry = _cache_entry(args, teacher, pairs)
    if entry is not None and entry.is_file():
        logger.info("Teacher scores from cache: %s", entry)
        scores, from_cache = torch.load(entry, weights_only=True), True
    else:
        activation = torch.nn.Sigmoid() if args.score_normalize else torch.nn.Identity()
        scores = (
            teacher.predict(
                pairs,
                batch_size=args.score_batch_size,
                activation_fn=activation,
                convert_to_tensor=True,
                show_progress_bar=True,
            )
            .float()
            .cpu()
        )
        from_cache = False
        if entry is not None:
            save_atomically(scores, entry)
    table = scores.view(len(rows), len(candidates)).tolist()
    return ScoredRows(rows.add_column(SCORES_COLUMN, table), from_cache=from_cache)


@dataclass
class ScoredData:
    """What `score` wrote: one FlagEmbedding `<source>.jsonl` per source with `pos_scores` / `neg_scores`, and
    `score_report.json` (its `report`: a summary of the scores per source)."""

    output_dir: Path
    files: list[Path]
    report: dict[str, dict[str, object]]


def score(recipe: Recipe) -> ScoredData:
    """Score the recipe's training rows with a teacher cross-encoder (`score_cross_encoder`) into
    `score_output_dir`; train on the files with `kd_loss`.

    Raises:
        ConfigError: no teacher is named, or `score_output_dir` already has files (without --overwrite_output_dir).
    """
    output_dir = Path(recipe.scoring.score_output_dir)
    check_output_dir(output_dir, overwrite=recipe.training.overwrite_output_dir)
    teacher = load_teacher(recipe.scoring)
    data = load_training_data(recipe.data)
    names = source_names(list(data.train_sets))
    scored = {names[source]: score_rows(rows, teacher, recipe.scoring) for source, rows in data.train_sets.items()}
    output_dir.mkdir(parents=True, exist_ok=True)  # only once every source is scored: no half-written output
    files = []
    for name, rows in scored.items():
        files.append(output_dir / f"{name}.jsonl")
        with files[-1].open("w", encoding="utf-8") as file:
            for line in rows.to_flagembedding():
                file.write(json.dumps(line, ensure_ascii=False) + "\n")
    report = {name: rows.summary() for name, rows in scored.items()}
    (output_dir / SCORE_REPORT).write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    return ScoredData(output_dir, files, report)


def _cache_entry(args: ScoringArguments, teacher: CrossEncoder, pairs: list[tuple[str, str]]) -> Path | None:
    if not args.score_use_cache:
        return None
    settings = json.dumps({"max_length": args.score_max_length, "normalize": args.score_normalize}, sort_keys=True)
    key = texts_fingerprint([q for q, _ in pairs], [d for _, d in pairs], [settings])
    folder = Path(args.score_cache_dir) if args.score_cache_dir else cache_dir("scores")
    return folder / f"{model_fingerprint(teacher)}-{key}.pt"
