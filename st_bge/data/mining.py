"""Hard negatives for (anchor, positive) rows, with an account of what each guard dropped.

st-bge ranks, guards and selects on its own (public encode and predict calls only), with the rules of
sentence-transformers' `mine_hard_negatives`, so the counts and the rows come from one set of scores; the guards,
the buckets and why: docs/mining.md.
"""

from __future__ import annotations

import hashlib
import json
import logging
import random
import shutil
import uuid
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import sentence_transformers
import torch
from datasets import Dataset, load_from_disk
from sentence_transformers import CrossEncoder, SentenceTransformer
from tqdm.auto import tqdm

from st_bge.config import MiningArguments
from st_bge.errors import DataError
from st_bge.storage import MINING_DROPPED_SAMPLE, MINING_REPORT, cache_dir, model_fingerprint, texts_fingerprint

logger = logging.getLogger(__name__)

SEED = 42  # of "random" sampling and of the dropped sample: the same data mines the same negatives
SAMPLE_SIZE = 20
SIMILARITY_CHUNK = 16384  # queries scored at once; passed to sentence-transformers too, so both chunk alike
DATASET_FOLDER = "dataset"

GUARDS = (
    "dropped_query_itself",
    "dropped_known_positive",
    "dropped_absolute_margin",
    "dropped_relative_margin",
    "dropped_max_score",
    "dropped_rank_window",
)
BUCKETS = (*GUARDS, "unused", "kept", "discarded_incomplete")
CODE = {bucket: code for code, bucket in enumerate(BUCKETS)}
ALIVE, PADDING = len(BUCKETS), len(BUCKETS) + 1  # not yet decided; an empty slot (corpus smaller than the window)
# Guards that drop a candidate on a heuristic, so a person may want to check them (a known positive is certain).
HEURISTIC_GUARDS = GUARDS[1:]
SCORE_GUARDS = ("dropped_absolute_margin", "dropped_relative_margin", "dropped_max_score")


# Below this share of rows mined, the log says which guard dropped most candidates and what sets it.
LOW_YIELD = 0.5
# The recipe fields a user changes when a guard drops too much.
GUARD_ADVICE = {
    "dropped_query_itself": "the candidates are mostly the queries themselves: add a corpus of documents",
    "dropped_known_positive": "the candidates are mostly known positives: add documents (a corpus) or lower "
    "mine_num_negatives",
    "dropped_absolute_margin": "raise or unset mine_absolute_margin",
    "dropped_relative_margin": "lower or unset mine_relative_margin (0.05 drops every candidate scored above 95% of "
    "the positive; a model that scores everything alike needs less)",
    "dropped_max_score": "raise or unset mine_max_score",
    "dropped_rank_window": "widen mine_range_min..mine_range_max",
}


@dataclass
class MiningResult:
    """The mined rows (anchor, positive, negative_1..n) and what the guards did to get them.

    `counts` holds the buckets of the module docstring plus row totals (`rows` = `duplicate_rows` + `rows_mined`
    + `rows_without_enough_negatives`) and `dropped_by_cross_encoder_only` (of the score-guard drops, those the
    embedding scores alone would have kept). `dropped_sample` is a seeded sample of heuristic drops to inspect.
    """

    dataset: Dataset
    counts: dict[str, int]
    dropped_sample: list[dict[str, Any]]
    settings: dict[str, Any]
    from_cache: bool = False

    def to_markdown(self) -> str:
        """The buckets as a table with their share of the candidates, and the row totals."""
        candidates = self.counts["candidates"]
        lines = ["| Candidates | Count | Share |", "|---|---:|---:|", f"| candidates | {candidates:,} | 100% |"]
        names = [*BUCKETS, "dropped_by_cross_encoder_only"] if self.settings["cross_encoder"] else BUCKETS
        for name in names:
            share = self.counts[name] / candidates if candidates else 0.0
            lines.append(f"| {name} | {self.counts[name]:,} | {share:.1%} |")
        lines += [
            "",
            f"Rows: {self.counts['rows_mined']:,} of {self.counts['rows']:,} mined, "
            f"{self.counts['rows_without_enough_negatives']:,} dropped for want of "
            f"{self.settings['num_negatives']} negatives, {self.counts['duplicate_rows']:,} duplicates merged.",
        ]
        return "\n".join(lines)

    def low_yield_warning(self) -> str | None:
        """What to change, when fewer than half the (deduplicated) rows got their negatives: the guard that dropped
        the most candidates and its setting; None otherwise."""
        rows = self.counts["rows"] - self.counts["duplicate_rows"]
        if not rows or self.counts["rows_mined"] >= LOW_YIELD * rows:
            return None
        guard = max(GUARDS, key=lambda name: self.counts[name])
        share = self.counts[guard] / self.counts["candidates"] if self.counts["candidates"] else 0.0
        return (
            f"hard-negative mining gave {self.settings['num_negatives']} negatives to {self.counts['rows_mined']:,} "
            f"of {rows:,} rows; {guard} dropped {share:.0%} of the candidates: {GUARD_ADVICE[guard]}"
        )

    def save(self, output_dir: str | Path) -> None:
        """Write `mining_report.json` (counts and settings, no text: safe to publish) and the dropped sample as
        `mining_dropped_sample.jsonl` (training text: for a person to read, not for a public card)."""
        output_dir = Path(output_dir)
        output_dir.mkdir(parents=True, exist_ok=True)
        report = {"counts": self.counts, "settings": self.settings, "from_cache": self.from_cache}
        (output_dir / MINING_REPORT).write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
        lines = [json.dumps(entry, ensure_ascii=False) + "\n" for entry in self.dropped_sample]
        (output_dir / MINING_DROPPED_SAMPLE).write_text("".join(lines), encoding="utf-8")


