"""Which generated queries are worth training on: each filter counts what it drops and keeps a sample of it.

In order: length bounds, a query that is its passage (after `normalise`), exact and normalised duplicates (a
query written for two passages, or twice for one, is kept the first time only), then round-trip consistency
(Promptagator, InPars): the base model (or `synth_filter_model`), optionally with a cross-encoder reranking its
candidates, must rank the query's own passage among the top `synth_filter_top_k` of the whole corpus.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import torch

from st_bge.config import SynthArguments
from st_bge.data.text import normalise
from st_bge.synthesis.passages import Passage

logger = logging.getLogger(__name__)

SAMPLE_SIZE = 5
EXCERPT_CHARS = 200
FILTERS = ("too_short", "too_long", "copy_of_passage", "exact_duplicate", "normalised_duplicate", "round_trip")


@dataclass(frozen=True)
class Candidate:
    """A generated query, its passage and the text it is trained against (ICT: the passage without the query)."""

    passage_id: str
    query: str
    positive: str


@dataclass
class FilterLog:
    """Drops per filter (in `FILTERS` order) and a sample of each, for the report."""

    dropped: dict[str, int] = field(default_factory=lambda: dict.fromkeys(FILTERS, 0))
    samples: dict[str, list[dict[str, object]]] = field(default_factory=dict)

    def drop(self, reason: str, candidate: Candidate, passage: Passage, **detail: object) -> None:
        self.dropped[reason] += 1
        sample = self.samples.setdefault(reason, [])
        if len(sample) < SAMPLE_SIZE:
            sample.append({"query": candidate.query, "passage": passage.text[:EXCERPT_CHARS], **detail})


def text_filters(
    candidates: list[Candidate], passages: dict[str, Passage], args: SynthArguments, log: FilterLog
) -> list[Candidate]:
    """Length bounds, copies of the passage and duplicates (exact first, then after `normalise`)."""
    kept, exact, normalised = [], set(), set()
    for candidate in candidates:
        passage = passages[candidate.passage_id]
        key = normalise(candidate.query)
        if len(candidate.query) < args.synth_min_query_chars:
            log.drop("too_short", candidate, passage, chars=len(candidate.query))
        elif len(candidate.query) > args.synth_max_query_chars:
            log.drop("too_long", candidate, passage, chars=len(candidate.query))
        elif key == normalise(passage.text):
            log.drop("copy_of_passage", candidate, passage)
        elif candidate.query in exact:
            log.drop("exact_duplicate", candidate, passage)
        elif key in normalised:
            log.drop("normalised_duplicate", candidate, passage)
        else:
            kept.append(candidate)
        exact.add(candidate.query)
        normalised.add(key)
    return kept


def round_trip(
    candidates: list[Candidate],
    corpus: list[Passage],
    retriever,
    args: SynthArguments,
    log: FilterLog,
    cross_encoder=None,
) -> list[Candidate]:
    """Keep a candidate if its own passage ranks within `synth_filter_top_k` of `corpus` for it.

    The retriever ranks by `encode_query` / `encode_document` and its own similarity (prompts and pooling as it was
    trained); ties count in the passage's favour. With a cross-encoder, the retriever's top `synth_filter_candidates`
    are reranked by it, and a passage the retriever did not put there is dropped.
    """
    if not candidates:
        return []
    index = {passage.id: position for position, passage in enumerate(corpus)}
    documents = retriever.encode_document(
        [passage.text for passage in corpus],
        batch_size=args.synth_batch_size,
        convert_to_tensor=True,
        show_progress_bar=True,
    )
    queries = retriever.encode_query(
        [c.query for c in candidates], batch_size=args.synth_batch_size, convert_to_tensor=True, show_progress_bar=True
    )
    own = torch.tensor([index[c.passage_id] for c in candidates], device=documents.device)
    ranks, tops = [], []
    for start in range(0, len(candidates), 1024):  # a block of queries x the whole corpus at a time
        scores = retriever.similarity(queries[start : start + 1024], documents)
        own_scores = scores.gather(1, own[start : start + 1024, None])
        ranks += (scores > own_scores).sum(dim=1).tolist()
        if cross_encoder is not None:
            tops += scores.topk(min(args.synth_filter_candidates, len(corpus)), dim=1).indices.tolist()
    if cross_encoder is not None:
        ranks = _reranked_ranks(cross_encoder, candidates, corpus, tops, own.tolist(), args.synth_batch_size)
    kept = []
    for candidate, rank in zip(candidates, ranks, strict=True):
        if rank is not None and rank < args.synth_filter_top_k:
            kept.append(candidate)
        else:
            shown = rank + 1 if rank is not None else f"> {args.synth_filter_candidates}"
            log.drop("round_trip", candidate, corpus[index[candidate.passage_id]], rank=shown)
    return kept


def _reranked_ranks(
    cross_encoder,
    candidates: list[Candidate],
    corpus: list[Passage],
    tops: list[list[int]],
    own: list[int],
    batch_size: int,
) -> list[int | None]:
    """Each own passage's 0-based rank among the retriever's candidates reranked by the cross-encoder (None: the
    retriever did not put it among them). One `predict` over every pair, so the cross-encoder runs in full batches."""
    pairs = [(c.query, corpus[position].text) for c, top in zip(candidates, tops, strict=True) for position in top]
    scores = cross_encoder.predict(pairs, batch_size=batch_size, show_progress_bar=True).tolist() if pairs else []
    ranks: list[int | None] = []
    for number, (top, own_position) in enumerate(zip(tops, own, strict=True)):
        block = scores[number * len(top) : (number + 1) * len(top)]
        ranks.append(sum(score > block[top.index(own_position)] for score in block) if own_position in top else None)
    return ranks
