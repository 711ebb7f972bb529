"""Sparse, ColBERT, hybrid and BM25 retrieval against rankings computed by hand on a small corpus."""

from __future__ import annotations

import math

import pytest
import torch

from st_bge.data import RetrievalSet
from st_bge.evaluation.bm25 import K1, B, bm25_run, tokenize
from st_bge.evaluation.metrics import to_qrels
from st_bge.evaluation.retrieval import optimize_hybrid_weights, retrieve_modes
from st_bge.m3 import BGEM3Model, M3Embeddings

# Every text's representations, chosen so that each mode ranks differently and every score is easy by hand.
DENSE = {
    "q1": [1, 0],
    "q2": [0, 1],
    "d1": [1, 0],
    "d2": [0.6, 0.8],
    "d3": [0, 1],
    "d4": [-1, 0],
    "d5": [-0.6, -0.8],
}
SPARSE = {  # token id -> weight
    "q1": {5: 1.0, 7: 2.0},
    "q2": {11: 0.5},
    "d1": {5: 0.5},
    "d2": {7: 1.0, 9: 3.0},
    "d3": {5: 1.0, 7: 1.0},
    "d4": {11: 4.0},
    "d5": {},
}
COLBERT = {
    "q1": [[1, 0], [0, 1]],
    "q2": [[0, 1]],
    "d1": [[1, 0]],
    "d2": [[0.6, 0.8]],
    "d3": [[1, 0], [0, 1]],
    "d4": [[-1, 0]],
    "d5": [[0, -1]],
}
# By hand: dense = dot product; sparse = sum over shared ids of w_q * w_d (0: not retrieved); ColBERT = mean over the
# query's vectors of the best dot product with a document vector.
EXPECTED = {
    "dense": {
        "q1": {"d1": 1, "d2": 0.6, "d3": 0, "d4": -1, "d5": -0.6},
        "q2": {"d3": 1, "d2": 0.8, "d1": 0, "d4": 0, "d5": -0.8},
    },
    "sparse": {"q1": {"d3": 3, "d2": 2, "d1": 0.5}, "q2": {"d4": 2}},
    "colbert": {
        "q1": {"d3": 1, "d2": 0.7, "d1": 0.5, "d4": -0.5, "d5": -0.5},
        "q2": {"d3": 1, "d2": 0.8, "d1": 0, "d4": 0, "d5": -1},
    },
}
WEIGHTS = (1.0, 0.4, 1.0)


def hybrid(query: str, doc: str) -> float:
    scores = [EXPECTED[mode][query].get(doc, 0.0) for mode in ("dense", "sparse", "colbert")]
    return sum(w * s for w, s in zip(WEIGHTS, scores, strict=True))


TOY = RetrievalSet(
    queries={"q1": "q1", "q2": "q2"},
    corpus={f"d{i}": f"d{i}" for i in range(1, 6)},
    qrels={"q1": {"d3": 1}, "q2": {"d4": 1}},
    name="toy",
)


@pytest.fixture
def stub_m3(tiny_xlmr_path, monkeypatch):
    """The tiny BGE-M3 with `encode_m3` answering from the tables above; records what it was asked to encode."""
    model = BGEM3Model(str(tiny_xlmr_path))
    calls = []

    def encode_m3(texts, *, modes=None, **kwargs):
        calls.append((list(texts), list(modes)))
        rows, ids, values = [], [], []
        for row, text in enumerate(texts):
            for token_id, weight in SPARSE[text].items():
                rows.append(row), ids.append(token_id), values.append(weight)
        sparse = torch.sparse_coo_tensor([rows, ids], values, (len(texts), model.vocab_size)).coalesce()
        return M3Embeddings(
            dense=torch.tensor([DENSE[t] for t in texts], dtype=torch.float) if "dense" in modes else None,
            sparse=sparse if "sparse" in modes else None,
            colbert=[torch.tensor(COLBERT[t], dtype=torch.float) for t in texts] if "colbert" in modes else None,
        )

    monkeypatch.setattr(model, "encode_m3", encode_m3)
    model.calls = calls
    return model


def as_dict(run) -> dict[str, dict[str, float]]:
    return {query: dict(docs) for query, docs in run.to_dict().items()}


def assert_run(run, expected: dict[str, dict[str, float]]) -> None:
    """The run holds exactly the expected documents per query, with the expected scores (float32 sums)."""
    got = as_dict(run)
    assert got.keys() == expected.keys()
    for query, docs in expected.items():
        assert got[query] == pytest.approx(docs), query


