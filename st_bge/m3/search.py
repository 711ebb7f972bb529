"""Exact search of BGE-M3's modes over a corpus: dense dot products, sparse products (scipy CSR), ColBERT
MeanMaxSim (exact, or re-ranking the dense and sparse candidates when the corpus' vectors do not fit), and each
query's candidates scored in every mode for the hybrid fusion. Plain {query id: {document id: score}} rankings;
`st_bge.evaluation.retrieval` turns them into ranx runs."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import scipy.sparse
import torch
from sentence_transformers.multi_vector_encoder import maxsim

from st_bge.bge import MODES
from st_bge.m3.embeddings import M3Embeddings
from st_bge.m3.model import BGEM3Model

logger = logging.getLogger(__name__)

SCORE_CHUNK_ELEMENTS = 50_000_000  # query x document scores held at once (200 MB of float32)
Rankings = dict[str, dict[str, float]]  # query id -> {document id: score}


@dataclass
class M3Rankings:
    """What `M3Search.run` found.

    Attributes:
        top: mode -> each query's top-k documents and scores.
        candidates: dense / sparse / ColBERT -> the scores of each query's candidates (the union of every mode's
            top-k) in that mode, what a hybrid fuses; empty unless "hybrid" was asked.
        colbert_search: "exact" or "rerank", if ColBERT was searched.
        top_k: The k of the search (the corpus size, if smaller than asked).
    """

    top: dict[str, Rankings]
    candidates: dict[str, Rankings]
    colbert_search: str | None
    top_k: int


class M3Search:
    """The exact search of every mode for one model, queries and corpus (`st_bge.evaluation.retrieval` describes
    each mode). `encode_corpus(modes)` encodes the corpus instead of `encode_m3` (e.g. through a cache)."""

    def __init__(
        self,
        model: BGEM3Model,
        queries: Mapping[str, str],
        corpus: Mapping[str, str],
        modes: Sequence[str],
        top_k: int,
        encode_corpus: Callable[[list[str]], M3Embeddings] | None = None,
        *,
        batch_size: int = 64,
        show_progress_bar: bool | None = None,
    ) -> None:
        self.model = model
        self.modes = list(modes)
        self.base_modes = [m for m in MODES if m in modes or ("hybrid" in modes and m in model.modes)]
        self.query_ids = list(queries)
        self.doc_ids = list(corpus)
        self.doc_texts = [corpus[doc_id] for doc_id in self.doc_ids]
        self.query_texts = [queries[query_id] for query_id in self.query_ids]
        self.top_k = min(top_k, len(self.doc_ids))
        self.encode_kwargs = {"batch_size": batch_size, "show_progress_bar": show_progress_bar}
        self.encode_corpus = encode_corpus

    def run(self, colbert_max_memory_mb: float = 4096) -> M3Rankings:
        exact_colbert = "colbert" in self.base_modes and self._colbert_fits(colbert_max_memory_mb)
        if "colbert" in self.base_modes and not exact_colbert:
            # Re-ranking needs the dense and sparse candidates: the same forward pass gives them.
            self.base_modes = [mode for mode in MODES if mode in self.model.modes]
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
        rankings = {mode: self._by_id(top[mode]) for mode in self.base_modes if mode in self.modes}
        candidates = {}
        if "hybrid" in self.modes:
            candidates = {
                mode: self._by_id([{i: scores[mode] for i, scores in query.items()} for query in candidate_scores])
                for mode in self.base_modes
            }
        return M3Rankings(rankings, candidates, colbert_search, self.top_k)

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
        if self.encode_corpus is not None:
            return self.encode_corpus(modes)
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

    def _by_id(self, rankings: list[dict[int, float]]) -> dict[str, dict[str, float]]:
        return {
            query_id: {self.doc_ids[i]: score for i, score in ranking.items()}
            for query_id, ranking in zip(self.query_ids, rankings, strict=True)
        }


def _to_csr(matrix: torch.Tensor) -> scipy.sparse.csr_matrix:
    """A torch sparse COO (rows, vocabulary) matrix as scipy CSR."""
    matrix = matrix.coalesce()
    rows, cols = matrix.indices().numpy()
    return scipy.sparse.csr_matrix(
        (matrix.values().numpy(), (rows, cols)), shape=tuple(matrix.size()), dtype=np.float32
    )
