"""# Loss: the contrastive objective, and `LOSSES`, the one list of the losses a recipe can name."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from st_bge.bge import ENSEMBLE_WEIGHTS, LOSS_WEIGHTS, MODES
from st_bge.config.fields import check_mode_weights
from st_bge.errors import ConfigError


@dataclass(frozen=True)
class LossKind:
    """One value of the `loss` field: its family (what `st_bge.losses.build_loss` builds), whether it is the GradCache
    variant, and its name in a model card."""

    family: Literal["mnrl", "gist", "m3_unified"]
    cached: bool
    title: str

    @property
    def guided(self) -> bool:
        """GIST: a frozen guide model masks likely false negatives."""
        return self.family == "gist"

    @property
    def m3(self) -> bool:
        """BGE-M3's unified loss: it trains the sparse and ColBERT heads, so it needs a `BGEM3Model`."""
        return self.family == "m3_unified"


_M3_TITLE = "BGE-M3's unified loss (dense + sparse + ColBERT, self-distillation)"
LOSSES = {
    "mnrl": LossKind("mnrl", False, "MultipleNegativesRankingLoss"),
    "cached_mnrl": LossKind("mnrl", True, "CachedMultipleNegativesRankingLoss"),
    "gist": LossKind("gist", False, "GISTEmbedLoss"),
    "cached_gist": LossKind("gist", True, "CachedGISTEmbedLoss"),
    "m3_unified": LossKind("m3_unified", False, _M3_TITLE),
    "cached_m3_unified": LossKind("m3_unified", True, f"{_M3_TITLE}, cached"),
}
# Teacher-score losses FlagEmbedding adds to an in-batch loss, and sentence-transformers' that replace it.
ADDED_KD_LOSSES = ("kl_div", "m3_kd_loss")
STANDALONE_KD_LOSSES = ("distill_kl_div", "margin_mse")


