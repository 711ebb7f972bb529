"""Compare models on one retrieval set with ranx: means, relative change and significance against a baseline, per
retrieval mode (`ModelComparison`), every mode of a set in one table (`RetrievalComparison`), BM25 beside them.

Significance uses ranx's `compare` with two paired tests over the per-query scores: Student's paired t-test and
Fisher's randomisation test (a permutation test with no normality assumption). The results are written as
`<stem>.json`, `<stem>.md` (GitHub/Hub markdown) and `<stem>.tex` (ranx's LaTeX table).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from ranx import Qrels, Run, compare

from st_bge.evaluation.metrics import evaluate_run, fisher_randomisation_p, per_query_scores, quiet_numba, to_run
from st_bge.markdown import markdown_table

STAT_TESTS = {"student": "paired t-test", "fisher": "Fisher's randomisation test"}
FISHER_PERMUTATIONS = 1000


@dataclass
class ModelComparison:
    """ranx metrics of several models on one retrieval set in one retrieval mode; every model after the first is
    compared with it, and every model with the reference run (BM25) if there is one.

    Attributes:
        eval_set: Name and sizes of the retrieval set (no text).
        metrics: ranx metric names, in table order.
        models: Model names; `models[0]` is the baseline.
        scores: `scores[model][metric]` = mean over the queries.
        p_values: `p_values[model][test][metric]` = p of `model` vs the baseline (tests: `STAT_TESTS`).
        max_p: Significance threshold.
        latex: ranx's LaTeX table (first test's superscripts).
        mode: The retrieval mode of the models' runs (dense, sparse, colbert, hybrid).
        reference: Name of a run that is not a model (BM25), shown beside the models; None if there is none.
        reference_scores: `reference_scores[metric]`: the reference run's means.
        reference_p_values: `reference_p_values[model][test][metric]` = p of `model` vs the reference.
    """

    eval_set: dict[str, Any]
    metrics: list[str]
    models: list[str]
    scores: dict[str, dict[str, float]]
    p_values: dict[str, dict[str, dict[str, float]]]
    max_p: float
    latex: str = ""
    mode: str = "dense"
    reference: str | None = None
    reference_scores: dict[str, float] = field(default_factory=dict)
    reference_p_values: dict[str, dict[str, dict[str, float]]] = field(default_factory=dict)
    # Half-width of the 95% confidence interval of each mean (normal approximation over the per-query scores), by
    # model (and reference) and metric: the error bars of the plots.
    ci95: dict[str, dict[str, float]] = field(default_factory=dict)

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
        """Significant against the baseline by every test that was run."""
        return all(p[metric] <= self.max_p for p in self.p_values[model].values())

    def in_words(self, model: str, metric: str) -> str:
        """`metric` of `model` against the baseline as a sentence: the change, and whether it is significant with
        every test's p-value, so that a reader need not infer non-significance from a missing star."""
        relative = self.relative(model, metric)
        change = f"{self.delta(model, metric):+.4f}" + ("" if relative is None else f", {relative:+.1f}%")
        tests = "; ".join(
            f"p = {_format_p(test, p[metric])}, {STAT_TESTS.get(test, test)}"
            for test, p in self.p_values[model].items()
        )
        verdict = "significant" if self.significant(model, metric) else "not significant"
        return (
            f"{metric} {self.scores[self.baseline][metric]:.4f} ({self.baseline}) -> {self.scores[model][metric]:.4f} "
            f"({model}), {change}: {verdict} at p ≤ {self.max_p:g} ({tests})"
        )

    def significant_against_reference(self, model: str, metric: str) -> bool:
        """Significantly different from the reference run (BM25) by every test that was run."""
        tests = self.reference_p_values.get(model, {})
        return bool(tests) and all(p[metric] <= self.max_p for p in tests.values())

    def to_markdown(self) -> str:
        """One row per metric: baseline, then each model with Δ, Δ % and the p-values; * marks significance."""
        return comparison_table({self.mode: self}, show_mode=False)

    def to_dict(self) -> dict[str, Any]:
        result = asdict(self)
        result.pop("latex")
        result["baseline"] = self.baseline
        result["delta"] = {m: {k: self.delta(m, k) for k in self.metrics} for m in self.models[1:]}
        result["relative_percent"] = {m: {k: self.relative(m, k) for k in self.metrics} for m in self.models[1:]}
        return result

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ModelComparison:
        """The inverse of `to_dict` (the derived fields are recomputed, not read)."""
        return cls(**{f.name: data[f.name] for f in fields(cls) if f.name in data})


