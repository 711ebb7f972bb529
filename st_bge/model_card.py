"""Model cards for st-bge outputs: sentence-transformers' card data, extended, rendered from `model_cards/`.

The card builds on `SentenceTransformerModelCardData` (base model, architecture, usage snippet, framework
versions, citations of the losses) and adds what a retrieval fine-tune needs: the recipe, a data summary,
and the base vs fine-tuned ranx table. Training text never enters the card (no examples, no widget) unless
the recipe sets `card_include_examples`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from huggingface_hub import EvalResult, constants
from huggingface_hub.repocard_data import eval_results_to_model_index
from sentence_transformers import SentenceTransformer
from sentence_transformers.sentence_transformer.model_card import SentenceTransformerModelCardData

from st_bge.config import LOSSES
from st_bge.evaluation.comparison import RetrievalComparison
from st_bge.m3 import M3_CITATION
from st_bge.m3.card import card_details
from st_bge.storage import CARD_INPUTS

TEMPLATE_NAME = "st_bge_model_card.md"
# What the card is rendered from (`storage.CARD_INPUTS`): numbers and settings only, like the card itself.
CARD_INPUT_FIELDS = (
    "recipe",
    "recipe_changes",
    "data_summary",
    "adapter",
    "notes",
    "include_examples",
    "language",
    "license",
    "dataset_ids",
    "load_id",
    "m3",
    "merge",
)
# Fewer evaluation queries than this get a word of caution beside the results: a few queries move a mean a lot.
FEW_QUERIES = 100
# The papers behind each part of a run, cited in its card (sentence-transformers 6.3's CachedGISTEmbedLoss cites
# nothing, and it knows nothing of LoRA or BGE-M3).
CITATIONS = {
    "MultipleNegativesRankingLoss": """
@misc{henderson2017efficient,
    title={Efficient Natural Language Response Suggestion for Smart Reply},
    author={Matthew Henderson and Rami Al-Rfou and Brian Strope and Yun-hsuan Sung and Laszlo Lukacs and Ruiqi Guo and Sanjiv Kumar and Balint Miklos and Ray Kurzweil},
    year={2017},
    eprint={1705.00652},
    archivePrefix={arXiv},
    primaryClass={cs.CL}
}""",
    "GISTEmbed": """
@misc{solatorio2024gistembed,
    title={GISTEmbed: Guided In-sample Selection of Training Negatives for Text Embedding Fine-tuning},
    author={Aivin V. Solatorio},
    year={2024},
    eprint={2402.16829},
    archivePrefix={arXiv},
    primaryClass={cs.LG}
}""",
    "GradCache": """
@misc{gao2021scaling,
    title={Scaling Deep Contrastive Learning Batch Size under Memory Limited Setup},
    author={Luyu Gao and Yunyi Zhang and Jiawei Han and Jamie Callan},
    year={2021},
    eprint={2101.06983},
    archivePrefix={arXiv},
    primaryClass={cs.LG}
}""",
    "LoRA": """
