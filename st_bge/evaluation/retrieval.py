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

import numpy as np
import scipy.sparse
import torch
from ranx import Qrels, Run, fuse, optimize_fusion
from sentence_transformers import SentenceTransformer
from sentence_transformers.multi_vector_encoder import maxsim
from sentence_transformers.util import semantic_search

from st_bge.bge import ENSEMBLE_WEIGHTS, MODES
from st_bge.data.retrieval_set import RetrievalSet
from st_bge.evaluation.cache import EmbeddingCache
from st_bge.evaluation.metrics import quiet_numba, to_run
from st_bge.m3 import BGEM3Model, M3Embeddings

logger = logging.getLogger(__name__)

BASE_MODES = MODES
SCORE_CHUNK_ELEMENTS = 50_000_000  # query x document scores held at once (200 MB of float32)


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
    return _M3Search(model, retrieval_set, modes, top_k, batch_size, show_progress_bar, cache).run(
        hybrid_weights, colbert_max_memory_mb
    )


def fuse_modes(candidates: dict[str, Run], weights: Sequence[float], top_k: int, name: str = "hybrid") -> Run:
    """`ranx.fuse` of the candidates' raw scores, weighted (dense, sparse, ColBERT order), cut to the top k."""
    runs = [candidates[mode] for mode in BASE_MODES if mode in candidates]
    chosen = [weight for mode, weight in zip(BASE_MODES, weights, strict=True) if mode in candidates]
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
    modes = [mode for mode in BASE_MODES if mode in candidates]
    queries = set(qrels.keys())
    runs = [to_run({q: d for q, d in candidates[mode].to_dict().items() if q in queries}) for mode in modes]
    with quiet_numba():
        best = optimize_fusion(qrels, runs, norm=None, method="wsum", metric=metric)
    weights = dict(zip(modes, best["weights"], strict=True))
    return [float(weights.get(mode, 0.0)) for mode in BASE_MODES]


