"""Compare models on one retrieval set with ranx: means, relative change and significance against a baseline.

Significance uses ranx's `compare` with two paired tests over the per-query scores: Student's paired t-test and
Fisher's randomisation test (a permutation test with no normality assumption). The results are written as
`<stem>.json`, `<stem>.md` (GitHub/Hub markdown) and `<stem>.tex` (ranx's LaTeX table).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from ranx import Qrels, Run, compare

from st_bge.evaluation.metrics import evaluate_run, quiet_numba
from st_bge.markdown import markdown_table

STAT_TESTS = {"student": "paired t-test", "fisher": "Fisher's randomisation test"}
FISHER_PERMUTATIONS = 1000


@dataclass
class ModelComparison:
    """ranx metrics of several models on one retrieval set; every model after the first is compared with it.

    Attributes:
        eval_set: Name and sizes of the retrieval set (no text).
        metrics: ranx metric names, in table order.
        models: Model names; `models[0]` is the baseline.
        scores: `scores[model][metric]` = mean over the queries.
        p_values: `p_values[model][test][metric]` = p of `model` vs the baseline (tests: `STAT_TESTS`).
        max_p: Significance threshold.
        latex: ranx's LaTeX table (first test's superscripts).
    """

    eval_set: dict[str, Any]
    metrics: list[str]
    models: list[str]
    scores: dict[str, dict[str, float]]
    p_values: dict[str, dict[str, dict[str, float]]]
    max_p: float
    latex: str = ""

    @property
    def baseline(self) -> str:
        return self.models[0]

    def delta(self, model: str, metric: str) -> float:
        return self.scores[model][metric] - self.scores[self.baseline][metric]

    def relative(self, model: str, metric: str) -> float | None:
        """Change against the baseline in percent (None when the baseline scores 0)."""
        base = self.scores[self.baseline][metric]
        return 100.0 * self.delta(model, metric) / base if base else None

    def significant(self, model: str, metric: str) -> bool:
        """Significant by every test that was run."""
        return all(p[metric] <= self.max_p for p in self.p_values[model].values())

    def to_markdown(self) -> str:
        """One row per metric: baseline, then each model with Δ, Δ % and the p-values; * marks significance."""
        header = ["Metric", self.baseline]
        for model in self.models[1:]:
            header += [model, "Δ", "Δ %"] + [f"p ({STAT_TESTS[test]})" for test in self.p_values[model]]
        rows = []
        for metric in self.metrics:
            row = [metric, f"{self.scores[self.baseline][metric]:.4f}"]
            for model in self.models[1:]:
                mark = "*" if self.significant(model, metric) else ""
                relative = self.relative(model, metric)
                row += [
                    f"{self.scores[model][metric]:.4f}{mark}",
                    f"{self.delta(model, metric):+.4f}",
                    f"{relative:+.1f}%" if relative is not None else "n/a",
                ]
                row += [_format_p(test, p[metric]) for test, p in self.p_values[model].items()]
            rows.append(row)
        table = markdown_table(header, rows)
        if len(self.models) > 1:
            tests = " and ".join(STAT_TESTS[test] for test in next(iter(self.p_values.values())))
            table += f"\n\n\\* p ≤ {self.max_p} against {self.baseline} ({tests})."
        return table

    def to_dict(self) -> dict[str, Any]:
        result = asdict(self)
        result.pop("latex")
        result["baseline"] = self.baseline
        result["delta"] = {m: {k: self.delta(m, k) for k in self.metrics} for m in self.models[1:]}
        result["relative_percent"] = {m: {k: self.relative(m, k) for k in self.metrics} for m in self.models[1:]}
        return result

    @classmethod
    def load(cls, output_dir: str | Path, stem: str = "eval_results") -> ModelComparison | None:
        """The comparison `save` wrote into `output_dir` (derived fields recomputed), or None if there is none."""
        path = Path(output_dir) / f"{stem}.json"
        if not path.is_file():
            return None
        data = json.loads(path.read_text(encoding="utf-8"))
        return cls(**{key: data[key] for key in ("eval_set", "metrics", "models", "scores", "p_values", "max_p")})

    def save(self, output_dir: str | Path, stem: str = "eval_results") -> list[Path]:
        """Write `<stem>.json`, `<stem>.md` and `<stem>.tex` into `output_dir`; returns their paths."""
        output_dir = Path(output_dir)
        output_dir.mkdir(parents=True, exist_ok=True)
        paths = [output_dir / f"{stem}.{suffix}" for suffix in ("json", "md", "tex")]
        paths[0].write_text(json.dumps(self.to_dict(), indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
        title = f"Retrieval on {self.eval_set.get('name', 'the evaluation set')}"
        paths[1].write_text(f"## {title}\n\n{self.to_markdown()}\n", encoding="utf-8")
        paths[2].write_text(self.latex, encoding="utf-8")
        return paths


def compare_runs(
    qrels: Qrels,
    runs: Mapping[str, Run],
    metrics: Sequence[str],
    *,
    eval_set: dict[str, Any],
    stat_tests: Sequence[str] = tuple(STAT_TESTS),
    max_p: float = 0.05,
    random_seed: int = 42,
) -> ModelComparison:
    """Compare `runs` (model name -> run, the first is the baseline) on `qrels` with ranx."""
    names = list(runs)
    if len(names) == 1:  # nothing to compare with: means only
        scores = {names[0]: evaluate_run(qrels, runs[names[0]], metrics)}
        return ModelComparison(eval_set, list(metrics), names, scores, p_values={}, max_p=max_p)
    # ranx names the models after the runs and stores scores inside them: give it renamed copies.
    copies = [Run(run.to_dict(), name=name) for name, run in runs.items()]
    scores: dict[str, dict[str, float]] = {}
    p_values: dict[str, dict[str, dict[str, float]]] = {name: {} for name in names[1:]}
    latex = ""
    for test in stat_tests:
        with quiet_numba():
            report = compare(
                qrels,
                copies,
                list(metrics),
                stat_test=test,
                n_permutations=FISHER_PERMUTATIONS,
                max_p=max_p,
                random_seed=random_seed,
                make_comparable=True,
                rounding_digits=4,
            )
        scores = {name: {m: float(report.results[name][m]) for m in metrics} for name in names}
        for name in names[1:]:
            pair = report.comparisons[names[0], name]
            p_values[name][test] = {m: _p_value(pair[m]["p_value"]) for m in metrics}
        latex = latex or report.to_latex()
    return ModelComparison(
        eval_set=eval_set,
        metrics=list(metrics),
        models=names,
        scores=scores,
        p_values=p_values,
        max_p=max_p,
        latex=latex,
    )


def _format_p(test: str, p: float) -> str:
    # A randomisation test with N permutations cannot resolve p below 1/N: show the bound, not 0.
    if test == "fisher" and p < 1 / FISHER_PERMUTATIONS:
        return f"< {1 / FISHER_PERMUTATIONS:g}"
    return f"{p:.3g}"


def _p_value(p: float) -> float:
    # The t-test gives NaN when every query scores the same under both models (0 / 0): no difference at all.
    return 1.0 if math.isnan(p) else float(p)