@inproceedings{hu2022lora,
    title={LoRA: Low-Rank Adaptation of Large Language Models},
    author={Edward J Hu and Yelong Shen and Phillip Wallis and Zeyuan Allen-Zhu and Yuanzhi Li and Shean Wang and Lu Wang and Weizhu Chen},
    booktitle={International Conference on Learning Representations},
    year={2022},
    url={https://openreview.net/forum?id=nZeVKeeFYf9}
}""",
    "BGE M3-Embedding": M3_CITATION,
}


def citations_for(recipe: dict[str, Any], *, adapter: bool, m3: bool) -> list[str]:
    """The `CITATIONS` a run's card cites: its loss's papers, LoRA for an adapter, BGE-M3 for its modes or loss."""
    kind = LOSSES.get(recipe.get("loss", {}).get("loss", ""))
    names = []
    if kind is not None:
        names.append("GISTEmbed" if kind.guided else "MultipleNegativesRankingLoss")
        if kind.cached:
            names.append("GradCache")
    if adapter:
        names.append("LoRA")
    if m3 or (kind is not None and kind.m3):
        names.append("BGE M3-Embedding")
    return names


def loss_summary(recipe: dict[str, Any]) -> str:
    """The loss and its parameters in one sentence for the card."""
    loss = recipe.get("loss", {})
    name = loss.get("loss", "")
    kind = LOSSES.get(name)
    temperature = loss.get("temperature")
    parts = [f"{kind.title if kind else name}, temperature {temperature:g} (scale {1 / temperature:g})"]
    if kind is not None and kind.guided:
        guide = loss.get("guide_model_name_or_path") or "a frozen copy of the base model"
        parts.append(
            f"guide {guide} masking in-batch candidates it scores above the positive ({loss.get('gist_margin_strategy')} margin {loss.get('gist_margin')})"
        )
    if kind is not None and kind.cached:
        parts.append(f"GradCache mini-batches of {loss.get('mini_batch_size')}")
    if loss.get("kd_loss", "none") != "none":
        parts.append(f"distilling a teacher's scores with {loss['kd_loss']}")
    return "; ".join(parts)


def base_model_license(model_card_text: str | None) -> str | None:
    """The `license` of a base model's README front matter (what its Hub page shows), if it has one."""
    if not model_card_text:
        return None
    from huggingface_hub import ModelCard

    try:
        return ModelCard(model_card_text).data.license
    except Exception:  # a README without (valid) front matter has no license to carry over
        return None


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
        comparison: Base vs fine-tuned ranx results in every retrieval mode, with significance.
        adapter: Whether the folder holds a LoRA adapter rather than full weights.
        notes: Extra lines for the "Limitations" section (e.g. BGE-M3 heads that were not trained).
        include_examples: Put training-text examples and widget examples in the card.
        merge: What `st-bge merge` made this model from (`merging.merge_record`), if it did.
    """

    recipe: dict[str, Any] = field(default_factory=dict)
    recipe_changes: dict[str, Any] = field(default_factory=dict)
    data_summary: dict[str, Any] = field(default_factory=dict)
    comparison: RetrievalComparison | None = None
    adapter: bool = False
    notes: list[str] = field(default_factory=list)
    include_examples: bool = False
    dataset_ids: list[str] = field(default_factory=list)
    load_id: str | None = None
    m3: bool = False
    merge: dict[str, Any] | None = None
    template_path: Path = field(default_factory=template_path, init=False, repr=False)

    def __post_init__(self) -> None:
        # A public card names data and models, not the folders of the machine that trained them.
        self.recipe = without_local_paths(self.recipe)
        self.recipe_changes = without_local_paths(self.recipe_changes)
        self.data_summary = without_local_paths(self.data_summary)
        self.generate_widget_examples = self.include_examples
        # The card is a retrieval card: its usage snippet uses encode_query / encode_document.
        self.ir_model = True
        super().__post_init__()
        self.datasets = [*self.datasets, *(name for name in self.dataset_ids if name not in self.datasets)]
        extra_tags = ["st-bge", "retrieval", *(["lora", "peft"] if self.adapter else [])]
        self.tags = [*(self.tags or []), *(tag for tag in extra_tags if tag not in (self.tags or []))]

    def set_widget_examples(self, dataset: Any) -> None:
        # sentence-transformers fills the Hub widget and the usage snippet with training texts here, whatever
        # `generate_widget_examples` says; the card stays free of them unless the user opted in.
        if self.include_examples:
            super().set_widget_examples(dataset)

    def to_dict(self) -> dict[str, Any]:
        if not self.model_name:
            source = self.data_summary.get("source")
            self.model_name = f"{self.base_model or 'A model'} fine-tuned with st-bge" + (
                f" on {source}" if source else ""
            )
        card = super().to_dict()  # the template shows its dataset examples only if include_examples
        card["results_table"] = self.comparison.to_markdown(forgetting=False) if self.comparison else None
        card["comparison"] = self.comparison
        card["significance"] = self._significance(self.comparison)
        forgetting = self.comparison.forgetting if self.comparison else None
        card["forgetting"] = forgetting
        card["forgetting_table"] = forgetting.to_markdown() if forgetting else None
        card["forgetting_significance"] = self._significance(forgetting)
        card["few_queries"] = self.comparison is not None and self.comparison.eval_set.get("queries", 0) < FEW_QUERIES
        card["query_prompt"] = self.model.prompts.get("query") if self.model is not None else None
        card["load_id"] = self.model_id or self.load_id or "path/to/this/model"
        card["loss_summary"] = loss_summary(self.recipe) if self.recipe.get("loss") else None
        card["citations"] = {
            **card.get("citations", {}),
            **{name: CITATIONS[name] for name in citations_for(self.recipe, adapter=self.adapter, m3=self.m3)},
        }
        card.update(card_details(self.model))
        if self.comparison is not None:
            # The Hub shows the model-index as the model's results: the ranx scores of this model, not the
            # scores sentence-transformers logged for the last evaluation during training.
            card["model-index"] = eval_results_to_model_index(card["model_name"], self.eval_results())
        return card

    def _significance(self, results: RetrievalComparison | None) -> list[str]:
        """The primary metric of the fine-tuned model against the base, per mode, in words."""
        if results is None or len(results.models) < 2:
            return []
        metric = self.recipe.get("evaluation", {}).get("eval_primary_metric") or results.metrics[0]
        lines = []
        for mode, comparison in results.modes.items():
            if len(comparison.models) > 1 and metric in comparison.metrics:
                prefix = "" if mode == "dense" else f"{mode}: "
                lines.append(prefix + comparison.in_words(comparison.models[-1], metric))
        return lines

    def eval_results(self) -> list[EvalResult]:
        """The fine-tuned model's ranx scores as Hub `EvalResult`s (task: information retrieval), one per metric and
        mode; a mode other than dense is the metric's configuration (`metric_config`) and named in `metric_name`.
        The forgetting check's set comes after the domain's, as a dataset of its own."""
        results = _eval_results(self.comparison)
        if self.comparison.forgetting is not None:
            results += _eval_results(self.comparison.forgetting)
        return results

    def save_inputs(self, folder: str | Path) -> None:
        """Write what the card is rendered from (`CARD_INPUTS`; the results are in `eval_results.json`, which
        `RetrievalComparison.save` writes beside it); see `card_data_from_folder`."""
        inputs = {name: getattr(self, name) for name in CARD_INPUT_FIELDS}
        inputs["base_model"] = self.base_model
        path = Path(folder) / CARD_INPUTS
        path.write_text(json.dumps(inputs, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def _eval_results(results: RetrievalComparison) -> list[EvalResult]:
    """The last model's scores on one retrieval set, per mode and metric, as Hub `EvalResult`s."""
    name = results.eval_set.get("name", "retrieval")
    return [
        EvalResult(
            task_type="information-retrieval",
            task_name="Information Retrieval",
            dataset_type=name,
            dataset_name=name,
            metric_type=metric.replace("@", "_at_"),
            metric_name=metric if mode == "dense" else f"{metric} ({mode})",
            metric_config=None if mode == "dense" else mode,
            metric_value=round(comparison.scores[comparison.models[-1]][metric], 4),
        )
        for mode, comparison in results.modes.items()
        for metric in comparison.metrics
    ]


def without_local_paths(value: Any) -> Any:
    """`value` with every local path (absolute, or existing here) shortened to its last part; Hub ids stay."""
    if isinstance(value, dict):
        return {key: without_local_paths(item) for key, item in value.items()}
    if isinstance(value, list):
        return [without_local_paths(item) for item in value]
    if isinstance(value, str) and ", " in value:  # a mixture's sources
        return ", ".join(without_local_paths(part) for part in value.split(", "))
    if isinstance(value, str) and value and _is_local_path(value):
        return Path(value).name
    return value


def _is_local_path(value: str) -> bool:
    try:
        return Path(value).is_absolute() or Path(value).exists()
    except OSError:  # a sentence, not a path (too long for a file name)
        return False


def recorded_base_model(folder: str | Path) -> str | None:
    """The base model's Hub id a training run's card inputs (`CARD_INPUTS`) record, or None (none recorded, a local
    base, or no card inputs)."""
    path = Path(folder) / CARD_INPUTS
    if not path.is_file():
        return None
    return json.loads(path.read_text(encoding="utf-8")).get("base_model") or None


def card_data_from_folder(folder: str | Path, **overrides: Any) -> StBgeModelCardData:
    """Card data saved by a training run (`CARD_INPUTS`), with `overrides` (e.g. `adapter=False`, `model_id`).

    Raises:
        FileNotFoundError: the folder was not written by `st-bge train`.
    """
    inputs = json.loads((Path(folder) / CARD_INPUTS).read_text(encoding="utf-8"))
    base_model = inputs.pop("base_model")
    card_data = StBgeModelCardData(**{"comparison": RetrievalComparison.load(folder), **inputs, **overrides})
    card_data.base_model = base_model
    return card_data


def attach_card_data(
    model: SentenceTransformer, card_data: StBgeModelCardData, *, base_model: str | None = None
) -> None:
    """Give `model` st-bge card data; `base_model` is recorded when it is a Hub id (not a local path)."""
    card_data.local_files_only = card_data.local_files_only or constants.HF_HUB_OFFLINE
    if base_model and not Path(base_model).exists():
        card_data.base_model = base_model
    # The base model's license carries over unless the recipe names one (`license`).
    card_data.license = card_data.license or base_model_license(getattr(model, "_model_card_text", None))
    model.model_card_data = card_data
    model._model_card_text = None  # never reuse the base model's own README
    card_data.register_model(model)