def mine_negatives(
    train: Dataset,
    model: SentenceTransformer,
    args: MiningArguments,
    *,
    corpus: list[str] | None = None,
    source: str = "training data",
) -> MiningResult:
    """Mine `args.mine_num_negatives` hard negatives per (anchor, positive) row with `model`.

    Negative columns already in `train` are replaced; other extra columns are dropped (sentence-transformers keeps
    anchor and positive only). Rows whose query has too few candidates left are dropped, as sentence-transformers
    does, and counted. The candidates are the positives of all rows plus `corpus`.

    Raises:
        DataError: `train` lacks an anchor or positive column or is empty, or the settings leave no negatives.
    """
    _validate(train, args, source)
    pairs = train.select_columns(["anchor", "positive"])
    cross_encoder = _load_cross_encoder(args)
    settings = _settings(args, _range_max(args, _max_positives(pairs["anchor"])), cross_encoder)
    entry = _cache_entry(args, model, cross_encoder, pairs, corpus, settings)
    if entry is not None and entry.is_dir():
        logger.info("Mined negatives from cache: %s", entry)
        result = _load_entry(entry)
    else:
        result = _mine(pairs, model, cross_encoder, args, corpus, settings)
        logger.info("Hard-negative mining:\n%s", result.to_markdown())
        if entry is not None:
            _store_entry(result, entry)
    warning = result.low_yield_warning()
    if warning:
        logger.warning("%s (%s)", warning, source)
    return result


def _validate(train: Dataset, args: MiningArguments, source: str) -> None:
    for column in ("anchor", "positive"):
        if column not in train.column_names:
            raise DataError(source, f"mining needs this column; the data has {train.column_names}", field=column)
    if len(train) == 0:
        raise DataError(source, "no rows to mine hard negatives for")
    if args.mine_num_negatives < 1:
        raise DataError(source, f"must be at least 1, got {args.mine_num_negatives}", field="mine_num_negatives")
    if args.mine_range_min < 0:
        raise DataError(source, f"must be 0 or more, got {args.mine_range_min}", field="mine_range_min")
    if args.mine_range_max is None:
        return  # derived in _range_max, always wide enough
    if args.mine_range_min >= args.mine_range_max:
        raise DataError(
            source,
            f"mine_range_min ({args.mine_range_min}) must be below mine_range_max ({args.mine_range_max})",
            field="mine_range_min",
        )
    if args.mine_num_negatives > args.mine_range_max - args.mine_range_min:
        raise DataError(
            source,
            f"{args.mine_num_negatives} negatives do not fit in ranks {args.mine_range_min}..{args.mine_range_max}",
            field="mine_num_negatives",
        )


def _max_positives(anchors: Sequence[str]) -> int:
    """Rows of the most frequent anchor, counted as sentence-transformers does (repeated pairs included)."""
    return Counter(anchors).most_common(1)[0][1]


def _score_guards_set(args: MiningArguments) -> bool:
    return any(
        value is not None for value in (args.mine_absolute_margin, args.mine_relative_margin, args.mine_max_score)
    )