class _M3Search:
    """The exact search of every mode for one model and retrieval set (see the module docstring)."""

    def __init__(
        self,
        model: BGEM3Model,
        retrieval_set: RetrievalSet,
        modes: list[str],
        top_k: int,
        batch_size: int,
        show_progress_bar: bool | None,
        cache: EmbeddingCache | None,
    ) -> None:
        self.model = model
        self.modes = modes
        self.base_modes = [m for m in BASE_MODES if m in modes or ("hybrid" in modes and m in model.modes)]
        self.query_ids = list(retrieval_set.queries)
        self.doc_ids = list(retrieval_set.corpus)
        self.doc_texts = [retrieval_set.corpus[doc_id] for doc_id in self.doc_ids]
        self.query_texts = [retrieval_set.queries[query_id] for query_id in self.query_ids]
        self.top_k = min(top_k, len(self.doc_ids))
        self.encode_kwargs = {"batch_size": batch_size, "show_progress_bar": show_progress_bar}
        self.cache = cache

    def run(self, hybrid_weights: Sequence[float], colbert_max_memory_mb: float) -> ModeRuns:
        exact_colbert = "colbert" in self.base_modes and self._colbert_fits(colbert_max_memory_mb)
        if "colbert" in self.base_modes and not exact_colbert:
            # Re-ranking needs the dense and sparse candidates: the same forward pass gives them.
            self.base_modes = [mode for mode in BASE_MODES if mode in self.model.modes]
        queries = self.model.encode_m3(
            self.query_texts, prompt_name="query", modes=self.base_modes, **self.encode_kwargs
        )
        corpus_modes = [m for m in self.base_modes if m != "colbert" or exact_colbert]
        documents = self._encode_corpus(corpus_modes)
        top, candidate_scores = self._search(queries, documents)
        colbert_search = None
        if "colbert" in self.base_modes:
            colbert_search = "exact" if exact_colbert else "rerank"
            if not exact_colbert:
                self._rerank_colbert(queries, top, candidate_scores)
        runs = {mode: self._run(top[mode], mode) for mode in self.base_modes if mode in self.modes}
        candidates = {}
        if "hybrid" in self.modes:
            candidates = {mode: self._candidate_run(candidate_scores, mode) for mode in self.base_modes}
            runs["hybrid"] = fuse_modes(candidates, hybrid_weights, self.top_k)
        return ModeRuns(
            runs={mode: runs[mode] for mode in self.modes},
            candidates=candidates,
            colbert_search=colbert_search,
            hybrid_weights=list(hybrid_weights) if "hybrid" in self.modes else None,
        )

    def _colbert_fits(self, max_memory_mb: float) -> bool:
        """Whether every document's ColBERT vectors (float32) fit in `max_memory_mb`; counted from token lengths."""
        tokenizer = self.model.tokenizer
        lengths = tokenizer(self.doc_texts, truncation=True, max_length=self.model.max_seq_length, return_length=True)
        vectors = sum(length - 1 for length in lengths["length"])  # CLS has no ColBERT vector
        megabytes = vectors * self.model.colbert_dim * 4 / 2**20
        if megabytes > max_memory_mb:
            logger.info(
                "ColBERT: the corpus' token vectors need %.0f MB > colbert_max_memory_mb %s: re-ranking the dense "
                "and sparse top-%d instead of searching the whole corpus",
                megabytes,
                max_memory_mb,
                self.top_k,
            )
            return False
        return True

    def _encode_corpus(self, modes: list[str]) -> M3Embeddings:
        if self.cache is not None:
            return self.cache.encode_m3_documents(
                self.model, self.doc_ids, self.doc_texts, modes, **self.encode_kwargs
            )
        return self.model.encode_m3(self.doc_texts, prompt_name="document", modes=modes, **self.encode_kwargs)

    def _search(
        self, queries: M3Embeddings, documents: M3Embeddings
    ) -> tuple[dict[str, list[dict[int, float]]], list[dict[int, dict[str, float]]]]:
        """Per mode the top-k {doc index: score} of each query, and each query's candidates' scores in every mode."""
        modes = documents.modes
        top: dict[str, list[dict[int, float]]] = {mode: [] for mode in self.base_modes}
        candidates: list[dict[int, dict[str, float]]] = []
        doc_sparse = _to_csr(documents.sparse).T.tocsr() if documents.sparse is not None else None
        chunk = max(1, SCORE_CHUNK_ELEMENTS // len(self.doc_ids))
        for start in range(0, len(self.query_ids), chunk):
            rows = range(start, min(start + chunk, len(self.query_ids)))
            scores = {}
            if "dense" in modes:
                scores["dense"] = queries.dense[start : rows.stop] @ documents.dense.T
            if "sparse" in modes:
                product = _to_csr(queries.sparse.index_select(0, torch.arange(start, rows.stop))) @ doc_sparse
                scores["sparse"] = torch.from_numpy(product.toarray())
            if "colbert" in modes:
                scores["colbert"] = maxsim(
                    queries.colbert[start : rows.stop], documents.colbert, length_normalize=True
                )
            for mode, matrix in scores.items():
                values, indices = matrix.topk(self.top_k, dim=1)
                for row_values, row_indices in zip(values.tolist(), indices.tolist(), strict=True):
                    kept = {i: v for i, v in zip(row_indices, row_values, strict=True) if mode != "sparse" or v > 0}
                    top[mode].append(kept)
            for offset in range(len(rows)):
                union = sorted({i for mode in scores for i in top[mode][start + offset]})
                candidates.append({i: {mode: float(scores[mode][offset, i]) for mode in scores} for i in union})
        return top, candidates

    def _rerank_colbert(
        self,
        queries: M3Embeddings,
        top: dict[str, list[dict[int, float]]],
        candidates: list[dict[int, dict[str, float]]],
    ) -> None:
        """ColBERT scores of each query's dense + sparse candidates, the only documents encoded for ColBERT."""
        pool = sorted({i for query_candidates in candidates for i in query_candidates})
        vectors = self.model.encode_m3(
            [self.doc_texts[i] for i in pool], prompt_name="document", modes=["colbert"], **self.encode_kwargs
        ).colbert
        by_doc = dict(zip(pool, vectors, strict=True))
        for query_index, query_candidates in enumerate(candidates):
            doc_indices = sorted(query_candidates)
            scores = maxsim([queries.colbert[query_index]], [by_doc[i] for i in doc_indices], length_normalize=True)[0]
            for i, score in zip(doc_indices, scores.tolist(), strict=True):
                query_candidates[i]["colbert"] = score
            best = sorted(zip(doc_indices, scores.tolist(), strict=True), key=lambda item: -item[1])[: self.top_k]
            top["colbert"].append(dict(best))

    def _run(self, rankings: list[dict[int, float]], mode: str) -> Run:
        return to_run(
            {
                qid: {self.doc_ids[i]: s for i, s in ranking.items()}
                for qid, ranking in zip(self.query_ids, rankings, strict=True)
            },
            name=mode,
        )

    def _candidate_run(self, candidates: list[dict[int, dict[str, float]]], mode: str) -> Run:
        return to_run(
            {
                qid: {self.doc_ids[i]: scores[mode] for i, scores in query_candidates.items()}
                for qid, query_candidates in zip(self.query_ids, candidates, strict=True)
            },
            name=mode,
        )


def _to_csr(matrix: torch.Tensor) -> scipy.sparse.csr_matrix:
    """A torch sparse COO (rows, vocabulary) matrix as scipy CSR."""
    matrix = matrix.coalesce()
    rows, cols = matrix.indices().numpy()
    return scipy.sparse.csr_matrix(
        (matrix.values().numpy(), (rows, cols)), shape=tuple(matrix.size()), dtype=np.float32
    )
