"""Build the sentence-transformers loss named by the recipe, with BGE's temperature convention.

BGE reports a softmax temperature (0.02); MultipleNegativesRankingLoss takes its inverse as `scale` (50).
GIST losses take the temperature directly. The cached (GradCache) variants compute the same loss in
mini-batches, so a larger batch adds in-batch negatives without more activation memory; gradient accumulation
would not add any.
"""

from __future__ import annotations

import logging

from sentence_transformers import SentenceTransformer
from sentence_transformers.sentence_transformer.losses import (
    CachedGISTEmbedLoss,
    CachedMultipleNegativesRankingLoss,
    GISTEmbedLoss,
    MultipleNegativesRankingLoss,
)
from torch import nn

from st_bge.config import LossArguments

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
    if args.loss in ("mnrl", "cached_mnrl"):
        kwargs = {"scale": 1.0 / args.temperature, "gather_across_devices": gather}
        if args.loss == "mnrl":
            return MultipleNegativesRankingLoss(model, **kwargs)
        return CachedMultipleNegativesRankingLoss(model, mini_batch_size=args.mini_batch_size, **kwargs)

    if guide is None:
        raise ValueError(f"loss '{args.loss}' needs a guide model")
    if gather and args.gist_contrast_anchors:
        # sentence-transformers gathers the candidates (positives, negatives) but not the anchors, so the
        # anchor-vs-anchor term compares each anchor with its own process's anchors only (tests/test_distributed.py).
        logger.warning(
            "%s under %d processes: positives and negatives are gathered across processes, but the anchor-anchor "
            "contrast (gist_contrast_anchors) uses each process's own anchors only",
            args.loss,
            world_size,
        )
    kwargs = {
        "guide": guide,
        "temperature": args.temperature,
        "margin_strategy": args.gist_margin_strategy,
        "margin": args.gist_margin,
        "contrast_anchors": args.gist_contrast_anchors,
        "contrast_positives": args.gist_contrast_positives,
        "gather_across_devices": gather,
    }
    if args.loss == "gist":
        return GISTEmbedLoss(model, **kwargs)
    return CachedGISTEmbedLoss(model, mini_batch_size=args.mini_batch_size, **kwargs)


def needs_guide(args: LossArguments) -> bool:
    return args.loss in ("gist", "cached_gist")