def _range_max(args: MiningArguments, max_positives: int) -> int:
    """`mine_range_max`, or sentence-transformers' own default for None (room for 10x the negatives when score
    guards may drop some). Resolved here so that the replay and the cache key use the value it used."""
    if args.mine_range_max is not None:
        return args.mine_range_max
    room = 10 * args.mine_num_negatives if _score_guards_set(args) else args.mine_num_negatives
    return args.mine_range_min + room + max_positives


def _load_cross_encoder(args: MiningArguments) -> CrossEncoder | None:
    if args.mine_cross_encoder is None:
        return None
    if not _score_guards_set(args):
        # sentence-transformers only rescores for the score guards; loading it would only cost time.
        logger.warning("mine_cross_encoder is ignored: it only rescores for a margin or mine_max_score")
        return None
    from st_bge.modeling import load_cross_encoder

    return load_cross_encoder(args.mine_cross_encoder, "mine_cross_encoder")


def _settings(args: MiningArguments, range_max: int, cross_encoder: CrossEncoder | None) -> dict[str, Any]:
    """Everything that decides the mined rows (not the batch size or the cache options)."""
    return {
        "num_negatives": args.mine_num_negatives,
        "range_min": args.mine_range_min,
        "range_max": range_max,
        "absolute_margin": args.mine_absolute_margin,
        "relative_margin": args.mine_relative_margin,
        "max_score": args.mine_max_score,
        "cross_encoder": args.mine_cross_encoder if cross_encoder is not None else None,
        "sampling_strategy": args.mine_sampling_strategy,
        "seed": SEED,
        "sentence_transformers": sentence_transformers.__version__,
    }


# ---- cache ---------------------------------------------------------------------------------------------------


def _cache_entry(
    args: MiningArguments,
    model: SentenceTransformer,
    cross_encoder: CrossEncoder | None,
    pairs: Dataset,
    corpus: Sequence[str] | None,
    settings: dict[str, Any],
) -> Path | None:
    if not args.mine_use_cache:
        return None
    key = {
        "model": model_fingerprint(model),
        "cross_encoder": model_fingerprint(cross_encoder) if cross_encoder is not None else None,
        "data": texts_fingerprint(pairs["anchor"], pairs["positive"], corpus or []),  # None and [] mine alike
        "settings": settings,
    }
    root = Path(args.mine_cache_dir) if args.mine_cache_dir else cache_dir("mined")
    return root / hashlib.blake2b(json.dumps(key, sort_keys=True).encode(), digest_size=16).hexdigest()


def _load_entry(entry: Path) -> MiningResult:
    report = json.loads((entry / MINING_REPORT).read_text(encoding="utf-8"))
    sample = [json.loads(line) for line in (entry / MINING_DROPPED_SAMPLE).read_text(encoding="utf-8").splitlines()]
    dataset = load_from_disk(str(entry / DATASET_FOLDER))
    return MiningResult(dataset, report["counts"], sample, report["settings"], from_cache=True)


def _store_entry(result: MiningResult, entry: Path) -> None:
    """Write the entry under a temporary name, then rename it: a killed run leaves no half entry behind. A failed
    write only costs the cache, not the mined rows."""
    partial = entry.with_name(f".{entry.name}.{uuid.uuid4().hex}.partial")
    try:
        # One shard when empty: `datasets` writes no shard at all for 0 rows and then cannot load the folder.
        num_shards = 1 if len(result.dataset) == 0 else None
        result.dataset.save_to_disk(str(partial / DATASET_FOLDER), num_shards=num_shards)
        result.save(partial)
        partial.rename(entry)
        logger.info("Mined negatives cached: %s", entry)
    except OSError as error:
        if not entry.is_dir():  # else another run stored the same entry first: nothing lost
            logger.warning("Could not cache the mined negatives in %s: %s", entry.parent, error)
    finally:
        shutil.rmtree(partial, ignore_errors=True)


# ---- ranking, guards and selection ---------------------------------------------------------------------------


@dataclass
class _Ranking:
    """Each distinct query's candidates, best embedding score first, and the scores the guards compare."""

    queries: list[str]
    corpus: list[str]
    positive_ids: list[list[int]]  # corpus positions of each query's positives, in the order of its rows
    query_ids: torch.Tensor  # [queries] corpus position of each query's own text, -1 where the corpus lacks it
    indices: torch.Tensor  # [queries, candidates] corpus positions, best embedding rank first; -1 for no document
    embedding_scores: torch.Tensor
    embedding_positive_scores: torch.Tensor  # one per (query, positive), in positive_ids order
    scores: torch.Tensor  # what the guards compare: the cross-encoder's scores if one rescored, else the embeddings'
    positive_scores: torch.Tensor

    @cached_property
    def n_positives(self) -> list[int]:
        return [len(ids) for ids in self.positive_ids]


