"""Data quality and train/eval leakage report, run before every training and by `st-bge data check`.

Fine-tuning learns whatever the rows say, mistakes included: a negative that is really a positive (a false
negative) pushes the model away from the right answer, repeated rows outweigh the rest, junk texts ('...', 'N/A')
teach nothing, truncated documents hide their ends, and evaluation queries seen in training inflate the scores.
`check_quality` counts each of these with up to `MAX_EXAMPLES` examples and ends in a verdict ('ok', 'warn' or
'fail') set by the `THRESHOLDS` table.

Texts are compared after `normalise` (NFKC, casefold, Unicode punctuation removed, whitespace collapsed), so that
'How do I reset it?' and 'how do i reset it' count as the same text. Everything is a linear pass or a hash lookup;
the one pairwise comparison (near-identical negatives) is between a negative and its own row's positive only.

The report quotes training texts: `data_quality.{json,md}` stay local, next to the model, and are never copied into
the public model card.
"""

from __future__ import annotations

import functools
import json
import math
import operator
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal, TypeVar

from datasets import Dataset

from st_bge.data.formats import text_columns
from st_bge.data.retrieval_set import RetrievalSet
from st_bge.data.text import NO_LETTERS, dominant_script, normalise
from st_bge.markdown import markdown_table
from st_bge.storage import DATA_QUALITY_JSON, DATA_QUALITY_MARKDOWN

Level = Literal["ok", "warn", "fail"]
T = TypeVar("T")

MIN_CHARS = 3
"""A normalised text shorter than this is 'very short' ('ok', 'na' from 'N/A'). Short CJK words (2 characters) are
legitimate queries: that is why short texts only warn, and only above 1%."""
NEAR_IDENTICAL = 0.9
"""A negative is near-identical to its row's positive when, normalised, its length is within this ratio of the
positive's and the Jaccard similarity of their character 3-gram sets is at least this value. 0.9 catches copies
that differ by about one word in twenty (a typo, a changed number, an appended word) while two different passages
on the same topic stay far below; a one-word change that flips the meaning ('can' -> 'cannot') can also reach it,
which is why it only warns. The length check is almost free and spares building 3-gram sets for most pairs (for
texts without long repeats, the Jaccard similarity cannot exceed the ratio of their lengths)."""
MAX_EXAMPLES = 3
EXAMPLE_CHARS = 80
TOKENIZER_BATCH = 1024
PERCENTILES = (50, 90, 99)
COLUMN_GROUPS = ("anchor", "positive", "negatives")
# The scripts (as `dominant_script` names them) each language code of a recipe's `language` is written in; a
# language not listed here is not checked.
LANGUAGE_SCRIPTS = {
    **dict.fromkeys(
        ("en", "fr", "de", "es", "it", "pt", "nl", "sv", "da", "no", "fi", "pl", "cs", "tr", "id", "vi", "ro"),
        frozenset({"Latin"}),
    ),
    "zh": frozenset({"Han"}),
    "ja": frozenset({"Han", "Kana"}),
    "ko": frozenset({"Hangul", "Han"}),
    "ru": frozenset({"Cyrillic"}),
    "uk": frozenset({"Cyrillic"}),
    "ar": frozenset({"Arabic"}),
    "el": frozenset({"Greek"}),
    "he": frozenset({"Hebrew"}),
    "hi": frozenset({"Devanagari"}),
    "th": frozenset({"Thai"}),
}
OPERATORS = {"<": operator.lt, ">": operator.gt, ">=": operator.ge}


@dataclass(frozen=True)
class Threshold:
    """`level` is reached when `metric op limit`; metrics are the counts (`QualityReport.counts`), each finding's
    share (`Finding.share`, by key) and 'truncated' (the largest truncated share of any column group)."""

    metric: str
    op: Literal["<", ">", ">="]
    limit: float
    level: Level
    why: str


