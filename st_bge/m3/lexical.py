"""BGE-M3's lexical (sparse) scores for training, from each text's non-zero entries (`LexicalEntries`), never a
texts x vocabulary tensor; the memory arithmetic: docs/bge-m3.md."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.distributed as dist
from sentence_transformers.util import all_gather, all_gather_with_grad, get_world_size
from torch import Tensor

CHUNK_ELEMENTS = 2**25  # elements of the per-chunk (queries, vocabulary) and (queries, entries) buffers


@dataclass
class LexicalEntries:
    """The non-zero entries of `count` texts' lexical vectors: `weights[k]` at (`rows[k]`, `ids[k]`), one entry per
    (text, token id)."""

    rows: Tensor
    ids: Tensor
    weights: Tensor
    count: int

    @classmethod
    def from_tokens(cls, token_weights: Tensor, input_ids: Tensor) -> LexicalEntries:
        """From (texts, tokens) weights (special tokens and padding already 0): the largest weight of each
        (text, id), differentiably. Zero weights carry no gradient (relu or mask), so they are left out."""
        count, length = token_weights.shape
        keep = token_weights > 0
        rows = torch.arange(count, device=input_ids.device)[:, None].expand(count, length)[keep]
        ids = input_ids[keep]
        base = int(input_ids.max()) + 1 if input_ids.numel() else 1
        keys, inverse = torch.unique(rows * base + ids, return_inverse=True)
        weights = token_weights.new_zeros(len(keys)).scatter_reduce(
            0, inverse, token_weights[keep], reduce="amax", include_self=False
        )
        return cls(keys // base, keys % base, weights, count)

    @staticmethod
    def cat(parts: Sequence[LexicalEntries]) -> LexicalEntries:
        """The texts of several parts, in order."""
        offsets = torch.tensor([0, *(part.count for part in parts)]).cumsum(0).tolist()
        return LexicalEntries(
            rows=torch.cat([part.rows + offset for part, offset in zip(parts, offsets, strict=False)]),
            ids=torch.cat([part.ids for part in parts]),
            weights=torch.cat([part.weights for part in parts]),
            count=offsets[-1],
        )

    def gathered(self) -> LexicalEntries:
        """Every process's texts (this process's entries keep their gradient, the others' carry theirs back), in rank
        order. Processes hold different numbers of entries: each pads to the largest with zero weights."""
        world = get_world_size()
        if world == 1:
            return self
        size = torch.tensor([len(self.weights)], device=self.weights.device)
        dist.all_reduce(size, op=dist.ReduceOp.MAX)
        pad = int(size) - len(self.weights)
        weights = torch.cat([self.weights, self.weights.new_zeros(pad)])
        rows = torch.cat([self.rows, self.rows.new_zeros(pad)])
        ids = torch.cat([self.ids, self.ids.new_zeros(pad)])
        offsets = torch.arange(world, device=rows.device).repeat_interleave(int(size)) * self.count
        return LexicalEntries(
            rows=all_gather(rows) + offsets,
            ids=all_gather(ids),
            weights=all_gather_with_grad(weights),
            count=self.count * world,
        )


def lexical_scores(queries: LexicalEntries, candidates: LexicalEntries, vocab_size: int) -> Tensor:
    """(queries, candidates) lexical matching scores: for each pair, the sum over shared token ids of w_q x w_c."""
    return _LexicalScores.apply(
        queries.weights,
        candidates.weights,
        queries.rows,
        queries.ids,
        candidates.rows,
        candidates.ids,
        queries.count,
        candidates.count,
        vocab_size,
    )


class _LexicalScores(torch.autograd.Function):
    """S = Q @ C.T for lexical vectors given as entries; gradients for both sides' weights."""

    @staticmethod
    def forward(ctx, q_weights, c_weights, q_rows, q_ids, c_rows, c_ids, q_count, c_count, vocab_size):
        ctx.save_for_backward(q_weights, c_weights, q_rows, q_ids, c_rows, c_ids)
        ctx.sizes = (q_count, c_count, vocab_size)
        scores = q_weights.new_zeros(q_count, c_count)
        for start, stop, queries in _query_chunks(q_weights, q_rows, q_ids, q_count, vocab_size, len(c_ids)):
            scores[start:stop].index_add_(1, c_rows, queries[:, c_ids] * c_weights)
        return scores

    @staticmethod
    def backward(ctx, grad):
        q_weights, c_weights, q_rows, q_ids, c_rows, c_ids = ctx.saved_tensors
        q_count, _, vocab_size = ctx.sizes
        grad_q, grad_c = torch.zeros_like(q_weights), torch.zeros_like(c_weights)
        for start, stop, queries in _query_chunks(q_weights, q_rows, q_ids, q_count, vocab_size, len(c_ids)):
            rows = grad[start:stop][:, c_rows]  # (chunk, candidate entries): dS of each entry's candidate
            grad_c += (rows * queries[:, c_ids]).sum(dim=0)
            # dS @ C for the chunk's queries, (chunk, vocabulary), read at each query entry's id.
            through_candidates = queries.new_zeros(stop - start, vocab_size).index_add_(1, c_ids, rows * c_weights)
            mine = (q_rows >= start) & (q_rows < stop)
            grad_q[mine] = through_candidates[q_rows[mine] - start, q_ids[mine]]
        return grad_q, grad_c, None, None, None, None, None, None, None


def _query_chunks(weights: Tensor, rows: Tensor, ids: Tensor, count: int, vocab_size: int, candidate_entries: int):
    """(start, stop, dense lexical vectors of queries start..stop) over every query, a bounded chunk at a time."""
    chunk = max(1, CHUNK_ELEMENTS // (vocab_size + candidate_entries))
    for start in range(0, count, chunk):
        stop = min(start + chunk, count)
        mine = (rows >= start) & (rows < stop)
        dense = weights.new_zeros(stop - start, vocab_size)
        dense[rows[mine] - start, ids[mine]] = weights[mine].detach()
        yield start, stop, dense
