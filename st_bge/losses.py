"""Build the sentence-transformers loss named by the recipe, with BGE's temperature convention.

BGE reports a softmax temperature (0.02); MultipleNegativesRankingLoss takes its inverse as `scale` (50).
GIST losses take the temperature directly. The cached (GradCache) variants compute the same loss in
mini-batches, so a larger batch adds in-batch negatives without more activation memory; gradient accumulation
would not add any.

Under several processes the in-batch losses gather every process's candidates (`gather_across_devices`), so
that 2 processes train exactly as 1 process on the global batch (tests/test_distributed.py). The GIST losses need
one addition for that, and use less memory in their similarities: `_GISTSimilarities` below, docs/gist.md.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

import torch
from sentence_transformers import SentenceTransformer
from sentence_transformers.sentence_transformer import losses as st_losses
from sentence_transformers.sentence_transformer.losses import (
    CachedMultipleNegativesRankingLoss,
    DistillKLDivLoss,
    MarginMSELoss,
    MultipleNegativesRankingLoss,
)
from sentence_transformers.util import all_gather_with_grad, cos_sim, get_rank, pairwise_dot_score
from torch import Tensor, nn

from st_bge.config import LossArguments
from st_bge.errors import ConfigError
from st_bge.guide import guide_features
from st_bge.m3 import BGEM3Model, CachedM3UnifiedLoss, M3UnifiedLoss

logger = logging.getLogger(__name__)


def build_loss(
    model: SentenceTransformer,
    args: LossArguments,
    *,
    guide: SentenceTransformer | None = None,
    world_size: int = 1,
) -> nn.Module:
    """The loss for `args.loss`.

    Args:
        model: The model being trained.
        args: The recipe's loss section.
        guide: GIST losses only: the frozen model that flags in-batch false negatives (required for them).
        world_size: Number of training processes; in-batch negatives are gathered across them when it is
            above 1 and `args.gather_across_devices` is not set.
    """
    gather = args.gather_across_devices if args.gather_across_devices is not None else world_size > 1
    logger.info("Loss: %s, temperature %s, gather_across_devices=%s", args.loss, args.temperature, gather)
    if args.kd_loss == "distill_kl_div":
        # The student's scores at BGE's temperature, the teacher's as they are (FlagEmbedding's softmax of them).
        return DistillKLDivLoss(
            model, similarity_fct=pairwise_dot_score, student_temperature=args.temperature, teacher_temperature=1.0
        )
    if args.kd_loss == "margin_mse":
        return MarginMSELoss(model, similarity_fct=pairwise_dot_score)
    if args.kind.m3 or args.kd_loss != "none":
        # FlagEmbedding's distillation terms live in the unified loss; over the dense head alone it is its dense
        # objective: MNRL (InfoNCE at `temperature`) + the teacher term.
        return _m3_loss(model, args, gather)
    if args.kind.family == "mnrl":
        kwargs = {"scale": 1.0 / args.temperature, "gather_across_devices": gather}
        if not args.kind.cached:
            return MultipleNegativesRankingLoss(model, **kwargs)
        return CachedMultipleNegativesRankingLoss(model, mini_batch_size=args.mini_batch_size, **kwargs)

    if guide is None:
        raise ValueError(f"loss '{args.loss}' needs a guide model")
    kwargs = {
        "guide": guide,
        "temperature": args.temperature,
        "margin_strategy": args.gist_margin_strategy,
        "margin": args.gist_margin,
        "contrast_anchors": args.gist_contrast_anchors,
        "contrast_positives": args.gist_contrast_positives,
        "gather_across_devices": gather,
    }
    if not args.kind.cached:
        return GISTEmbedLoss(model, **kwargs)
    return CachedGISTEmbedLoss(model, mini_batch_size=args.mini_batch_size, **kwargs)


def require_m3_heads(model: SentenceTransformer, args: LossArguments) -> None:
    """Stop before any work if the M3 loss would train a head the model lacks.

    Raises:
        ConfigError: a head named in `m3_train_heads` is missing.
    """
    missing = [head for head in args.m3_train_heads if not isinstance(model, BGEM3Model) or head not in model.modes]
    if missing:
        raise ConfigError(
            f"loss '{args.loss}' trains the {', '.join(missing)} head(s) (m3_train_heads), which the model does not have: "
            "set m3_add_heads: true to give it new ones, or leave them out of m3_train_heads"
        )


def _m3_loss(model: SentenceTransformer, args: LossArguments, gather: bool) -> M3UnifiedLoss:
    heads = args.m3_train_heads if args.kind.m3 else ["dense"]
    if args.kind.m3:
        require_m3_heads(model, args)
    kwargs = {
        "temperature": args.temperature,
        "heads": heads,
        "ensemble_weights": args.m3_ensemble_weights,
        "loss_weights": args.m3_loss_weights,
        "self_distill": args.m3_self_distill,
        "self_distill_start_step": args.m3_self_distill_start_step,
        "gather_across_devices": gather,
        "flagembedding_compatible": args.m3_flagembedding_compatible,
        "kd_loss": None if args.kd_loss == "none" else args.kd_loss,
    }
    if not args.kind.cached:
        return M3UnifiedLoss(model, **kwargs)
    return CachedM3UnifiedLoss(model, mini_batch_size=args.mini_batch_size, **kwargs)


class _GISTSimilarities:
    """How st-bge's GIST losses compute their similarity matrices: in 2-D (theirs broadcasts over the embedding
    dimension, and its memory grew with the batch), and against every process's columns (theirs leaves the
    anchor-anchor term's anchors local, so 2 processes did not train as 1). Why, and the upstream behaviour it
    relies on, each with its pinning test: docs/gist.md.
    """

    def __init__(self, *args, gather_across_devices: bool = False, **kwargs) -> None:
        super().__init__(*args, gather_across_devices=False, **kwargs)
        self.gather_columns = gather_across_devices
        self._gathered: list[tuple[Tensor, Tensor]] = []

    def forward(self, sentence_features: Iterable[dict[str, Tensor]], labels: Tensor | None) -> Tensor:
        try:
            return self.step_loss(list(sentence_features), labels)
        finally:
            self._gathered = []  # the columns of one step only

    def step_loss(self, sentence_features: list[dict[str, Tensor]], labels: Tensor | None) -> Tensor:
        return super().forward(sentence_features, labels)

    def sim_matrix(self, embed1: Tensor, embed2: Tensor) -> Tensor:
        return cos_sim(embed1, self._all_columns(embed2) if self.gather_columns else embed2)

    def _all_columns(self, columns: Tensor) -> Tensor:
        """`columns` from every process, this process's first (the local tensor itself when not distributed)."""
        for local, gathered in self._gathered:
            if local is columns:
                return gathered
        gathered = all_gather_with_grad(columns).roll(-get_rank() * columns.size(0), dims=0)
        self._gathered.append((columns, gathered))
        return gathered

    def get_config_dict(self) -> dict[str, object]:
        return {**super().get_config_dict(), "gather_across_devices": self.gather_columns}


