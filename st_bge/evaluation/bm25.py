"""BM25 over a retrieval set's corpus: the lexical baseline every learned retriever should be compared with.

Scored with `bm25s` (Lucene's BM25 variant, k1 = 1.2 and b = 0.75 as Elasticsearch and BEIR's BM25 baseline use).
Texts are lower-cased and split into words; Chinese, Japanese and Korean characters, which are not separated by
spaces, are one token each, as Lucene's StandardAnalyzer does: a whole unsegmented sentence would otherwise be one
"word" that never matches.
"""

from __future__ import annotations

import re

import bm25s
import numpy as np
from ranx import Run

from st_bge.data.retrieval_set import RetrievalSet
from st_bge.evaluation.metrics import to_run

K1, B = 1.2, 0.75
# Han (with extensions A and the compatibility block), Hiragana, Katakana and Hangul syllables: one token a character.
_CJK = "\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af\uf900-\ufaff"
_TOKEN = re.compile(rf"[{_CJK}]|[^\W{_CJK}]+")


def tokenize(text: str) -> list[str]:
    """Lower-cased words, and single CJK characters."""
    return _TOKEN.findall(text.lower())


def bm25_run(retrieval_set: RetrievalSet, *, top_k: int = 100, name: str = "bm25") -> Run:
    """BM25's ranking of the corpus for every query; documents sharing no token with the query are not retrieved."""
    doc_ids = list(retrieval_set.corpus)
    retriever = bm25s.BM25(k1=K1, b=B)
    retriever.index([tokenize(retrieval_set.corpus[doc_id]) for doc_id in doc_ids], show_progress=False)
    query_ids = list(retrieval_set.queries)
    query_tokens = [tokenize(retrieval_set.queries[query_id]) or [""] for query_id in query_ids]
    indices, scores = retriever.retrieve(query_tokens, k=min(top_k, len(doc_ids)), show_progress=False, n_threads=1)
    run = {}
    for query_id, row_indices, row_scores in zip(query_ids, indices, scores, strict=True):
        keep = np.asarray(row_scores) > 0
        run[query_id] = {doc_ids[i]: float(s) for i, s in zip(row_indices[keep], row_scores[keep], strict=True)}
    return to_run(run, name=name)
