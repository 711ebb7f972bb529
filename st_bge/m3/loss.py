"""BGE-M3's unified fine-tuning as a sentence-transformers loss: dense, sparse and ColBERT trained together, with
self-distillation from their ensemble, as FlagEmbedding's `EncoderOnlyEmbedderM3Model` (formulas: docs/bge-m3.md);
`CachedM3UnifiedLoss` gives the same loss and gradients one mini-batch of activations at a time (GradCache)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from sentence_transformers.base.losses import CachedLossMixin, RandContext
from sentence_transformers.util import all_gather_padded, all_gather_with_grad, get_rank
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint
from transformers import TrainerCallback

from st_bge.bge import ENSEMBLE_WEIGHTS, LOSS_WEIGHTS, MODES
from st_bge.m3.lexical import LexicalEntries, lexical_scores
from st_bge.m3.model import BGEM3Model

COLBERT_CHUNK_ELEMENTS = 2**26  # token similarities held at once when scoring ColBERT (256 MB of float32)
M3_CITATION = """
@misc{bge-m3,
  title={BGE M3-Embedding: Multi-Lingual, Multi-Functionality, Multi-Granularity Text Embeddings Through Self-Knowledge Distillation},
  author={Jianlv Chen and Shitao Xiao and Peitian Zhang and Kun Luo and Defu Lian and Zheng Liu},
  year={2024},
  eprint={2402.03216},
  archivePrefix={arXiv},
  primaryClass={cs.CL}
}
"""


@dataclass
class _Reps:
    """One column's representations: dense (n, h); lexical vectors as entries; ColBERT vectors as parts (one per
    mini-batch, each (n_i, t_i, d) with its mask), scored part by part so that no padded copy of them is made."""

    dense: Tensor
    sparse: LexicalEntries | None = None
    colbert: list[tuple[Tensor, Tensor]] | None = None

    @staticmethod
    def cat(parts: Sequence[_Reps]) -> _Reps:
        """The rows of several parts, in order."""
        return _Reps(
            dense=torch.cat([part.dense for part in parts]),
            sparse=LexicalEntries.cat([part.sparse for part in parts]) if parts[0].sparse is not None else None,
            colbert=[piece for part in parts for piece in part.colbert] if parts[0].colbert is not None else None,
        )


class M3UnifiedLoss(nn.Module):
    """BGE-M3's unified loss over its dense, sparse and ColBERT heads, with self-distillation (see the module).

    Args:
        model: A `BGEM3Model` with the heads `heads` names.
        temperature: Softmax temperature of every head's scores (BGE-M3: 0.02).
        heads: The heads trained together: any of dense, sparse, colbert.
        ensemble_weights: Weights of the dense, sparse and ColBERT scores in the ensemble score (1, 0.3, 1).
        loss_weights: Weights of the dense, sparse and ColBERT terms, in the InfoNCE sum and in the
            self-distillation sum (1, 0.1, 1); the ensemble's InfoNCE term has weight 1.
        self_distill: Add the self-distillation terms.
        self_distill_start_step: First training step (0-based) with self-distillation; FlagEmbedding's
            `self_distill_start_step` s is s + 1 here (it adds the terms when its step counter exceeds s).
        gather_across_devices: Gather the candidates of every process (of every head, or of the dense head only
            with `flagembedding_compatible`).
        flagembedding_compatible: Reproduce FlagEmbedding 1.4's training loss exactly (see the module).
        kd_loss: Distil the labels, a teacher's scores of each row's positive and negatives, as FlagEmbedding does:
            'kl_div' or 'm3_kd_loss' (see `_info_nce`); None: no teacher.

    References:
        - Chen et al., 2024. BGE M3-Embedding: Multi-Lingual, Multi-Functionality, Multi-Granularity Text
          Embeddings Through Self-Knowledge Distillation. https://arxiv.org/abs/2402.03216
        - FlagEmbedding: `FlagEmbedding/finetune/embedder/encoder_only/m3/modeling.py`.

    Inputs:
        +---------------------------------------------------+------------------------------------------------+
        | Texts                                             | Labels                                         |
        +===================================================+================================================+
        | (anchor, positive) pairs                          | none                                           |
        +---------------------------------------------------+------------------------------------------------+
        | (anchor, positive, negative_1, ..., negative_n)   | none, or with `kd_loss` a teacher's scores of  |
        |                                                   | (positive, negative_1, ..., negative_n)        |
        +---------------------------------------------------+------------------------------------------------+

    Example:
        ::

            from st_bge.m3 import BGEM3Model, M3UnifiedLoss

            model = BGEM3Model("BAAI/bge-m3")
            loss = M3UnifiedLoss(model)  # then SentenceTransformerTrainer(model=model, loss=loss, ...)
    """

    def __init__(
        self,
        model: BGEM3Model,
        temperature: float = 0.02,
        heads: Sequence[str] = MODES,
        ensemble_weights: Sequence[float] = ENSEMBLE_WEIGHTS,
        loss_weights: Sequence[float] = LOSS_WEIGHTS,
        self_distill: bool = True,
        self_distill_start_step: int = 0,
        gather_across_devices: bool = False,
        flagembedding_compatible: bool = False,
        kd_loss: str | None = None,
    ) -> None:
        super().__init__()
        modes = model.modes if isinstance(model, BGEM3Model) else ["dense"]
        if not heads or any(head not in modes for head in heads):
            raise ValueError(f"heads {list(heads)}: choose among {modes}, the heads this model has")
        if kd_loss not in (None, "kl_div", "m3_kd_loss"):
            raise ValueError(f"kd_loss {kd_loss!r}: FlagEmbedding's are 'kl_div' and 'm3_kd_loss'")
        self.model = model
        self.vocab_size = model.vocab_size if "sparse" in heads else None
        self.temperature = temperature
        self.heads = [head for head in MODES if head in heads]
        self.ensemble_weights = dict(zip(MODES, ensemble_weights, strict=True))
        self.loss_weights = dict(zip(MODES, loss_weights, strict=True))
        self.self_distill = self_distill
        self.self_distill_start_step = self_distill_start_step
        self.gather_across_devices = gather_across_devices
        self.flagembedding_compatible = flagembedding_compatible
        self.kd_loss = kd_loss
        self.step = 0  # the Trainer's global step, kept current by `M3StepCallback`

    def forward(self, sentence_features: Iterable[dict[str, Tensor]], labels: Tensor | None = None) -> Tensor:
        heads = self.heads != ["dense"]
        columns = [self._reps(self.model(features, m3_outputs=heads), features) for features in sentence_features]
        return self.unified_loss(columns[0], columns[1:], self._teacher(labels, len(columns) - 1))

    def _teacher(self, labels: Tensor | None, candidates: int) -> Tensor | None:
        """softmax of the teacher's scores of each row's [positive, negatives] (`kd_loss`), as FlagEmbedding does."""
        if self.kd_loss is None:
            return None
        if labels is None or labels.dim() != 2 or labels.size(1) != candidates:
            shape = None if labels is None else tuple(labels.shape)
            raise ValueError(
                f"kd_loss {self.kd_loss!r} needs a teacher's score per positive and negative of each row (a 'scores' "
                f"column of {candidates} numbers: FlagEmbedding's pos_scores / neg_scores); got labels of shape {shape}"
            )
        return torch.softmax(labels.float(), dim=-1)

    def _reps(self, out: dict[str, Tensor], features: dict[str, Tensor]) -> _Reps:
        reps = _Reps(dense=out["sentence_embedding"])
        if "sparse" in self.heads:
            reps.sparse = LexicalEntries.from_tokens(out["token_weights"], features["input_ids"])
        if "colbert" in self.heads:
            reps.colbert = [(out["colbert_vectors"], out["colbert_mask"])]
        return reps

    def unified_loss(
        self, queries: _Reps, candidate_columns: Sequence[_Reps], teacher: Tensor | None = None
    ) -> Tensor:
        """The loss of the queries against the columns of candidates (positives first, then each negative), with a
        teacher's distribution over each row's own [positive, negatives] for `kd_loss`.

        Candidates are laid out column by column (all positives, then every first negative, ...); under gathering
        a column holds every process's rows, this process's at rank x rows: `own` are each row's own candidates.
        """
        rows, columns = queries.dense.size(0), len(candidate_columns)
        gathered = {
            head: self.gather_across_devices and (head == "dense" or not self.flagembedding_compatible)
            for head in self.heads
        }
        scores, own = {}, {}
        for head in self.heads:
            candidates = candidate_columns
            if gathered[head]:
                candidates = [self._gathered(column, head) for column in candidate_columns]
            scores[head] = self._scores(queries, _Reps.cat(candidates), head) / self.temperature
            own[head] = _own_candidates(rows, columns, scores[head].size(1) // columns, gathered[head], scores[head])
        terms = [self.loss_weights[head] * self._info_nce(scores[head], own[head], teacher) for head in self.heads]
        if len(self.heads) == 1:
            return terms[0]
        # The ensemble adds every head's scores of the same candidates: where only dense was gathered
        # (FlagEmbedding), its scores are cut back to this process's candidates first.
        if all(gathered.values()) or not any(gathered.values()):
            aligned, ensemble_own = scores, own[self.heads[0]]
        else:
            aligned = {h: _local_candidates(m, columns, rows) if gathered[h] else m for h, m in scores.items()}
            ensemble_own = _own_candidates(rows, columns, rows, False, scores[self.heads[0]])
        ensemble = sum(self.ensemble_weights[head] * aligned[head] for head in self.heads)
        loss = (sum(terms) + self._info_nce(ensemble, ensemble_own, teacher)) / (len(terms) + 1)
        if self.self_distill and self.step >= self.self_distill_start_step:
            target = torch.softmax(ensemble.detach(), dim=-1)
            distill = sum(self.loss_weights[head] * _soft_cross_entropy(aligned[head], target) for head in self.heads)
            loss = (loss + distill / len(self.heads)) / 2
        return loss

    def _info_nce(self, scores: Tensor, own: Tensor, teacher: Tensor | None) -> Tensor:
        """InfoNCE with each row's positive (`own[:, 0]`) as the target, or with the teacher (FlagEmbedding's
        `kl_div`: soft cross-entropy over the row's own candidates + InfoNCE; `m3_kd_loss`: for each own candidate i,
        InfoNCE towards it weighted by the teacher's p_i, the own candidates before it masked)."""
        if teacher is None:
            return F.cross_entropy(scores, own[:, 0])
        if self.kd_loss == "kl_div":
            return _soft_cross_entropy(scores.gather(1, own), teacher) + F.cross_entropy(scores, own[:, 0])
        loss = scores.new_zeros(())
        mask = torch.zeros_like(scores)
        for i in range(own.size(1)):
            loss = loss + torch.mean(teacher[:, i] * F.cross_entropy(scores + mask, own[:, i], reduction="none"))
            mask = mask.scatter(1, own[:, i : i + 1], torch.finfo(scores.dtype).min)
        return loss

    def _gathered(self, column: _Reps, head: str) -> _Reps:
        """The column of every process (this process's rows keep their gradient; the others' carry theirs back)."""
        if head == "dense":
            return _Reps(dense=all_gather_with_grad(column.dense))
        if head == "sparse":
            return _Reps(dense=column.dense, sparse=column.sparse.gathered())
        width = max(vectors.size(1) for vectors, _ in column.colbert)  # one part, padded: gathered in rank order
        vectors = torch.cat([F.pad(v, (0, 0, 0, width - v.size(1))) for v, _ in column.colbert])
        mask = torch.cat([F.pad(m, (0, width - m.size(1))) for _, m in column.colbert])
        return _Reps(dense=column.dense, colbert=[all_gather_padded(vectors, mask, with_grad=True)])

    def _scores(self, queries: _Reps, candidates: _Reps, head: str) -> Tensor:
        if head == "dense":
            return queries.dense @ candidates.dense.T
        if head == "sparse":
            return lexical_scores(queries.sparse, candidates.sparse, self.vocab_size)
        return torch.cat(
            [
                torch.cat(
                    [
                        colbert_scores(q, q_mask, c, c_mask, count_padding=self.flagembedding_compatible)
                        for c, c_mask in candidates.colbert
                    ],
                    dim=1,
                )
                for q, q_mask in queries.colbert
            ]
        )

    def get_config_dict(self) -> dict[str, Any]:
        return {
            "temperature": self.temperature,
            "heads": self.heads,
            "ensemble_weights": [self.ensemble_weights[h] for h in MODES],
            "loss_weights": [self.loss_weights[h] for h in MODES],
            "self_distill": self.self_distill,
            "self_distill_start_step": self.self_distill_start_step,
            "gather_across_devices": self.gather_across_devices,
            "flagembedding_compatible": self.flagembedding_compatible,
            "kd_loss": self.kd_loss,
        }

    @property
    def citation(self) -> str:
        return M3_CITATION