# Most severe first: each metric gives at most one reason, from the first rule it reaches.
THRESHOLDS: tuple[Threshold, ...] = (
    Threshold(
        "rows",
        "<",
        2,
        "fail",
        "contrastive losses need at least 2 rows: each row's in-batch negatives are the other rows' positives",
    ),
    Threshold(
        "negative_equals_positive_normalised",
        ">=",
        0.01,
        "fail",
        "a negative that is a positive of its anchor is a false negative: the loss pushes the right answer away; "
        "in 1% of rows it is a broken mining or labelling step, not noise",
    ),
    Threshold(
        "negative_equals_positive_normalised",
        ">",
        0,
        "warn",
        "false negatives (a negative that is a positive of its anchor): remove them or re-mine the negatives",
    ),
    Threshold(
        "negative_near_positive",
        ">",
        0,
        "warn",
        "a negative nearly identical to its positive is most likely the same document (a false negative), unless "
        "a small edit flips its meaning",
    ),
    Threshold(
        "duplicate_rows_normalised",
        ">",
        0.01,
        "warn",
        "repeated rows outweigh the rest of the data, and a random train/eval split can put copies on both sides",
    ),
    Threshold(
        "anchor_variants",
        ">",
        0.01,
        "warn",
        "spellings of one query count as different queries: a split by query can put them on both sides",
    ),
    Threshold(
        "empty_texts",
        ">",
        0,
        "warn",
        "texts of only punctuation or spaces ('...', '-') are placeholders with nothing to learn from",
    ),
    Threshold(
        "short_texts",
        ">",
        0.01,
        "warn",
        f"texts under {MIN_CHARS} characters ('N/A', 'ok') are usually placeholders (short CJK words excepted)",
    ),
    Threshold(
        "truncated",
        ">",
        0.05,
        "warn",
        "the model never sees what is cut off: raise max_seq_length or split long documents into passages",
    ),
    Threshold(
        "queries_as_documents",
        ">",
        0,
        "warn",
        "a query that is also a document usually means swapped or mislabelled columns (expected only for "
        "symmetric data such as paraphrases)",
    ),
    Threshold(
        "texts_outside_language",
        ">",
        0.05,
        "warn",
        "texts in a script none of the recipe's `language` is written in: a model trained for those languages "
        "splits them into pieces it has barely seen; use a multilingual base model (BAAI/bge-m3, or a bge-*-zh-v1.5 "
        "for Chinese) and list every language of the data in `language`",
    ),
    Threshold(
        "train_rows_from_test_split",
        ">",
        0,
        "warn",
        "a test split trained on can no longer test the model: its results, and any published ones on that split, "
        "measure memory; train on the other splits (dataset_split: auto) and evaluate on test",
    ),
    Threshold(
        "eval_queries_in_train",
        ">",
        0,
        "warn",
        "evaluation queries seen in training inflate the evaluation scores",
    ),
    Threshold(
        "eval_documents_in_train",
        ">",
        0,
        "warn",
        "relevant evaluation documents trained as positives inflate the evaluation scores",
    ),
)


class _Normalised(dict):
    """`normalise` of each distinct text, computed once: negatives and documents repeat across rows."""

    def __missing__(self, text: str) -> str:
        value = self[text] = normalise(text)
        return value


class _Shingles(dict):
    """The character 3-gram set of each normalised text, computed once (a text under 3 characters is its own)."""

    def __missing__(self, text: str) -> set:
        value = self[text] = set(zip(text, text[1:], text[2:], strict=False)) or {text}
        return value


@dataclass
class Finding:
    """One counted problem: `count` of `total` `unit`, with up to `MAX_EXAMPLES` examples (texts cut to ~80
    characters; `train[i]` is the 0-based row of the training dataset) and, for texts, the count per column group."""

    key: str
    section: str
    title: str
    count: int
    total: int
    unit: str
    examples: list[str] = field(default_factory=list)
    by_column: dict[str, int] = field(default_factory=dict)

    @property
    def share(self) -> float:
        return self.count / self.total if self.total else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "share": self.share}


