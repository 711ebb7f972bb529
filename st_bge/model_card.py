"""Model cards for st-bge outputs: sentence-transformers' card data, extended, rendered from `model_cards/`.

The card builds on `SentenceTransformerModelCardData` (base model, architecture, usage snippet, framework
versions, citations of the losses) and adds what a retrieval fine-tune needs: the recipe, a data summary,
and the base vs fine-tuned ranx table. Training text never enters the card (no examples, no widget) unless
the recipe sets `card_include_examples`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from huggingface_hub import constants
from sentence_transformers import SentenceTransformer
from sentence_transformers.sentence_transformer.model_card import SentenceTransformerModelCardData

from st_bge.evaluation.comparison import ModelComparison

TEMPLATE_NAME = "st_bge_model_card.md"


def template_path() -> Path:
    """The card template: inside the installed package (wheel), else the repository's `model_cards/`."""
    package = Path(__file__).parent / "model_cards" / TEMPLATE_NAME
    return package if package.is_file() else Path(__file__).parents[1] / "model_cards" / TEMPLATE_NAME


@dataclass
class StBgeModelCardData(SentenceTransformerModelCardData):
    """Card data of an st-bge fine-tune.

    Args:
        recipe: The recipe's sections as plain values (`Recipe.to_dict()`).
        data_summary: Sizes and columns of the training and evaluation data (no text).
        comparison: Base vs fine-tuned ranx results, with significance.
        adapter: Whether the folder holds a LoRA adapter rather than full weights.
        notes: Extra lines for the "Limitations" section (e.g. BGE-M3 heads that were not trained).
        include_examples: Put training-text examples and widget examples in the card.
    """

    recipe: dict[str, Any] = field(default_factory=dict)
    data_summary: dict[str, Any] = field(default_factory=dict)
    comparison: ModelComparison | None = None
    adapter: bool = False
    notes: list[str] = field(default_factory=list)
    include_examples: bool = False
    template_path: Path = field(default_factory=template_path, init=False, repr=False)

    def __post_init__(self) -> None:
        self.generate_widget_examples = self.include_examples
        # The card is a retrieval card: its usage snippet uses encode_query / encode_document.
        self.ir_model = True
        super().__post_init__()

    def set_widget_examples(self, dataset: Any) -> None:
        # sentence-transformers fills the Hub widget and the usage snippet with training texts here, whatever
        # `generate_widget_examples` says; the card stays free of them unless the user opted in.
        if self.include_examples:
            super().set_widget_examples(dataset)

    def to_dict(self) -> dict[str, Any]:
        card = super().to_dict()  # the template shows its dataset examples only if include_examples
        card["results_table"] = self.comparison.to_markdown() if self.comparison else None
        card["comparison"] = self.comparison
        card["query_prompt"] = self.model.prompts.get("query") if self.model is not None else None
        return card


def attach_card_data(
    model: SentenceTransformer, card_data: StBgeModelCardData, *, base_model: str | None = None
) -> None:
    """Give `model` st-bge card data; `base_model` is recorded when it is a Hub id (not a local path)."""
    card_data.local_files_only = card_data.local_files_only or constants.HF_HUB_OFFLINE
    if base_model and not Path(base_model).exists():
        card_data.base_model = base_model
    model.model_card_data = card_data
    model._model_card_text = None  # never reuse the base model's own README
    card_data.register_model(model)