class M3StepCallback(TrainerCallback):
    """Keeps `M3UnifiedLoss.step` at the Trainer's global step, so that self-distillation starts at
    `self_distill_start_step` whatever the gradient accumulation, and where it should after a resume."""

    def __init__(self, loss: M3UnifiedLoss) -> None:
        self.loss = loss

    def on_step_begin(self, args, state, control, **kwargs) -> None:
        self.loss.step = state.global_step


def _soft_cross_entropy(scores: Tensor, teacher: Tensor) -> Tensor:
    """-mean(sum(teacher x log_softmax(scores))): FlagEmbedding's `kl_div` (KL divergence + the teacher's entropy)."""
    return -torch.mean(torch.sum(torch.log_softmax(scores, dim=-1) * teacher, dim=-1))


def _own_candidates(rows: int, columns: int, block: int, gathered: bool, like: Tensor) -> Tensor:
    """(rows, columns) index of each row's own positive and negatives among the candidates: column c's block starts
    at c x block, and this process's rows within it at rank x rows when gathered."""
    offset = get_rank() * rows if gathered else 0
    base = torch.arange(rows, device=like.device) + offset
    return torch.stack([base + c * block for c in range(columns)], dim=1)


def _local_candidates(scores: Tensor, columns: int, rows: int) -> Tensor:
    """Scores over every process's candidates, cut to this process's: in each column block, its rows."""
    block = scores.size(1) // columns
    start = get_rank() * rows
    index = torch.cat([torch.arange(c * block + start, c * block + start + rows) for c in range(columns)])
    return scores[:, index.to(scores.device)]


