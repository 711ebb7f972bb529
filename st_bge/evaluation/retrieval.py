"""Retrieval for evaluation: encode queries and corpus, search the whole corpus exactly, one ranx Run per mode.

Modes: `dense` (any Sentence Transformer) and, for a BGE-M3 (`st_bge.m3.BGEM3Model`), `sparse`, `colbert` and their
fusion `hybrid`. One forward pass per text gives every mode.

- dense: dot products of the (normalised) embeddings, in chunks of queries (`semantic_search` for plain models).
- sparse: lexical matching scores as a sparse matrix product (scipy CSR), never a documents x vocabulary dense
  matrix (BGE-M3's vocabulary is 250k); a document sharing no token with the query is not retrieved.
- colbert: MeanMaxSim against every document, exactly, when the corpus' token vectors fit in
  `colbert_max_memory_mb`; otherwise the union of the dense and sparse top-k of each query is re-scored (those
  documents are encoded a second time, ColBERT only). `ModeRuns.colbert_search` says which.
- hybrid: `ranx.fuse` (weighted sum of raw scores, M3's 1 : 0.3 : 1 for dense : sparse : ColBERT by default) over
  each query's candidates, the union of every mode's top-k, scored in every mode: the weighted sum of the exact
  scores there, as BGE-M3 defines its hybrid score.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from ranx import Qrels, Run, fuse, optimize_fusion
from sentence_transformers import SentenceTransformer
from sentence_transformers.util import semantic_search

from st_bge.bge import ENSEMBLE_WEIGHTS, MODES
from st_bge.data.retrieval_set import RetrievalSet
from st_bge.evaluation.cache import EmbeddingCache
from st_bge.evaluation.metrics import quiet_numba, to_run
from st_bge.m3 import BGEM3Model, M3Embeddings
from st_bge.m3.search import M3Search

logger = logging.getLogger(__name__)


def model_modes(model: SentenceTransformer) -> list[str]:
    """The retrieval modes `model` can be evaluated in: dense, the modes of its M3 heads, and hybrid."""
    modes = model.modes if isinstance(model, BGEM3Model) else ["dense"]
    return [*modes, "hybrid"] if len(modes) > 1 else modes


@dataclass
class ModeRuns:
    """A model's runs on one retrieval set, one per mode.

    Attributes:
        runs: mode -> the top-k run.
        candidates: dense / sparse / ColBERT -> scores of each query's candidates (the union of every mode's top-k),
            what `hybrid` fuses; empty without hybrid.
        colbert_search: "exact" (the whole corpus) or "rerank" (the dense and sparse top-k), if ColBERT was run.
        hybrid_weights: The weights (dense, sparse, ColBERT) the hybrid run fused with, if there is one.
    """

    runs: dict[str, Run]
    candidates: dict[str, Run] = field(default_factory=dict)
    colbert_search: str | None = None
    hybrid_weights: list[float] | None = None

    def set_hybrid_weights(self, weights: Sequence[float], top_k: int) -> None:
        """Fuse the hybrid run again with other `weights` (e.g. tuned on a dev split)."""
        self.runs["hybrid"] = fuse_modes(self.candidates, weights, top_k)
        self.hybrid_weights = list(weights)


def mode_notes(runs: Mapping[str, ModeRuns], top_k: int) -> list[str]:
    """Lines for a results table on how the ColBERT and hybrid runs of these models (name -> runs) were made."""
    notes = []
    searches = {mode_runs.colbert_search for mode_runs in runs.values()} - {None}
    if "exact" in searches:
        notes.append("colbert: MeanMaxSim against every document of the corpus (exact search).")
    if "rerank" in searches:
        notes.append(
            f"colbert: re-ranks each query's dense and sparse top-{top_k} (the corpus' ColBERT vectors did not fit in "
            "eval_colbert_max_memory_mb)."
        )
    weights = {name: mode_runs.hybrid_weights for name, mode_runs in runs.items() if mode_runs.hybrid_weights}
    if weights:
        described = {name: " : ".join(f"{w:g}" for w in values) for name, values in weights.items()}
        text = (
            next(iter(described.values()))
            if len(set(described.values())) == 1
            else ", ".join(f"{name} {value}" for name, value in described.items())
        )
        notes.append(
            f"hybrid: ranx.fuse, weighted sum of raw dense : sparse : ColBERT scores ({text}) over each query's "
            f"candidates (the union of every mode's top-{top_k})."
        )
    return notes


def retrieve(
    model: SentenceTransformer,
    retrieval_set: RetrievalSet,
    *,
    top_k: int = 100,
    batch_size: int = 64,
    show_progress_bar: bool | None = None,
    name: str | None = None,
    cache: EmbeddingCache | None = None,
) -> Run:
    """Dense retrieval: rank the corpus for every query of `retrieval_set`, keeping the `top_k` best per query.

    Queries go through `encode_query` and documents through `encode_document`, so the model's own prompts
    (e.g. BGE's query instruction) apply exactly as they will for users. Scores use the model's similarity
    function; the search runs in chunks (`semantic_search`: 100 queries x 500k documents at a time), so a large
    corpus never needs a full query x corpus matrix. With a `cache`, corpus embeddings are read from disk when
    this model has encoded this corpus before.
    """
    query_ids = list(retrieval_set.queries)
    doc_ids = list(retrieval_set.corpus)
    encode_kwargs = {"batch_size": batch_size, "show_progress_bar": show_progress_bar}
    query_texts = [retrieval_set.queries[qid] for qid in query_ids]
    query_embeddings = model.encode_query(query_texts, convert_to_tensor=True, **encode_kwargs)
    doc_texts = [retrieval_set.corpus[did] for did in doc_ids]
    if cache is None:
        doc_embeddings = model.encode_document(doc_texts, convert_to_tensor=True, **encode_kwargs)
    else:
        doc_embeddings = cache.encode_documents(model, doc_ids, doc_texts, **encode_kwargs).to(query_embeddings.device)
    hits = semantic_search(
        query_embeddings, doc_embeddings, top_k=min(top_k, len(doc_ids)), score_function=model.similarity
    )
    scores = {
        qid: {doc_ids[hit["corpus_id"]]: hit["score"] for hit in query_hits}
        for qid, query_hits in zip(query_ids, hits, strict=True)
    }
    return to_run(scores, name=name)


def retrieve_modes(
    model: SentenceTransformer,
    retrieval_set: RetrievalSet,
    modes: Sequence[str] | None = None,
    *,
    top_k: int = 100,
    batch_size: int = 64,
    show_progress_bar: bool | None = None,
    cache: EmbeddingCache | None = None,
    hybrid_weights: Sequence[float] = ENSEMBLE_WEIGHTS,
    colbert_max_memory_mb: float = 4096,
) -> ModeRuns:
    """The runs of `model` on `retrieval_set` in each of `modes` (default: every mode it has, `model_modes`)."""
    available = model_modes(model)
    modes = list(modes or available)
    missing = [mode for mode in modes if mode not in available]
    if missing:
        raise ValueError(f"the model cannot be evaluated in mode(s) {missing}: it has {available}")
    if modes == ["dense"]:
        kwargs = {"top_k": top_k, "batch_size": batch_size, "show_progress_bar": show_progress_bar, "cache": cache}
        return ModeRuns(runs={"dense": retrieve(model, retrieval_set, **kwargs)})
    encode_kwargs = {"batch_size": batch_size, "show_progress_bar": show_progress_bar}
    encode_corpus = None
    if cache is not None:
        doc_ids, doc_texts = list(retrieval_set.corpus), list(retrieval_set.corpus.values())

        def encode_corpus(modes: list[str]) -> M3Embeddings:
            return cache.encode_m3_documents(model, doc_ids, doc_texts, modes, **encode_kwargs)

    search = M3Search(model, retrieval_set.queries, retrieval_set.corpus, modes, top_k, encode_corpus, **encode_kwargs)
    rankings = search.run(colbert_max_memory_mb)
    runs = {mode: to_run(ranking, name=mode) for mode, ranking in rankings.top.items() if mode in modes}
    candidates = {mode: to_run(scores, name=mode) for mode, scores in rankings.candidates.items()}
    if "hybrid" in modes:
        runs["hybrid"] = fuse_modes(candidates, hybrid_weights, rankings.top_k)
    return ModeRuns(
        runs={mode: runs[mode] for mode in modes},
        candidates=candidates,
        colbert_search=rankings.colbert_search,
        hybrid_weights=list(hybrid_weights) if "hybrid" in modes else None,
    )


def fuse_modes(candidates: dict[str, Run], weights: Sequence[float], top_k: int, name: str = "hybrid") -> Run:
    """`ranx.fuse` of the candidates' raw scores, weighted (dense, sparse, ColBERT order), cut to the top k."""
    runs = [candidates[mode] for mode in MODES if mode in candidates]
    chosen = [weight for mode, weight in zip(MODES, weights, strict=True) if mode in candidates]
    with quiet_numba():
        fused = fuse(runs, norm=None, method="wsum", params={"weights": list(chosen)})
    ranked = {
        query_id: dict(sorted(docs.items(), key=lambda item: -item[1])[:top_k])
        for query_id, docs in fused.to_dict().items()
    }
    return to_run(ranked, name=name)


def optimize_hybrid_weights(qrels: Qrels, candidates: dict[str, Run], metric: str) -> list[float]:
    """The weights (dense, sparse, ColBERT order) that maximise `metric` on `qrels`, by `ranx.optimize_fusion`'s
    grid search of the weighted sum; a mode the candidates lack gets weight 0."""
    modes = [mode for mode in MODES if mode in candidates]
    queries = set(qrels.keys())
    runs = [to_run({q: d for q, d in candidates[mode].to_dict().items() if q in queries}) for mode in modes]
    with quiet_numba():
        best = optimize_fusion(qrels, runs, norm=None, method="wsum", metric=metric)
    weights = dict(zip(modes, best["weights"], strict=True))
    return [float(weights.get(mode, 0.0)) for mode in MODES]