@dataclass
class LossArguments:
    """# Loss: the contrastive objective and its BGE-style temperature."""

    loss: str = field(
        default="cached_gist",
        metadata={
            "choices": list(LOSSES),
            "help": "'mnrl': MultipleNegativesRankingLoss (InfoNCE with in-batch negatives); 'gist': GISTEmbedLoss "
            "(a frozen guide model masks likely false negatives); 'm3_unified': BGE-M3's unified loss over its "
            "dense, sparse and ColBERT heads with self-distillation (m3_* fields); 'cached_*': the GradCache "
            "variants, whose activation memory does not grow with the batch, so large batches add in-batch negatives.",
        },
    )
    temperature: float = field(
        default=0.02, metadata={"help": "Softmax temperature; BGE uses 0.02 (MNRL scale = 1 / temperature = 50)."}
    )
    mini_batch_size: int = field(default=32, metadata={"help": "Forward mini-batch of the cached losses."})
    guide_model_name_or_path: str | None = field(
        default=None, metadata={"help": "Guide model of the GIST losses; default: a frozen copy of the base model."}
    )
    gist_margin_strategy: Literal["absolute", "relative"] = field(
        default="absolute", metadata={"help": "How the guide's margin against the positive is measured."}
    )
    gist_margin: float = field(
        default=0.0, metadata={"help": "Mask in-batch candidates the guide scores above (positive - margin)."}
    )
    gist_contrast_anchors: bool = field(default=True, metadata={"help": "GIST: also contrast anchor vs anchor."})
    gist_contrast_positives: bool = field(default=True, metadata={"help": "GIST: also contrast positive vs positive."})
    gist_precompute_guide: bool = field(
        default=True,
        metadata={
            "help": "GIST: embed each distinct training input with the frozen guide once, before training (cached on "
            "disk like the corpus embeddings), instead of at every step; the loss is the same."
        },
    )
    gather_across_devices: bool | None = field(
        default=None,
        metadata={
            "help": "Share in-batch negatives across processes, so that N processes train as one on the global "
            "batch; default: on when more than one process runs."
        },
    )
    kd_loss: Literal["none", "kl_div", "m3_kd_loss", "distill_kl_div", "margin_mse"] = field(
        default="none",
        metadata={
            "help": "Distil a teacher's scores (FlagEmbedding data's pos_scores / neg_scores, e.g. from `st-bge data "
            "score`): 'kl_div' / 'm3_kd_loss' as FlagEmbedding defines them, added to the in-batch loss of mnrl, "
            "cached_mnrl, m3_unified or cached_m3_unified; 'distill_kl_div' / 'margin_mse': sentence-transformers' "
            "DistillKLDivLoss / MarginMSELoss (the row's own candidates only) in place of loss: mnrl."
        },
    )
    m3_train_heads: list[str] = field(
        default_factory=lambda: list(MODES),
        metadata={
            "help": "m3_unified: the heads trained together, any of dense sparse colbert; the others stay as loaded. "
            "With one head the loss is that head's InfoNCE. (Was m3_heads.)"
        },
    )
    m3_freeze_encoder: bool = field(
        default=False,
        metadata={"help": "m3_unified: train the heads only, the encoder frozen (FlagEmbedding's fix_encoder)."},
    )
    m3_add_heads: bool = field(
        default=False,
        metadata={
            "help": "Give a model without BGE-M3 heads new (randomly initialised) sparse and ColBERT heads, so that "
            "m3_unified makes it a three-mode retriever."
        },
    )
    m3_colbert_dim: int | None = field(
        default=None,
        metadata={
            "help": "Width of a new ColBERT head (m3_add_heads); default: the hidden size, as BGE-M3's (vLLM "
            "serves only that)."
        },
    )
    m3_ensemble_weights: list[float] = field(
        default_factory=lambda: list(ENSEMBLE_WEIGHTS),
        metadata={"help": "m3_unified: weights of the dense, sparse and ColBERT scores in the ensemble score."},
    )
    m3_loss_weights: list[float] = field(
        default_factory=lambda: list(LOSS_WEIGHTS),
        metadata={
            "help": "m3_unified: weights of the dense, sparse and ColBERT InfoNCE terms and self-distillation terms "
            "(the ensemble's term has weight 1); BGE-M3: 1 0.1 1."
        },
    )
    m3_self_distill: bool = field(
        default=True,
        metadata={"help": "m3_unified: distil every head from the detached softmax of their ensemble score."},
    )
    m3_self_distill_start_step: int = field(
        default=0,
        metadata={
            "help": "m3_unified: first training step (0-based) with self-distillation. FlagEmbedding's "
            "self_distill_start_step s corresponds to s + 1 here (it distils once its step counter exceeds s)."
        },
    )
    m3_flagembedding_compatible: bool = field(
        default=False,
        metadata={
            "help": "m3_unified: FlagEmbedding 1.4's exact loss: only dense candidates gathered across processes, "
            "and a candidate's padding counts as ColBERT similarity 0. Default: every head's candidates gathered, "
            "padding ignored (as in inference)."
        },
    )

    @property
    def kind(self) -> LossKind:
        """What `loss` names: its family, whether it is cached, what it needs."""
        return LOSSES[self.loss]

    def validate(self) -> None:
        """Checks no single field's type can express.

        Raises:
            ConfigError: a temperature that is not positive, a kd_loss the loss cannot take, unknown heads, or
                weights that are not three non-negative numbers.
        """
        if self.temperature <= 0:
            raise ConfigError(f"temperature must be positive, got {self.temperature}")
        in_batch = [name for name, kind in LOSSES.items() if kind.family != "gist"]
        if self.kd_loss in ADDED_KD_LOSSES and self.loss not in in_batch:
            raise ConfigError(
                f"kd_loss '{self.kd_loss}' is added to an in-batch loss: use loss {' / '.join(in_batch)}"
            )
        if self.kd_loss in STANDALONE_KD_LOSSES and self.loss != "mnrl":
            raise ConfigError(
                f"kd_loss '{self.kd_loss}' is a loss of its own, in place of the in-batch one: set loss: mnrl"
            )
        unknown_heads = sorted(set(self.m3_train_heads) - set(MODES))
        if unknown_heads or not self.m3_train_heads:
            raise ConfigError(f"m3_train_heads: {self.m3_train_heads} is not a subset of {list(MODES)}")
        for name in ("m3_ensemble_weights", "m3_loss_weights"):
            check_mode_weights(name, getattr(self, name))

    def uses(self, key: str) -> bool:
        """Whether field `key` applies to this loss (a card lists only those)."""
        if key.startswith("m3_"):
            return self.kind.m3 or self.m3_add_heads
        if key.startswith("gist_") or key == "guide_model_name_or_path":
            return self.kind.guided
        if key == "mini_batch_size":
            return self.kind.cached
        return True