def test_every_mode_ranks_the_whole_corpus_as_computed_by_hand(stub_m3):
    result = retrieve_modes(stub_m3, TOY, top_k=5, hybrid_weights=WEIGHTS)
    assert list(result.runs) == ["dense", "sparse", "colbert", "hybrid"] and result.colbert_search == "exact"
    for mode, expected in EXPECTED.items():
        assert_run(result.runs[mode], expected)
    # Hybrid: over each query's candidates (here the whole corpus), the weighted sum of the three exact scores.
    expected_hybrid = {q: {d: hybrid(q, d) for d in TOY.corpus} for q in TOY.queries}
    assert_run(result.runs["hybrid"], expected_hybrid)
    ranking = sorted(expected_hybrid["q1"], key=expected_hybrid["q1"].get, reverse=True)
    assert ranking == ["d3", "d2", "d1", "d5", "d4"]  # d5 (-1.1) above d4 (-1.5)
    # One encoding of the queries and one of the corpus, all modes at once.
    assert [texts for texts, _ in stub_m3.calls] == [["q1", "q2"], ["d1", "d2", "d3", "d4", "d5"]]


def test_top_k_cuts_each_mode(stub_m3):
    result = retrieve_modes(stub_m3, TOY, ["sparse", "colbert"], top_k=2)
    assert_run(result.runs["sparse"], {"q1": {"d3": 3, "d2": 2}, "q2": {"d4": 2}})
    assert_run(result.runs["colbert"], {"q1": {"d3": 1, "d2": 0.7}, "q2": {"d3": 1, "d2": 0.8}})


def test_colbert_reranks_the_dense_and_sparse_candidates_when_the_corpus_does_not_fit(stub_m3):
    result = retrieve_modes(stub_m3, TOY, ["colbert", "hybrid"], top_k=2, colbert_max_memory_mb=0)
    assert result.colbert_search == "rerank"
    # q1: dense top 2 {d1, d2} + sparse top 2 {d3, d2}; q2: dense {d3, d2} + sparse {d4} (the only one sharing a token).
    assert_run(result.runs["colbert"], {"q1": {"d3": 1, "d2": 0.7}, "q2": {"d3": 1, "d2": 0.8}})
    _, corpus, candidates = stub_m3.calls
    assert "colbert" not in corpus[1]  # the corpus pass left ColBERT out ...
    assert candidates == (["d1", "d2", "d3", "d4"], ["colbert"])  # ... and only the candidates (not d5) got it
    assert as_dict(result.candidates["colbert"])["q1"] == pytest.approx({"d1": 0.5, "d2": 0.7, "d3": 1})
    # Asked for ColBERT alone, the re-ranking still searches dense and sparse for its candidates.
    alone = retrieve_modes(stub_m3, TOY, ["colbert"], top_k=2, colbert_max_memory_mb=0)
    assert list(alone.runs) == ["colbert"] and as_dict(alone.runs["colbert"]) == as_dict(result.runs["colbert"])


def test_hybrid_weights_tuned_on_a_dev_split(stub_m3):
    result = retrieve_modes(stub_m3, TOY, ["hybrid"], top_k=5)
    # Only sparse ranks d4 first for q2 (dense and ColBERT put d3 there): the search must weight sparse.
    qrels = to_qrels({"q2": {"d4": 1}})
    weights = optimize_hybrid_weights(qrels, result.candidates, "ndcg@10")
    assert len(weights) == 3 and weights[1] > 0
    assert weights[1] * 2 > weights[0] * 1 + weights[2] * 1  # d4 above d3 for q2 with these weights
    result.set_hybrid_weights(weights, top_k=5)
    q2 = as_dict(result.runs["hybrid"])["q2"]
    assert max(q2, key=q2.get) == "d4"
    assert result.hybrid_weights == weights


def test_bm25_scores_are_lucene_bm25_by_hand():
    corpus = {"a": "the cat sat", "b": "the dog sat on the cat", "c": "fish"}
    retrieval_set = RetrievalSet(queries={"q": "cat fish", "z": "bird"}, corpus=corpus, qrels={"q": {"a": 1}})
    run = as_dict(bm25_run(retrieval_set, top_k=3))
    lengths = {doc: len(text.split()) for doc, text in corpus.items()}
    average = sum(lengths.values()) / 3

    def score(doc: str) -> float:  # Lucene's BM25 (since Lucene 8 without the constant (k1 + 1) factor)
        total = 0.0
        for term in ("cat", "fish"):
            df = sum(term in text.split() for text in corpus.values())
            tf = corpus[doc].split().count(term)
            idf = math.log(1 + (3 - df + 0.5) / (df + 0.5))
            total += idf * tf / (tf + K1 * (1 - B + B * lengths[doc] / average))
        return total

    assert run["q"] == {doc: pytest.approx(score(doc), rel=1e-5) for doc in corpus}
    assert "z" not in run  # no word in common with any document: retrieves nothing


def test_bm25_tokens_split_chinese_into_characters():
    assert tokenize("Hello, 世界 BGE-M3 检索!") == ["hello", "世", "界", "bge", "m3", "检", "索"]