@dataclass
class RetrievalComparison:
    """Models compared on one retrieval set in every retrieval mode they have, BM25 beside them.

    Attributes:
        modes: mode -> the comparison of the models that have that mode, dense first. A model without a mode (a
            dense model beside a BGE-M3) is left out of that mode's comparison.
        notes: How the runs were made, where it matters for reading them (e.g. how ColBERT searched).
    """

    modes: dict[str, ModelComparison]
    notes: list[str] = field(default_factory=list)
    # The same models on a general-domain set (`forgetting_dataset`): what the fine-tune cost outside its domain.
    forgetting: RetrievalComparison | None = None

    @property
    def primary(self) -> ModelComparison:
        """The dense comparison (or the first mode's)."""
        return self.modes.get("dense") or next(iter(self.modes.values()))

    @property
    def eval_set(self) -> dict[str, Any]:
        return self.primary.eval_set

    @property
    def metrics(self) -> list[str]:
        return self.primary.metrics

    @property
    def max_p(self) -> float:
        return self.primary.max_p

    @property
    def models(self) -> list[str]:
        """Every model, in the order given (the first is the baseline)."""
        return list(dict.fromkeys(model for comparison in self.modes.values() for model in comparison.models))

    def to_markdown(self, *, forgetting: bool = True) -> str:
        """One table, a row per (mode, metric), then the notes; then the forgetting check's, if there is one (and
        `forgetting`)."""
        table = comparison_table(self.modes, show_mode=len(self.modes) > 1)
        text = table + "".join(f"\n\n{note}" for note in self.notes)
        if forgetting and self.forgetting is not None:
            general = self.forgetting.eval_set
            text += (
                f"\n\n**Forgetting check** on `{general.get('name')}` (general domain, not trained on: "
                f"{general.get('queries')} queries, {general.get('corpus')} documents):\n\n{self.forgetting.to_markdown()}"
            )
        return text

    def to_dict(self) -> dict[str, Any]:
        data = {"modes": {mode: c.to_dict() for mode, c in self.modes.items()}, "notes": list(self.notes)}
        if self.forgetting is not None:
            data["forgetting"] = self.forgetting.to_dict()
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> RetrievalComparison:
        modes = {mode: ModelComparison.from_dict(value) for mode, value in data["modes"].items()}
        forgetting = cls.from_dict(data["forgetting"]) if data.get("forgetting") else None
        return cls(modes=modes, notes=list(data.get("notes", [])), forgetting=forgetting)

    @classmethod
    def load(cls, output_dir: str | Path, stem: str = "eval_results") -> RetrievalComparison | None:
        """The comparison `save` wrote into `output_dir`, or None if there is none."""
        path = Path(output_dir) / f"{stem}.json"
        if not path.is_file():
            return None
        return cls.from_dict(json.loads(path.read_text(encoding="utf-8")))

    def save(self, output_dir: str | Path, stem: str = "eval_results") -> list[Path]:
        """Write `<stem>.json`, `<stem>.md` and `<stem>.tex` (ranx's table of each mode) into `output_dir`."""
        output_dir = Path(output_dir)
        output_dir.mkdir(parents=True, exist_ok=True)
        paths = [output_dir / f"{stem}.{suffix}" for suffix in ("json", "md", "tex")]
        paths[0].write_text(json.dumps(self.to_dict(), indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
        title = f"Retrieval on {self.eval_set.get('name', 'the evaluation set')}"
        paths[1].write_text(f"## {title}\n\n{self.to_markdown()}\n", encoding="utf-8")
        paths[2].write_text("\n".join(self._latex_tables()))
        return paths

    def _latex_tables(self) -> list[str]:
        """ranx's LaTeX table of each mode (each after a `% mode` comment where there are several), then the
        forgetting check's."""
        many = len(self.modes) > 1
        tables = [f"% {mode}\n{c.latex}" if many else c.latex for mode, c in self.modes.items()]
        if self.forgetting is not None:
            tables += [f"% forgetting check: {self.forgetting.eval_set.get('name')}", *self.forgetting._latex_tables()]
        return tables


def comparison_table(modes: Mapping[str, ModelComparison], *, show_mode: bool) -> str:
    """The markdown table of `modes` (mode -> comparison): a row per (mode, metric); the reference (BM25) column;
    per model its score and, against its mode's baseline, Δ, Δ % and the p-values (blank where a model lacks the
    mode). `*` marks significance against the baseline, `†` against the reference."""
    comparisons = list(modes.values())
    models = list(dict.fromkeys(model for c in comparisons for model in c.models))
    tests = next((list(p) for c in comparisons for p in [*c.p_values.values(), *c.reference_p_values.values()]), [])
    reference = next((c.reference for c in comparisons if c.reference), None)
    header = ["Mode"] * show_mode + ["Metric"] + [reference] * bool(reference) + [models[0]]
    for model in models[1:]:
        header += [model, "Δ", "Δ %"] + [f"p ({STAT_TESTS[test]})" for test in tests]
    rows = []
    for mode, comparison in modes.items():
        for metric in comparison.metrics:
            row = [mode] * show_mode + [metric]
            if reference:
                row.append(f"{comparison.reference_scores[metric]:.4f}" if comparison.reference else "")
            for index, model in enumerate(models):
                row += _model_cells(comparison, model, metric, tests, first_column=index == 0)
            rows.append(row)
    table = markdown_table(header, rows)
    max_p = comparisons[0].max_p
    names = " and ".join(STAT_TESTS[test] for test in tests)
    baselines = list(dict.fromkeys(c.baseline for c in comparisons if len(c.models) > 1))
    if baselines:
        table += f"\n\n\\* p ≤ {max_p} against {' / '.join(baselines)} ({names})."
    if reference and any(c.reference_p_values for c in comparisons):
        table += f"\n\n† p ≤ {max_p} against {reference} ({names})."
    return table


def _model_cells(comparison: ModelComparison, model: str, metric: str, tests: list[str], *, first_column: bool):
    """A model's cells in one row: its score, then (except in the first model's column) Δ, Δ % and the p-values."""
    width = 1 if first_column else 3 + len(tests)
    if model not in comparison.models:
        return [""] * width
    compared = model != comparison.baseline
    mark = "*" * (compared and comparison.significant(model, metric))
    mark += "†" * comparison.significant_against_reference(model, metric)
    cells = [f"{comparison.scores[model][metric]:.4f}{mark}"]
    if first_column:
        return cells
    if not compared:
        return cells + [""] * (width - 1)
    relative = comparison.relative(model, metric)
    cells += [f"{comparison.delta(model, metric):+.4f}", f"{relative:+.1f}%" if relative is not None else "n/a"]
    return cells + [_format_p(test, comparison.p_values[model][test][metric]) for test in tests]


def compare_runs(
    qrels: Qrels,
    runs: Mapping[str, Run],
    metrics: Sequence[str],
    *,
    eval_set: dict[str, Any],
    stat_tests: Sequence[str] = tuple(STAT_TESTS),
    max_p: float = 0.05,
    random_seed: int = 42,
    mode: str = "dense",
    reference: tuple[str, Run] | None = None,
) -> ModelComparison:
    """Compare `runs` (model name -> run, the first is the baseline) on `qrels` with ranx; with `reference`
    (name, run), e.g. BM25's, every model is also tested against that run."""
    names = list(runs)
    all_runs = {**runs, reference[0]: reference[1]} if reference else dict(runs)
    if len(all_runs) == 1:  # nothing to compare with: means only
        scores = {names[0]: evaluate_run(qrels, runs[names[0]], metrics)}
        return ModelComparison(eval_set, list(metrics), names, scores, p_values={}, max_p=max_p, mode=mode)
    # ranx names the models after the runs and stores scores inside them: give it renamed copies.
    copies = [to_run(run.to_dict(), name=name) for name, run in all_runs.items()]
    scores: dict[str, dict[str, float]] = {}
    p_values: dict[str, dict[str, dict[str, float]]] = {name: {} for name in names[1:]}
    reference_p: dict[str, dict[str, dict[str, float]]] = {name: {} for name in names} if reference else {}
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
        scores = {name: {m: float(report.results[name][m]) for m in metrics} for name in all_runs}
        for name in names[1:]:
            p_values[name][test] = _p_values(report, test, qrels, all_runs, (names[0], name), metrics, random_seed)
        for name in reference_p:
            pair = (name, reference[0])
            reference_p[name][test] = _p_values(report, test, qrels, all_runs, pair, metrics, random_seed)
        latex = latex or report.to_latex()
    return ModelComparison(
        eval_set=eval_set,
        metrics=list(metrics),
        models=names,
        scores={name: scores[name] for name in names},
        p_values=p_values,
        max_p=max_p,
        latex=latex,
        mode=mode,
        reference=reference[0] if reference else None,
        reference_scores=scores[reference[0]] if reference else {},
        reference_p_values=reference_p,
        ci95={name: {m: _ci95(per_query_scores(qrels, run, m)) for m in metrics} for name, run in all_runs.items()},
    )


def _ci95(per_query: Mapping[str, float]) -> float:
    """1.96 standard errors of the mean of per-query scores (0 for fewer than two queries)."""
    values = list(per_query.values())
    if len(values) < 2:
        return 0.0
    mean = sum(values) / len(values)
    variance = sum((value - mean) ** 2 for value in values) / (len(values) - 1)
    return 1.96 * math.sqrt(variance / len(values))


def _p_values(
    report, test: str, qrels: Qrels, runs: Mapping[str, Run], pair: tuple[str, str], metrics, seed: int
) -> dict[str, float]:
    """The p-value of each metric for `pair`: ranx's for the t-test, st-bge's seeded Fisher test (reproducible
    run to run, `fisher_randomisation_p`) for Fisher."""
    if test != "fisher":
        return {m: _p_value(report.comparisons[pair][m]["p_value"]) for m in metrics}
    p_values = {}
    for metric in metrics:
        first, second = (per_query_scores(qrels, runs[name], metric) for name in pair)
        differences = [second[query] - first[query] for query in first]
        p_values[metric] = fisher_randomisation_p(differences, FISHER_PERMUTATIONS, seed)
    return p_values


def compare_modes(
    qrels: Qrels,
    runs: Mapping[str, Mapping[str, Run]],
    metrics: Sequence[str],
    *,
    eval_set: dict[str, Any],
    reference: tuple[str, Run] | None = None,
    notes: Sequence[str] = (),
    **compare_kwargs: Any,
) -> RetrievalComparison:
    """`compare_runs` in every mode: `runs[model][mode]`; a mode's baseline is the first model that has it."""
    modes = list(dict.fromkeys(mode for model_runs in runs.values() for mode in model_runs))
    comparisons = {
        mode: compare_runs(
            qrels,
            {model: model_runs[mode] for model, model_runs in runs.items() if mode in model_runs},
            metrics,
            eval_set=eval_set,
            mode=mode,
            reference=reference,
            **compare_kwargs,
        )
        for mode in modes
    }
    return RetrievalComparison(modes=comparisons, notes=list(notes))


def _format_p(test: str, p: float) -> str:
    # A randomisation test with N permutations cannot resolve p below 1/N: show the bound, not 0.
    if test == "fisher" and p < 1 / FISHER_PERMUTATIONS:
        return f"< {1 / FISHER_PERMUTATIONS:g}"
    return f"{p:.3g}"


def _p_value(p: float) -> float:
    # The t-test gives NaN when every query scores the same under both models (0 / 0): no difference at all.
    return 1.0 if math.isnan(p) else float(p)