# Named as sentence-transformers names them, so that model cards keep their `loss:` tags and citations.
class GISTEmbedLoss(_GISTSimilarities, st_losses.GISTEmbedLoss):
    """sentence-transformers' `GISTEmbedLoss`, with st-bge's similarities (`_GISTSimilarities`)."""


class CachedGISTEmbedLoss(_GISTSimilarities, st_losses.CachedGISTEmbedLoss):
    """sentence-transformers' `CachedGISTEmbedLoss`, with st-bge's similarities (`_GISTSimilarities`), and one pass
    where GradCache has nothing to split: when a step's batch fits in one mini-batch, its first (no-gradient) pass
    buys nothing, so the batch is embedded once with gradients and `calculate_loss` runs on that (docs/gist.md).
    """

    _said_one_pass = False

    def step_loss(self, sentence_features: list[dict[str, Tensor]], labels: Tensor | None) -> Tensor:
        if not (torch.is_grad_enabled() and self._fits_one_mini_batch(sentence_features)):
            return super().step_loss(sentence_features, labels)
        if not self._said_one_pass:
            logger.info(
                "cached_gist: the batch fits in one mini-batch (mini_batch_size %d), so each step embeds once, with "
                "gradients, instead of GradCache's two passes",
                self.mini_batch_size,
            )
            self._said_one_pass = True
        # The guide's inputs are taken before the model writes its outputs into the features, as theirs does.
        guide_inputs = [guide_features(self, self.guide, features) for features in sentence_features]
        embeddings = [[self.model(features)["sentence_embedding"]] for features in sentence_features]
        with torch.no_grad():
            guide_embeddings = [[self.guide(inputs)["sentence_embedding"]] for inputs in guide_inputs]
        return self.calculate_loss(embeddings, guide_embeddings)

    def _fits_one_mini_batch(self, sentence_features: list[dict[str, Tensor]]) -> bool:
        return self.mini_batch_num_tokens is None and all(
            len(features["input_ids"]) <= self.mini_batch_size for features in sentence_features
        )