def colbert_scores(
    queries: Tensor, query_mask: Tensor, candidates: Tensor, candidate_mask: Tensor, *, count_padding: bool = False
) -> Tensor:
    """(queries, candidates) ColBERT scores: per query vector the best similarity to a candidate's vectors, averaged
    over the query's real vectors. Candidate padding is ignored, or (`count_padding`, FlagEmbedding's training
    scores) counts as similarity 0.

    Computed in chunks of candidates, each recomputed in the backward pass (activation checkpointing) rather than
    keeping its best matches: what autograd holds is the inputs and the (queries, chunk) scores, not queries x query
    tokens x candidates indices, which grew with the square of the batch.
    """
    scores = []
    chunk = max(1, COLBERT_CHUNK_ELEMENTS // max(1, queries.size(0) * queries.size(1) * candidates.size(1)))
    for start in range(0, candidates.size(0), chunk):
        block = (queries, query_mask, candidates[start : start + chunk], candidate_mask[start : start + chunk])
        if torch.is_grad_enabled() and (queries.requires_grad or candidates.requires_grad):
            scores.append(checkpoint(_colbert_block, *block, count_padding, use_reentrant=False))
        else:
            scores.append(_colbert_block(*block, count_padding))
    return torch.cat(scores, dim=1) / query_mask.sum(dim=1, keepdim=True).clamp(min=1)


def _colbert_block(
    queries: Tensor, query_mask: Tensor, candidates: Tensor, candidate_mask: Tensor, count_padding: bool
) -> Tensor:
    """Sum over each query's vectors of the best similarity to each candidate's (not yet divided by their count)."""
    similarities = torch.einsum("qin,pjn->qipj", queries, candidates)
    if not count_padding:
        padding = ~candidate_mask.bool()
        similarities = similarities.masked_fill(padding[None, None], torch.finfo(similarities.dtype).min)
    best = similarities.max(dim=-1).values * query_mask[:, :, None]  # padded query vectors count 0
    return best.sum(dim=1)


class CachedM3UnifiedLoss(CachedLossMixin, M3UnifiedLoss):
    """`M3UnifiedLoss` with GradCache (sentence-transformers' `CachedLossMixin`): each column is embedded in
    mini-batches of `mini_batch_size` texts, first without gradients, then again with them once the loss has given
    each representation its gradient. Same loss and gradients; the activations of one mini-batch at a time.

    A mini-batch's representations travel through the mixin as one tensor (dense embedding, token weights and
    flattened ColBERT vectors side by side); the token ids and masks that turn them back into lexical vectors and
    ColBERT matrices are kept from the first pass.

    Args:
        model: As for `M3UnifiedLoss`.
        mini_batch_size: Texts per forward pass.
        **kwargs: The `M3UnifiedLoss` arguments.
    """

    def __init__(self, model: BGEM3Model, mini_batch_size: int = 32, **kwargs: Any) -> None:
        super().__init__(model, **kwargs)
        self.mini_batch_size = mini_batch_size
        self.dense_dim = model.get_embedding_dimension()
        self.colbert_dim = getattr(model, "colbert_dim", None)  # None for a dense model (dense head only)
        self._inputs: list[tuple[Tensor, Tensor]] = []  # (input_ids, attention_mask) of each first-pass mini-batch

    def forward(self, sentence_features: Iterable[dict[str, Tensor]], labels: Tensor | None = None) -> Tensor:
        self._inputs = []
        return self.forward_cached(sentence_features, labels)

    def embed_minibatch(
        self,
        sentence_feature: dict[str, Tensor],
        begin: int,
        end: int,
        with_grad: bool,
        copy_random_state: bool,
        random_state: RandContext | None = None,
    ) -> tuple[Tensor, RandContext | None]:
        features = _text_minibatch(sentence_feature, begin, end)
        with nullcontext() if random_state is None else random_state, nullcontext() if with_grad else torch.no_grad():
            random_state = RandContext(*features.values()) if copy_random_state else None
            out = self.model(features, m3_outputs=self.heads != ["dense"])
        if not with_grad:
            self._inputs.append((features["input_ids"], features["attention_mask"]))
        parts = [out["sentence_embedding"]]
        if "sparse" in self.heads:
            parts.append(out["token_weights"])
        if "colbert" in self.heads:
            parts.append(out["colbert_vectors"].flatten(1))
        return torch.cat(parts, dim=1), random_state

    def calculate_loss(
        self, reps: list[list[Tensor]], labels: Tensor | None = None, *, with_backward: bool = False
    ) -> Tensor:
        inputs = iter(self._inputs)
        columns = [_Reps.cat([self._unpack(packed, *next(inputs)) for packed in column]) for column in reps]
        loss = self.unified_loss(columns[0], columns[1:], self._teacher(labels, len(columns) - 1))
        if with_backward:
            loss.backward()
            loss = loss.detach()
        return loss

    def _unpack(self, packed: Tensor, input_ids: Tensor, attention_mask: Tensor) -> _Reps:
        """The inverse of `embed_minibatch`'s packing."""
        tokens = input_ids.size(1)
        reps = _Reps(dense=packed[:, : self.dense_dim])
        offset = self.dense_dim
        if "sparse" in self.heads:
            reps.sparse = LexicalEntries.from_tokens(packed[:, offset : offset + tokens], input_ids)
            offset += tokens
        if "colbert" in self.heads:
            vectors = packed[:, offset:].reshape(packed.size(0), tokens - 1, self.colbert_dim)
            reps.colbert = [(vectors, attention_mask[:, 1:])]
        return reps

    def get_config_dict(self) -> dict[str, Any]:
        return {**super().get_config_dict(), "mini_batch_size": self.mini_batch_size}


def _text_minibatch(features: dict[str, Tensor], begin: int, end: int) -> dict[str, Tensor]:
    """Rows `begin:end` of a padded text batch, without the padding columns none of those rows uses."""
    width = int(features["attention_mask"][begin:end].sum(dim=1).max())
    return {
        key: value[begin:end, :width] if value.dim() == 2 else value[begin:end]
        for key, value in features.items()
        if isinstance(value, Tensor)
    }