@dataclass
class _Selection:
    """Per query, the candidate slots of its negatives (best score first) and whether it found all of them."""

    slots: torch.Tensor  # [queries, num_negatives] positions in `_Ranking.indices`
    complete: torch.Tensor  # [queries] bool


def _mine(
    pairs: Dataset,
    model: SentenceTransformer,
    cross_encoder: CrossEncoder | None,
    args: MiningArguments,
    corpus: list[str] | None,
    settings: dict[str, Any],
) -> MiningResult:
    ranking = _rank(model, cross_encoder, pairs, corpus, settings["range_max"], args.mine_batch_size)
    verdict = _guard(ranking, ranking.scores, ranking.positive_scores, args)
    embedding_verdict = None
    if cross_encoder is not None:  # what the guards would have dropped on the embedding scores alone
        embedding_verdict = _guard(ranking, ranking.embedding_scores, ranking.embedding_positive_scores, args)
    selection = _select(verdict, ranking, settings)
    dataset = _mined_rows(ranking, selection, settings["num_negatives"])
    counts = _counts(ranking, verdict, embedding_verdict, len(pairs), len(dataset))
    return MiningResult(dataset, counts, _dropped_sample(ranking, verdict), settings)


def _rank(
    model: SentenceTransformer,
    cross_encoder: CrossEncoder | None,
    pairs: Dataset,
    corpus: list[str] | None,
    range_max: int,
    batch_size: int,
) -> _Ranking:
    """Embed the distinct queries and documents (the corpus, then the positives it lacks), keep each query's best
    `range_max` + most positives + 1 candidates, and rescore them with the cross-encoder if there is one."""
    anchors, positives = pairs["anchor"], pairs["positive"]
    queries = list(dict.fromkeys(anchors))
    documents = list(dict.fromkeys([*(corpus or []), *positives]))
    query_row = {query: row for row, query in enumerate(queries)}
    document_id = {text: index for index, text in enumerate(documents)}
    positive_ids: list[list[int]] = [[] for _ in queries]
    for anchor, positive in zip(anchors, positives, strict=True):
        ids = positive_ids[query_row[anchor]]
        if document_id[positive] not in ids:
            ids.append(document_id[positive])

    encode = {"batch_size": batch_size, "normalize_embeddings": True, "convert_to_numpy": True}
    document_embeddings = torch.as_tensor(model.encode_document(documents, show_progress_bar=True, **encode))
    query_embeddings = model.encode_query(queries, show_progress_bar=True, **encode)
    width = range_max + _max_positives(anchors) + 1  # one more, for the query's own text if the corpus holds it
    top = [
        torch.topk(
            model.similarity(query_embeddings[start : start + SIMILARITY_CHUNK], document_embeddings).to(model.device),
            k=min(width, len(documents)),
            dim=1,
        )
        for start in range(0, len(queries), SIMILARITY_CHUNK)
    ]
    scores = torch.cat([chunk.values for chunk in top])
    indices = torch.cat([chunk.indices for chunk in top])
    missing = width - scores.size(1)
    if missing > 0:
        scores = torch.cat([scores, scores.new_full((len(queries), missing), -float("inf"))], dim=1)
        indices = torch.cat([indices, indices.new_full((len(queries), missing), -1)], dim=1)

    rows = [row for row, ids in enumerate(positive_ids) for _ in ids]
    flat_ids = [index for ids in positive_ids for index in ids]
    positive_scores = model.similarity_pairwise(query_embeddings[rows], document_embeddings[flat_ids]).to(model.device)
    rescored, rescored_positives = scores, positive_scores
    if cross_encoder is not None:
        rescored, rescored_positives = _rescore(cross_encoder, queries, documents, indices, rows, flat_ids, batch_size)
        rescored = rescored.to(device=scores.device, dtype=scores.dtype)
        rescored_positives = rescored_positives.to(model.device)
    query_ids = torch.tensor([document_id.get(query, -1) for query in queries], device=indices.device)
    return _Ranking(
        queries, documents, positive_ids, query_ids, indices, scores, positive_scores, rescored, rescored_positives
    )


