"""Base vs fine-tuned retrieval results, as `eval_results.json` and a markdown table (`eval_results.md`)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

RESULTS_JSON = "eval_results.json"
RESULTS_MARKDOWN = "eval_results.md"


@dataclass
class RetrievalComparison:
    """ranx metrics of the base and the fine-tuned model on one retrieval set."""

    eval_set: Mapping[str, Any]
    metrics: list[str]
    fine_tuned: dict[str, float]
    base: dict[str, float] | None = None
    delta: dict[str, float] = field(init=False)

    def __post_init__(self) -> None:
        self.delta = {m: self.fine_tuned[m] - self.base[m] for m in self.metrics} if self.base else {}

    def to_markdown(self) -> str:
        """A GitHub/Hub markdown table: one row per metric, base | fine-tuned | Δ."""
        if self.base is None:
            lines = ["| Metric | Fine-tuned |", "|:--|--:|"]
            lines += [f"| {m} | {self.fine_tuned[m]:.4f} |" for m in self.metrics]
        else:
            lines = ["| Metric | Base | Fine-tuned | Δ |", "|:--|--:|--:|--:|"]
            lines += [
                f"| {m} | {self.base[m]:.4f} | {self.fine_tuned[m]:.4f} | {self.delta[m]:+.4f} |" for m in self.metrics
            ]
        return "\n".join(lines)

    def save(self, output_dir: str | Path) -> None:
        """Write `eval_results.json` and `eval_results.md` into `output_dir`."""
        output_dir = Path(output_dir)
        (output_dir / RESULTS_JSON).write_text(json.dumps(asdict(self), indent=2, ensure_ascii=False) + "\n")
        title = f"Retrieval on {self.eval_set.get('name', 'the evaluation set')}"
        (output_dir / RESULTS_MARKDOWN).write_text(f"## {title}\n\n{self.to_markdown()}\n", encoding="utf-8")
