"""Dense retrieval for evaluation: encode queries and corpus with the model, exact top-k search -> ranx Run."""

from __future__ import annotations

import logging

from ranx import Run
from sentence_transformers import SentenceTransformer
from sentence_transformers.util import semantic_search

from st_bge.data.retrieval_set import RetrievalSet
from st_bge.evaluation.cache import EmbeddingCache
from st_bge.evaluation.metrics import to_run

logger = logging.getLogger(__name__)


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
    """Rank the corpus for every query of `retrieval_set` with `model`, keeping the `top_k` best per query.

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