@dataclass
class TokenLengths:
    """Token counts of one column group, special tokens included (max_seq_length counts them too); percentiles are
    nearest-rank, so each is the length of an actual text. `truncated` is None without a max_seq_length."""

    texts: int
    p50: int
    p90: int
    p99: int
    max: int
    truncated: int | None

    @classmethod
    def of(cls, lengths: Sequence[int], max_seq_length: int | None) -> TokenLengths:
        ordered = sorted(lengths)
        p50, p90, p99 = (ordered[max(0, math.ceil(p / 100 * len(ordered)) - 1)] for p in PERCENTILES)
        truncated = None if max_seq_length is None else sum(n > max_seq_length for n in ordered)
        return cls(len(ordered), p50, p90, p99, ordered[-1], truncated)

    @property
    def truncated_share(self) -> float | None:
        return None if self.truncated is None else self.truncated / self.texts

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "truncated_share": self.truncated_share}


@dataclass
class QualityReport:
    """What `check_quality` found in one training set (and its overlap with an eval set), and the verdict.

    This report quotes training texts in its examples: it is saved next to the model for its owner and never goes
    into the public model card.

    Attributes:
        name: What was checked (a file, a Hub id), for the title.
        counts: Sizes: rows, distinct anchors (exact and normalised), distinct positives, negatives per row and, with
            an eval set, its queries and corpus size.
        findings: Every counted problem, in report order (see `Finding`); also those that found nothing.
        script_mix: `script_mix[column group][script]` = share of the group's texts whose letters are mostly in
            that Unicode script (or 'no letters'); a script, not a language: English and French are both Latin.
        token_lengths: Per column group; None when no tokenizer was given.
        max_seq_length: The length truncation was counted against, if any.
        eval_name: The eval set's name; None without one.
        notes: Where the rows and the eval set came from, in words.
    """

    name: str
    counts: dict[str, int]
    findings: list[Finding]
    script_mix: dict[str, dict[str, float]]
    token_lengths: dict[str, TokenLengths] | None = None
    max_seq_length: int | None = None
    eval_name: str | None = None
    # Where the rows and the eval set came from (splits, held-out queries, columns taken by order), in words.
    notes: list[str] = field(default_factory=list)

    def finding(self, key: str) -> Finding:
        return next(finding for finding in self.findings if finding.key == key)

    @property
    def has_eval_overlap(self) -> bool:
        """Any eval query, relevant eval document or judged pair also in the training data."""
        return any(finding.count for finding in self.findings if finding.key.startswith("eval_"))

    @property
    def metrics(self) -> dict[str, float]:
        """The values `THRESHOLDS` are checked against."""
        truncated = [lengths.truncated_share or 0.0 for lengths in (self.token_lengths or {}).values()]
        return {
            **self.counts,
            "truncated": max(truncated, default=0.0),
            **{finding.key: finding.share for finding in self.findings},
        }

    def _reached(self) -> list[Threshold]:
        metrics, reached = self.metrics, []
        for rule in THRESHOLDS:
            first_for_metric = all(r.metric != rule.metric for r in reached)
            if first_for_metric and rule.metric in metrics and OPERATORS[rule.op](metrics[rule.metric], rule.limit):
                reached.append(rule)
        return reached

    @property
    def verdict(self) -> Level:
        levels = {rule.level for rule in self._reached()}
        return "fail" if "fail" in levels else "warn" if levels else "ok"

    @property
    def reasons(self) -> list[str]:
        """One line per threshold reached, failures first: what was measured, the limit, and why it matters."""
        reached = sorted(self._reached(), key=lambda rule: rule.level != "fail")
        return [f"{rule.level}: {self._measured(rule)}: {rule.why}" for rule in reached]

    def _measured(self, rule: Threshold) -> str:
        if rule.metric in self.counts:
            return f"{self.counts[rule.metric]} {rule.metric} ({rule.op} {rule.limit:g})"
        if rule.metric == "truncated":
            return (
                f"texts longer than max_seq_length={self.max_seq_length}: {self.metrics['truncated']:.1%} of a "
                f"column's texts (limit {rule.op} {rule.limit:.0%})"
            )
        finding = self.finding(rule.metric)
        return (
            f"{finding.title}: {finding.count} of {finding.total} {finding.unit} ({finding.share:.1%}, "
            f"limit {rule.op} {rule.limit:.0%})"
        )

    def to_dict(self) -> dict[str, Any]:
        """Everything, JSON-able: what `data_quality.json` holds."""
        return {
            "name": self.name,
            "verdict": self.verdict,
            "reasons": self.reasons,
            "has_eval_overlap": self.has_eval_overlap,
            "eval_name": self.eval_name,
            "notes": self.notes,
            "counts": self.counts,
            "findings": [finding.to_dict() for finding in self.findings],
            "max_seq_length": self.max_seq_length,
            "token_lengths": None
            if self.token_lengths is None
            else {group: lengths.to_dict() for group, lengths in self.token_lengths.items()},
            "script_mix": self.script_mix,
            "thresholds": [asdict(rule) for rule in THRESHOLDS],
        }

    def to_markdown(self) -> str:
        """A readable report: verdict and reasons, then one table per section and the examples under it."""
        reasons = [f"- {reason}" for reason in self.reasons] or ["- No threshold reached."]
        parts = [
            f"# Data quality: {self.name} — {self.verdict}",
            "Local report: it quotes training texts, so it stays next to the model and never goes into the public "
            "model card.",
            "\n".join([f"Verdict: **{self.verdict}**", "", *reasons]),
            *(["\n".join(f"- {note}" for note in self.notes)] if self.notes else []),
            "## Counts\n\n" + markdown_table(["Count", "Value"], list(self.counts.items())),
        ]
        sections = dict.fromkeys(finding.section for finding in self.findings)
        parts += [self._section_markdown(section) for section in sections]
        if "negative_equals_positive" not in {finding.key for finding in self.findings}:
            parts.append("## Negatives\n\nNo negative columns.")
        if self.eval_name is None:
            parts.append("## Train/eval overlap\n\nNo eval set given.")
        parts += [self._token_lengths_markdown(), self._script_mix_markdown()]
        return "\n\n".join(parts) + "\n"

    def _section_markdown(self, section: str) -> str:
        findings = [finding for finding in self.findings if finding.section == section]
        header = ["Finding", "Count", "Of", "Share"]
        rows = [[f.title, f.count, f"{f.total} {f.unit}", f"{f.share:.1%}"] for f in findings]
        if any(finding.by_column for finding in findings):
            header.append("By column")
            for row, finding in zip(rows, findings, strict=True):
                row.append(", ".join(f"{group} {n}" for group, n in finding.by_column.items()))
        title = f"Train/eval overlap (eval set: {self.eval_name})" if section == "Train/eval overlap" else section
        lines = [f"## {title}", "", markdown_table(header, rows)]
        examples = [f"- {f.title}: {example}" for f in findings for example in f.examples]
        if examples:
            lines += ["", "Examples:", "", *examples]
        return "\n".join(lines)

    def _token_lengths_markdown(self) -> str:
        if self.token_lengths is None:
            return "## Token lengths\n\nSkipped: no tokenizer given."
        limit = f", max_seq_length {self.max_seq_length}" if self.max_seq_length is not None else ""
        header = ["Column", "Texts", "p50", "p90", "p99", "Max", "Truncated"]
        rows = [
            [group, t.texts, t.p50, t.p90, t.p99, t.max, "n/a" if t.truncated is None else f"{t.truncated_share:.1%}"]
            for group, t in self.token_lengths.items()
        ]
        return f"## Token lengths (special tokens included{limit})\n\n" + markdown_table(header, rows)

    def _script_mix_markdown(self) -> str:
        groups = list(self.script_mix)
        scripts = dict.fromkeys(script for shares in self.script_mix.values() for script in shares)
        rows = [[script] + [f"{self.script_mix[g].get(script, 0.0):.1%}" for g in groups] for script in scripts]
        return (
            "## Script mix\n\nShare of texts by the Unicode script most of their letters are in (not a language "
            "detection).\n\n" + markdown_table(["Script", *groups], rows)
        )

    def save(self, output_dir: str | Path) -> list[Path]:
        """Write `data_quality.json` and `data_quality.md` into `output_dir`; returns their paths."""
        output_dir = Path(output_dir)
        output_dir.mkdir(parents=True, exist_ok=True)
        json_path, markdown_path = output_dir / DATA_QUALITY_JSON, output_dir / DATA_QUALITY_MARKDOWN
        json_path.write_text(json.dumps(self.to_dict(), indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
        markdown_path.write_text(self.to_markdown(), encoding="utf-8")
        return [json_path, markdown_path]


@dataclass
class _Columns:
    """A training dataset's text columns, raw and normalised: anchor, positive, then the negatives."""

    raw: dict[str, list[str]]
    normalised: dict[str, list[str]]

    @classmethod
    def of(cls, train: Dataset, norm: _Normalised) -> _Columns:
        raw = train.select_columns(
            text_columns(train.column_names)
        ).to_dict()  # column -> list, straight from Arrow (not row by row)
        return cls(raw, {column: [norm[text] for text in texts] for column, texts in raw.items()})

    @property
    def rows(self) -> int:
        return len(self.raw["anchor"])

    @property
    def negatives(self) -> list[str]:
        return [column for column in self.raw if column not in ("anchor", "positive")]

    @functools.cached_property
    def scripts(self) -> dict[str, list[str]]:
        """The dominant script of every normalised text, per column: the script mix and the language check share it."""
        return {column: [dominant_script(text) for text in texts] for column, texts in self.normalised.items()}


def check_quality(
    train: Dataset,
    eval_set: RetrievalSet | None = None,
    *,
    tokenizer=None,
    max_seq_length: int | None = None,
    name: str = "training data",
    rows_from_test: int = 0,
    notes: Sequence[str] = (),
    language: Sequence[str] | None = None,
) -> QualityReport:
    """Check training rows (columns anchor, positive, optional negatives) and their overlap with `eval_set`.

    Args:
        train: The training rows.
        eval_set: The retrieval set the model will be evaluated on, to find train/eval overlap.
        tokenizer: The model's tokenizer (a fast one is quickest), for token lengths; skipped without it.
        max_seq_length: The model's maximum input length, for the share of texts that get truncated.
        name: What is checked, for the report's title.
        rows_from_test: How many of the rows come from a split named 'test' (a BEIR folder's qrels/test.tsv).
        notes: Where the rows and the eval set came from, for the report.
        language: The recipe's `language` codes: texts in a script none of them uses are counted.
    """
    norm = _Normalised()
    columns = _Columns.of(train, norm)
    findings = [
        *_duplicate_findings(columns),
        *_short_text_findings(columns),
        *_negative_findings(columns),
        _query_document_finding(columns),
        *(_eval_findings(columns, eval_set, norm) if eval_set is not None else []),
    ]
    scripts = set().union(*(LANGUAGE_SCRIPTS.get(code.lower(), set()) for code in language or ()))
    if scripts and all(code.lower() in LANGUAGE_SCRIPTS for code in language):
        findings.append(_language_finding(columns, scripts, list(language)))
    if rows_from_test:
        findings.append(
            Finding(
                "train_rows_from_test_split",
                "Splits",
                "training rows from a split named test",
                rows_from_test,
                columns.rows,
                "rows",
            )
        )
    return QualityReport(
        name=name,
        counts=_counts(columns, eval_set),
        findings=findings,
        script_mix=_script_mix(columns),
        token_lengths=_token_lengths(columns, tokenizer, max_seq_length) if tokenizer is not None else None,
        max_seq_length=max_seq_length,
        eval_name=eval_set.name if eval_set is not None else None,
        notes=list(notes),
    )


def _counts(columns: _Columns, eval_set: RetrievalSet | None) -> dict[str, int]:
    counts = {
        "rows": columns.rows,
        "distinct_anchors": len(set(columns.raw["anchor"])),
        "distinct_anchors_normalised": len(set(columns.normalised["anchor"])),
        "distinct_positives": len(set(columns.raw["positive"])),
        "negatives_per_row": len(columns.negatives),
    }
    if eval_set is not None:
        counts.update({"eval_queries": len(eval_set.queries), "eval_corpus": len(eval_set.corpus)})
    return counts


def _finding(
    key: str,
    section: str,
    title: str,
    hits: Sequence[T],
    total: int,
    unit: str,
    describe: Callable[[T], str],
    by_column: dict[str, int] | None = None,
) -> Finding:
    examples = [describe(hit) for hit in hits[:MAX_EXAMPLES]]
    return Finding(key, section, title, len(hits), total, unit, examples, by_column or {})


def _quote(text: str) -> str:
    """A text cut to `EXAMPLE_CHARS`, quoted with its newlines and quotes escaped, for an example."""
    cut = text if len(text) <= EXAMPLE_CHARS else text[: EXAMPLE_CHARS - 1] + "…"
    return json.dumps(cut, ensure_ascii=False)


def _repeats(keys: Iterable[object]) -> list[tuple[int, int]]:
    """(position, position of its first occurrence) for every key seen before."""
    first: dict[object, int] = {}
    return [(i, first[key]) for i, key in enumerate(keys) if first.setdefault(key, i) != i]


def _group(column: str) -> str:
    return column if column in ("anchor", "positive") else "negatives"


def _duplicate_findings(columns: _Columns) -> list[Finding]:
    """Repeated rows and pairs (the normalised counts include the exact ones), and anchors that are distinct only
    until normalised (spelling variants of one query)."""
    anchors, positives = columns.raw["anchor"], columns.raw["positive"]

    def describe_row(hit: tuple[int, int]) -> str:
        i, j = hit
        return f"train[{i}] repeats train[{j}]: {_quote(anchors[i])} → {_quote(positives[i])}"

    def row_finding(key: str, title: str, keys: Iterable[object]) -> Finding:
        return _finding(key, "Duplicates", title, _repeats(keys), columns.rows, "rows", describe_row)

    distinct_anchors = list(dict.fromkeys(zip(anchors, columns.normalised["anchor"], strict=True)))
    return [
        row_finding("duplicate_rows", "exact duplicate rows", zip(*columns.raw.values(), strict=True)),
        row_finding(
            "duplicate_pairs", "exact duplicate (anchor, positive) pairs", zip(anchors, positives, strict=True)
        ),
        row_finding(
            "duplicate_rows_normalised",
            "duplicate rows after normalisation",
            zip(*columns.normalised.values(), strict=True),
        ),
        _finding(
            "anchor_variants",
            "Duplicates",
            "distinct anchors equal to another after normalisation",
            _repeats(normalised for _, normalised in distinct_anchors),
            len(distinct_anchors),
            "distinct anchors",
            lambda hit: f"{_quote(distinct_anchors[hit[0]][0])} ≈ {_quote(distinct_anchors[hit[1]][0])}",
        ),
    ]


def _short_text_findings(columns: _Columns) -> list[Finding]:
    """Texts that normalise to nothing, and texts under `MIN_CHARS` characters once normalised."""
    cells = [(i, column) for column in columns.raw for i in range(columns.rows)]
    empty = [(i, column) for i, column in cells if not columns.normalised[column][i]]
    short = [(i, column) for i, column in cells if 0 < len(columns.normalised[column][i]) < MIN_CHARS]

    def describe(hit: tuple[int, str]) -> str:
        i, column = hit
        return f"train[{i}] {column}: {_quote(columns.raw[column][i])}"

    def finding(key: str, title: str, hits: list[tuple[int, str]]) -> Finding:
        by_column = dict(Counter(_group(column) for _, column in hits))
        return _finding(key, "Short and empty texts", title, hits, len(cells), "texts", describe, by_column)

    return [
        finding("empty_texts", "texts empty after normalisation", empty),
        finding("short_texts", f"texts under {MIN_CHARS} characters after normalisation", short),
    ]


def _negative_findings(columns: _Columns) -> list[Finding]:
    """Rows with a negative equal to a positive of the same anchor (in any row), exactly or after normalisation,
    and rows with a negative near-identical (`NEAR_IDENTICAL`) to their own positive but equal to none: likely
    false negatives. None without negative columns."""
    if not columns.negatives:
        return []
    raw, normalised, shingles = columns.raw, columns.normalised, _Shingles()
    exact_positives = _positives_by_anchor(raw)
    normalised_positives = _positives_by_anchor(normalised)

    def equal_exactly(i: int, column: str) -> bool:
        return raw[column][i] in exact_positives[raw["anchor"][i]]

    def equal_normalised(i: int, column: str) -> bool:
        text = normalised[column][i]
        return bool(text) and text in normalised_positives[normalised["anchor"][i]]

    def near(i: int, column: str) -> bool:
        text, positive = normalised[column][i], normalised["positive"][i]
        shorter, longer = sorted((len(text), len(positive)))
        return (
            bool(text)
            and shorter >= NEAR_IDENTICAL * longer
            and not equal_normalised(i, column)
            and _jaccard(shingles[text], shingles[positive]) >= NEAR_IDENTICAL
        )

    def describe_equal(hit: tuple[int, str]) -> str:
        i, column = hit
        return f"train[{i}] {column}: {_quote(raw[column][i])} (anchor {_quote(raw['anchor'][i])})"

    def describe_near(hit: tuple[int, str]) -> str:
        i, column = hit
        similarity = _jaccard(shingles[normalised[column][i]], shingles[normalised["positive"][i]])
        return (
            f"train[{i}] {column}: {_quote(raw[column][i])} vs positive {_quote(raw['positive'][i])} "
            f"(3-gram Jaccard {similarity:.2f})"
        )

    def finding(key: str, title: str, matches: Callable[[int, str], bool], describe) -> Finding:
        return _finding(key, "Negatives", title, _rows_with(columns, matches), columns.rows, "rows", describe)

    return [
        finding(
            "negative_equals_positive", "negative equal to a positive of its anchor", equal_exactly, describe_equal
        ),
        finding(
            "negative_equals_positive_normalised",
            "negative equal to a positive of its anchor after normalisation",
            equal_normalised,
            describe_equal,
        ),
        finding(
            "negative_near_positive",
            f"negative near-identical to its positive (3-gram Jaccard ≥ {NEAR_IDENTICAL})",
            near,
            describe_near,
        ),
    ]


def _positives_by_anchor(texts: dict[str, list[str]]) -> dict[str, set[str]]:
    positives: dict[str, set[str]] = {}
    for anchor, positive in zip(texts["anchor"], texts["positive"], strict=True):
        positives.setdefault(anchor, set()).add(positive)
    return positives


def _rows_with(columns: _Columns, matches: Callable[[int, str], bool]) -> list[tuple[int, str]]:
    """(row, its first matching negative column) for every row with a negative that `matches(row, column)`."""
    hits = []
    for i in range(columns.rows):
        column = next((column for column in columns.negatives if matches(i, column)), None)
        if column is not None:
            hits.append((i, column))
    return hits


def _jaccard(a: set, b: set) -> float:
    return len(a & b) / len(a | b)


def _query_document_finding(columns: _Columns) -> Finding:
    """Distinct anchors that, normalised, are also the text of a positive or negative (of any row)."""
    documents: dict[str, tuple[int, str]] = {}
    for column in columns.raw:
        if column != "anchor":
            for i, text in enumerate(columns.normalised[column]):
                documents.setdefault(text, (i, column))
    anchors: dict[str, int] = {}
    for i, text in enumerate(columns.normalised["anchor"]):
        if text:
            anchors.setdefault(text, i)
    hits = [(i, documents[text]) for text, i in anchors.items() if text in documents]

    def describe(hit: tuple[int, tuple[int, str]]) -> str:
        i, (j, column) = hit
        return f"train[{i}] anchor {_quote(columns.raw['anchor'][i])} is train[{j}] {column}"

    return _finding(
        "queries_as_documents",
        "Queries that are also documents",
        "anchors that are also a positive or negative text",
        hits,
        len(anchors),
        "distinct anchors",
        describe,
    )


def _eval_findings(columns: _Columns, eval_set: RetrievalSet, norm: _Normalised) -> list[Finding]:
    """Eval queries that are training anchors, relevant eval documents (grade > 0) that are training positives,
    and relevant eval (query, document) pairs that are training rows, all after normalisation. Counted on the
    eval side: the shares say how much of the evaluation is affected."""
    anchors = set(columns.normalised["anchor"]) - {""}
    positives = set(columns.normalised["positive"]) - {""}
    pairs = set(zip(columns.normalised["anchor"], columns.normalised["positive"], strict=True))
    queries, corpus = eval_set.queries, eval_set.corpus
    judgements = [
        (query_id, doc_id)
        for query_id in sorted(eval_set.qrels)
        for doc_id, grade in sorted(eval_set.qrels[query_id].items())
        if grade > 0
    ]
    relevant = sorted({doc_id for _, doc_id in judgements})
    section = "Train/eval overlap"
    return [
        _finding(
            "eval_queries_in_train",
            section,
            "eval queries that are training anchors",
            [query_id for query_id in sorted(queries) if norm[queries[query_id]] in anchors],
            len(queries),
            "eval queries",
            lambda query_id: f"{query_id}: {_quote(queries[query_id])}",
        ),
        _finding(
            "eval_documents_in_train",
            section,
            "relevant eval documents that are training positives",
            [doc_id for doc_id in relevant if norm[corpus[doc_id]] in positives],
            len(relevant),
            "relevant eval documents",
            lambda doc_id: f"{doc_id}: {_quote(corpus[doc_id])}",
        ),
        _finding(
            "eval_pairs_in_train",
            section,
            "relevant eval (query, document) pairs that are training rows",
            [(q, d) for q, d in judgements if (norm[queries[q]], norm[corpus[d]]) in pairs],
            len(judgements),
            "relevant judgements",
            lambda hit: f"{hit[0]} → {hit[1]}: {_quote(queries[hit[0]])} → {_quote(corpus[hit[1]])}",
        ),
    ]


def _token_lengths(columns: _Columns, tokenizer, max_seq_length: int | None) -> dict[str, TokenLengths]:
    """Token counts per column group; each distinct text is tokenized once, in batches, without truncation."""
    distinct = list(dict.fromkeys(text for texts in columns.raw.values() for text in texts))
    lengths = dict(zip(distinct, _count_tokens(tokenizer, distinct), strict=True))
    groups: dict[str, list[int]] = {}
    for column, texts in columns.raw.items():
        groups.setdefault(_group(column), []).extend(lengths[text] for text in texts)
    return {group: TokenLengths.of(values, max_seq_length) for group, values in groups.items() if values}


def _count_tokens(tokenizer, texts: list[str]) -> list[int]:
    counts: list[int] = []
    for start in range(0, len(texts), TOKENIZER_BATCH):
        encoded = tokenizer(
            texts[start : start + TOKENIZER_BATCH],
            add_special_tokens=True,
            truncation=False,
            return_length=True,
            return_attention_mask=False,
            return_token_type_ids=False,
            verbose=False,  # no "longer than the maximum length" warning: measuring that is the point
        )
        counts.extend(encoded["length"])
    return counts


def _language_finding(columns: _Columns, scripts: set[str], language: list[str]) -> Finding:
    """Texts whose letters are mostly in a script that none of `language` is written in."""
    expected = scripts | {NO_LETTERS}
    hits = [
        (i, column)
        for column, text_scripts in columns.scripts.items()
        for i, script in enumerate(text_scripts)
        if script not in expected
    ]

    def describe(hit: tuple[int, str]) -> str:
        i, column = hit
        return f"train[{i}] {column} ({columns.scripts[column][i]}): {_quote(columns.raw[column][i])}"

    total = columns.rows * len(columns.raw)
    title = f"texts in a script {' / '.join(language)} is not written in"
    by_column = dict(Counter(_group(column) for _, column in hits))
    return _finding("texts_outside_language", "Languages", title, hits, total, "texts", describe, by_column)


def _script_mix(columns: _Columns) -> dict[str, dict[str, float]]:
    """Per column group, the share of texts by dominant script, most common first."""
    scripts: dict[str, Counter[str]] = {}
    for column, text_scripts in columns.scripts.items():
        scripts.setdefault(_group(column), Counter()).update(text_scripts)
    return {
        group: {script: n / counter.total() for script, n in counter.most_common()}
        for group, counter in scripts.items()
        if counter
    }
