"""Error analysis: which queries got better or worse, and how each failing query fails.

Failure classes of one model's run (a query can be in several):
- `no_relevant_in_top_10`: no relevant document among the first 10;
- `first_relevant_below_rank_3`: the first relevant document is in the top 10 but below rank 3;
- `under_half_relevant_found`: fewer than half of the relevant documents are in the retrieved top-k.
`failures.csv` lists every failing query with its first relevant rank and the top-ranked wrong document, so a
person can read what went wrong.
"""

from __future__ import annotations

import csv
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from ranx import Run

from st_bge.data.retrieval_set import RetrievalSet

FAILURE_CLASSES = ("no_relevant_in_top_10", "first_relevant_below_rank_3", "under_half_relevant_found")


@dataclass
class QueryOutcome:
    """How one query fared in one run."""

    query_id: str
    first_relevant_rank: int | None  # 1-based, None if no relevant document was retrieved
    relevant_found: int
    relevant_total: int
    top_wrong_doc_id: str | None
    failures: list[str] = field(default_factory=list)


def analyse_run(retrieval_set: RetrievalSet, run: Run) -> list[QueryOutcome]:
    """The outcome of every judged query of `retrieval_set` in `run`."""
    ranked_by_query = run.to_dict()
    outcomes = []
    for query_id, judgements in retrieval_set.qrels.items():
        relevant = {doc_id for doc_id, grade in judgements.items() if grade > 0}
        scores = ranked_by_query.get(query_id, {})
        ranking = sorted(scores, key=scores.__getitem__, reverse=True)
        ranks = [rank for rank, doc_id in enumerate(ranking, start=1) if doc_id in relevant]
        first = ranks[0] if ranks else None
        outcome = QueryOutcome(
            query_id=query_id,
            first_relevant_rank=first,
            relevant_found=len(ranks),
            relevant_total=len(relevant),
            top_wrong_doc_id=next((doc_id for doc_id in ranking if doc_id not in relevant), None),
        )
        if first is None or first > 10:
            outcome.failures.append("no_relevant_in_top_10")
        elif first > 3:
            outcome.failures.append("first_relevant_below_rank_3")
        if len(ranks) < len(relevant) / 2:
            outcome.failures.append("under_half_relevant_found")
        outcomes.append(outcome)
    return outcomes


def failure_counts(outcomes: list[QueryOutcome]) -> dict[str, int]:
    """Queries per failure class (every class present, zeros included)."""
    counts = Counter(failure for outcome in outcomes for failure in outcome.failures)
    return {name: counts[name] for name in FAILURE_CLASSES}


def per_query_deltas(base: dict[str, float], other: dict[str, float]) -> list[tuple[str, float, float, float]]:
    """(query_id, base score, other score, delta) for every query, worst regression first."""
    rows = [(qid, base[qid], other[qid], other[qid] - base[qid]) for qid in base]
    return sorted(rows, key=lambda row: (row[3], row[0]))


def write_failures_csv(path: str | Path, retrieval_set: RetrievalSet, outcomes: list[QueryOutcome]) -> int:
    """Write the failing queries with their texts; returns how many were written."""
    failing = [outcome for outcome in outcomes if outcome.failures]
    with open(path, "w", newline="", encoding="utf-8") as file:
        writer = csv.writer(file)
        writer.writerow(
            [
                "query_id",
                "failures",
                "first_relevant_rank",
                "relevant_found",
                "relevant_total",
                "query",
                "top_wrong_doc_id",
                "top_wrong_doc",
                "relevant_doc_ids",
            ]
        )
        for outcome in failing:
            wrong = outcome.top_wrong_doc_id
            relevant = [d for d, g in retrieval_set.qrels[outcome.query_id].items() if g > 0]
            writer.writerow(
                [
                    outcome.query_id,
                    ";".join(outcome.failures),
                    outcome.first_relevant_rank or "",
                    outcome.relevant_found,
                    outcome.relevant_total,
                    retrieval_set.queries[outcome.query_id],
                    wrong or "",
                    retrieval_set.corpus[wrong] if wrong else "",
                    ";".join(relevant),
                ]
            )
    return len(failing)
