"""What `BGEM3Model.encode_m3` returns, and the scores of every mode between two sets of texts (inference: sparse
vectors as sparse tensors; training scores its lexical entries in `st_bge.m3.lexical`)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from sentence_transformers.multi_vector_encoder import maxsim, maxsim_pairwise
from torch import Tensor

from st_bge.bge import MODES


def lexical_vectors(token_weights: Tensor, input_ids: Tensor, vocab_size: int) -> Tensor:
    """(batch, vocabulary) lexical vectors from (batch, tokens) weights: per token id, the largest weight among its
    occurrences (the special tokens' weights are already 0).

    Out of place, so it can be trained through; at most (batch, vocabulary), never FlagEmbedding's training-time
    (batch, tokens, vocabulary) (8 x 512 x 250k floats = 4 GB).
    """
    empty = token_weights.new_zeros(token_weights.size(0), vocab_size)
    return empty.scatter_reduce(1, input_ids, token_weights, reduce="amax", include_self=True)


@dataclass
class M3Embeddings:
    """The representations `BGEM3Model.encode_m3` gives a list of texts (on the CPU; a mode not asked is None).

    Attributes:
        dense: (texts, hidden) L2-normalised CLS embeddings.
        sparse: (texts, vocabulary) sparse COO tensor of lexical weights.
        colbert: One (tokens, colbert_dim) tensor of L2-normalised vectors per text (CLS excluded).
    """

    dense: Tensor | None = None
    sparse: Tensor | None = None
    colbert: list[Tensor] | None = None

    def __len__(self) -> int:
        for value in (self.dense, self.sparse, self.colbert):
            if value is not None:
                return len(value)
        return 0

    @property
    def modes(self) -> list[str]:
        return [mode for mode in MODES if getattr(self, mode) is not None]

    def lexical_weights(self) -> list[dict[str, float]]:
        """The sparse vectors as FlagEmbedding's `lexical_weights`: `{str(token id): weight}` per text."""
        sparse = self.sparse.coalesce()
        rows, ids = sparse.indices()
        values = sparse.values()
        weights: list[dict[str, float]] = [{} for _ in range(sparse.size(0))]
        for row, token_id, value in zip(rows.tolist(), ids.tolist(), values.tolist(), strict=True):
            weights[row][str(token_id)] = value
        return weights

    def to_state(self) -> dict[str, Any]:
        """Plain tensors for `torch.save` (`weights_only` loading): sparse as indices + values, ColBERT concatenated."""
        state: dict[str, Any] = {"dense": self.dense}
        if self.sparse is not None:
            sparse = self.sparse.coalesce()
            state["sparse"] = {"indices": sparse.indices(), "values": sparse.values(), "size": list(sparse.size())}
        if self.colbert is not None:
            state["colbert"] = {
                "vectors": torch.cat(self.colbert) if self.colbert else torch.empty(0),
                "lengths": torch.tensor([len(vectors) for vectors in self.colbert]),
            }
        return state

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> M3Embeddings:
        """The inverse of `to_state`."""
        sparse = state.get("sparse")
        colbert = state.get("colbert")
        return cls(
            dense=state.get("dense"),
            sparse=torch.sparse_coo_tensor(sparse["indices"], sparse["values"], sparse["size"]).coalesce()
            if sparse
            else None,
            colbert=list(torch.split(colbert["vectors"], colbert["lengths"].tolist())) if colbert else None,
        )

    def select(self, indices: Sequence[int]) -> M3Embeddings:
        """The representations of the texts at `indices`, in that order."""
        index = torch.as_tensor(list(indices), dtype=torch.long)
        return M3Embeddings(
            dense=self.dense[index] if self.dense is not None else None,
            sparse=reorder_sparse(self.sparse, index) if self.sparse is not None else None,
            colbert=[self.colbert[i] for i in index.tolist()] if self.colbert is not None else None,
        )


def m3_scores(queries: M3Embeddings, documents: M3Embeddings, *, pairwise: bool = False) -> dict[str, Tensor]:
    """Score matrices (queries x documents), or one score per aligned pair with `pairwise`, of every mode both sides
    have: dense dot product, lexical matching (sparse dot product), ColBERT MeanMaxSim."""
    scores = {}
    if queries.dense is not None and documents.dense is not None:
        q, d = queries.dense, documents.dense
        scores["dense"] = (q * d).sum(-1) if pairwise else q @ d.T
    if queries.sparse is not None and documents.sparse is not None:
        scores["sparse"] = sparse_scores(queries.sparse, documents.sparse, pairwise=pairwise)
    if queries.colbert is not None and documents.colbert is not None:
        score = maxsim_pairwise if pairwise else maxsim
        scores["colbert"] = score(queries.colbert, documents.colbert, length_normalize=True)
    return scores


def sparse_scores(queries: Tensor, documents: Tensor, *, pairwise: bool = False) -> Tensor:
    """Lexical matching scores of sparse (texts, vocabulary) tensors: a sparse matrix product, never dense rows."""
    if pairwise:
        return torch.sparse.sum(queries.coalesce() * documents.coalesce(), dim=1).to_dense()
    return torch.sparse.mm(queries.coalesce(), documents.coalesce().t()).to_dense()


def reorder_sparse(matrix: Tensor, index: Tensor) -> Tensor:
    """Rows `index` of a sparse COO matrix, in that order."""
    return torch.index_select(matrix.coalesce(), 0, index).coalesce()