def _rescore(
    cross_encoder: CrossEncoder,
    queries: list[str],
    documents: list[str],
    indices: torch.Tensor,
    rows: list[int],
    flat_ids: list[int],
    batch_size: int,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The cross-encoder's scores of every query's candidates (one `predict` per query; an empty slot is scored on
    the last document and guarded away as padding), then of every (query, positive)."""
    predict = {"batch_size": batch_size, "convert_to_tensor": True, "show_progress_bar": False}
    candidates = [
        cross_encoder.predict([(query, documents[index]) for index in row], **predict)
        for query, row in zip(tqdm(queries, desc="Rescoring with the cross-encoder"), indices.tolist(), strict=True)
    ]
    positive_pairs = [(queries[row], documents[index]) for row, index in zip(rows, flat_ids, strict=True)]
    return torch.stack(candidates), cross_encoder.predict(positive_pairs, **predict)


def _hardest_positives(ranking: _Ranking, positive_scores: torch.Tensor) -> tuple[torch.Tensor, list[int]]:
    """Per query, the lowest positive score (what margins compare against) and that positive's corpus position."""
    parts = torch.split(positive_scores, ranking.n_positives)
    lowest = [int(part.argmin()) for part in parts]
    scores = torch.stack([part[i] for part, i in zip(parts, lowest, strict=True)])
    return scores, [ids[i] for ids, i in zip(ranking.positive_ids, lowest, strict=True)]


def _guard(
    ranking: _Ranking, scores: torch.Tensor, positive_scores: torch.Tensor, args: MiningArguments
) -> torch.Tensor:
    """Which guard drops each candidate (a `CODE`), `ALIVE` for survivors, `PADDING` for empty slots; with the same
    comparisons, in the same order, as sentence-transformers."""
    scores = scores.clone()
    verdict = torch.full(scores.shape, ALIVE, dtype=torch.int8, device=scores.device)

    def drop(mask: torch.Tensor, bucket: str) -> None:
        newly = mask & (verdict == ALIVE)
        verdict[newly] = CODE[bucket]
        scores[newly] = -float("inf")

    padding = ranking.indices == -1
    verdict[padding] = PADDING
    scores[padding] = -float("inf")
    drop(ranking.indices == ranking.query_ids[:, None], "dropped_query_itself")
    known = [torch.tensor(ids, device=scores.device) for ids in ranking.positive_ids]
    drop(
        torch.stack([torch.isin(row, ids) for row, ids in zip(ranking.indices, known, strict=True)]),
        "dropped_known_positive",
    )
    hardest = _hardest_positives(ranking, positive_scores)[0][:, None]
    if args.mine_absolute_margin is not None:
        drop(scores + args.mine_absolute_margin > hardest, "dropped_absolute_margin")
    if args.mine_relative_margin is not None:
        drop(scores > hardest - hardest.abs() * args.mine_relative_margin, "dropped_relative_margin")
    if args.mine_max_score is not None:
        drop(scores > args.mine_max_score, "dropped_max_score")
    return verdict


def _select(verdict: torch.Tensor, ranking: _Ranking, settings: dict[str, Any]) -> _Selection:
    """Sort each query's survivors (best score first, dropped ones last), skip the first range_min, pick
    num_negatives, and mark every survivor's bucket in `verdict` (in place)."""
    range_min = settings["range_min"]
    guarded = ranking.scores.masked_fill(verdict != ALIVE, -float("inf"))
    ranked_scores, order = torch.topk(guarded, k=settings["range_max"], dim=1)
    in_window = torch.zeros_like(verdict, dtype=torch.bool).scatter_(1, order, True)
    verdict[(verdict == ALIVE) & ~in_window] = CODE["unused"]

    picks = _picked_positions(ranked_scores[:, range_min:], settings) + range_min
    picked_scores = ranked_scores.gather(1, picks)
    complete = picked_scores.isfinite().all(dim=1)
    ranked = verdict.gather(1, order)
    alive = ranked == ALIVE
    positions = torch.arange(ranked.size(1), device=ranked.device)
    ranked[alive & (positions < range_min)] = CODE["dropped_rank_window"]
    picked = torch.zeros_like(alive).scatter_(1, picks, True)
    alive = ranked == ALIVE
    ranked[alive & ~picked] = CODE["unused"]
    ranked[alive & picked & complete[:, None]] = CODE["kept"]
    ranked[alive & picked & ~complete[:, None]] = CODE["discarded_incomplete"]
    verdict.scatter_(1, order, ranked)
    return _Selection(order.gather(1, picks), complete)


def _picked_positions(window: torch.Tensor, settings: dict[str, Any]) -> torch.Tensor:
    """[queries, num_negatives] positions in each row of ranked scores after range_min, best score first: the first
    num_negatives ("top"), or `random.sample` over the surviving ones from a seeded generator ("random")."""
    num_negatives = settings["num_negatives"]
    if settings["sampling_strategy"] == "top":
        return torch.arange(num_negatives, device=window.device).expand(window.size(0), -1)
    options = (window.size(1) - window.isinf().sum(dim=1)).clamp(min=num_negatives).tolist()
    rng = random.Random(SEED)
    drawn = torch.tensor(
        [rng.sample(range(count), k=num_negatives) for count in options], dtype=torch.long, device=window.device
    ).reshape(window.size(0), num_negatives)
    order = window.gather(1, drawn).sort(dim=1, descending=True).indices
    return drawn.gather(1, order)


def _mined_rows(ranking: _Ranking, selection: _Selection, num_negatives: int) -> Dataset:
    """One row per (query, positive) of the queries that found all their negatives: anchor, positive, negative_1..n,
    in query order, a query's positives in the order of its rows."""
    columns: dict[str, list[str]] = {"anchor": [], "positive": []}
    columns.update({f"negative_{i}": [] for i in range(1, num_negatives + 1)})
    negative_ids = ranking.indices.gather(1, selection.slots).tolist()
    for row in selection.complete.nonzero().flatten().tolist():
        negatives = [ranking.corpus[index] for index in negative_ids[row]]
        for positive in ranking.positive_ids[row]:
            columns["anchor"].append(ranking.queries[row])
            columns["positive"].append(ranking.corpus[positive])
            for i, negative in enumerate(negatives, start=1):
                columns[f"negative_{i}"].append(negative)
    return Dataset.from_dict(columns)


def _counts(
    ranking: _Ranking, verdict: torch.Tensor, embedding_verdict: torch.Tensor | None, n_rows: int, n_mined: int
) -> dict[str, int]:
    """The buckets, the row totals, and how many score-guard drops only the cross-encoder's scores made."""
    incomplete = ((verdict == CODE["kept"]).sum(dim=1) == 0).tolist()
    counts = {
        "rows": n_rows,
        "duplicate_rows": n_rows - sum(ranking.n_positives),
        "rows_mined": n_mined,
        "rows_without_enough_negatives": sum(
            n for n, short in zip(ranking.n_positives, incomplete, strict=True) if short
        ),
        "queries": len(ranking.queries),
        "candidates": int((verdict != PADDING).sum()),
        **{bucket: int((verdict == CODE[bucket]).sum()) for bucket in BUCKETS},
        "dropped_by_cross_encoder_only": 0,
    }
    if embedding_verdict is not None:
        dropped = _in_buckets(verdict, SCORE_GUARDS) & ~_in_buckets(embedding_verdict, SCORE_GUARDS)
        counts["dropped_by_cross_encoder_only"] = int(dropped.sum())
    return counts


def _in_buckets(verdict: torch.Tensor, buckets: Sequence[str]) -> torch.Tensor:
    return torch.isin(
        verdict, torch.tensor([CODE[bucket] for bucket in buckets], dtype=verdict.dtype, device=verdict.device)
    )


def _dropped_sample(ranking: _Ranking, verdict: torch.Tensor) -> list[dict[str, Any]]:
    """Up to SAMPLE_SIZE heuristic drops, drawn with a fixed seed in row-major order, with the scores compared.

    Drawn as positions among the drops, so that no list of every drop (queries x candidates) is ever built."""
    dropped = _in_buckets(verdict, HEURISTIC_GUARDS)
    per_row = dropped.sum(dim=1)
    ends = per_row.cumsum(dim=0)
    total = int(ends[-1])
    hardest_scores, hardest_ids = _hardest_positives(ranking, ranking.positive_scores)
    sample = []
    for position in sorted(random.Random(SEED).sample(range(total), k=min(SAMPLE_SIZE, total))):
        row = int(torch.searchsorted(ends, position, right=True))
        slot = int(dropped[row].nonzero()[position - int(ends[row] - per_row[row])])
        sample.append(
            {
                "guard": BUCKETS[int(verdict[row, slot])],
                "query": ranking.queries[row],
                "positive": ranking.corpus[hardest_ids[row]],
                "positive_score": float(hardest_scores[row]),
                "candidate": ranking.corpus[int(ranking.indices[row, slot])],
                "candidate_score": float(ranking.scores[row, slot]),
                "embedding_rank": slot + 1,
            }
        )
    return sample
