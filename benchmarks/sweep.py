"""The defaults sweep: the quickstart recipe against a few ways of spending its training time, on two domains.

    python benchmarks/sweep.py --output benchmarks/sweep_results.md   # MBPP and the Chinese medical set
    python benchmarks/sweep.py --sets mbpp --settings today +mined   # a part of it

Every setting is the quickstart recipe (all-MiniLM-L6-v2 from PyPI, LoRA, cached GIST) with a few fields
overridden, trained with `st_bge.train` on the same rows, and evaluated on the same held-out queries; the table
compares each setting with today's defaults (the first) by ranx's paired t-test and st-bge's seeded Fisher test,
with each run's training wall time. The Chinese set is read from ../shared/data (not shipped), trained on a sample
of its train queries (CPU budget) and evaluated on its test queries against the whole corpus.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import tables
from suite import REPO, SHARED_DATA, run_sets

from st_bge import parse_recipe, train
from st_bge.data import load_training_data
from st_bge.evaluation import compare_modes
from st_bge.training import FINE_TUNED, build_evaluator

# Where the settings differ from the quickstart recipe; the first is the baseline every other is compared with.
SETTINGS = {
    "today": [],
    "+mined": ["--mine_hard_negatives", "true", "--mine_num_negatives", "1"],
    "6 epochs": ["--num_train_epochs", "6"],
    "batch 64": ["--per_device_train_batch_size", "64"],
}
# Each set: the recipe fields that point the quickstart at it.
SETS = {
    "mbpp": [],  # the quickstart's own data and split: 80% of the queries trained on, 20% held out
    "zh_medical": [
        *("--dataset_name_or_path", str(SHARED_DATA / "zh_medical_dialogue"), "--dataset_split", "train"),
        *("--max_train_samples", "480", "--eval_split_size", "0"),
        *("--eval_dataset_name_or_path", str(SHARED_DATA / "zh_medical_dialogue"), "--eval_dataset_split", "test"),
        # 747 queries x 7,244 answers: evaluated once, after training (the last epoch is the model)
        *("--eval_strategy", "no", "--save_strategy", "no", "--load_best_model_at_end", "false"),
        *("--eval_bm25", "false", "--language", "zh"),
    ],
}


def run_set(name: str, settings: list[str], output_root: Path) -> dict:
    """Train every setting on one set; its record: the comparison of their held-out runs, each one's wall time
    (training and evaluations) and the Trainer's `train_runtime`."""
    runs, seconds, runtimes, evaluator, data = {}, {}, {}, None, None
    for setting in settings:
        argv = ["--config", str(REPO / "recipes" / "quickstart.yaml"), *SETS[name], *SETTINGS[setting]]
        argv += ["--output_dir", str(output_root / name / setting.replace(" ", "_")), "--eval_base_model", "false"]
        recipe = parse_recipe(argv)
        start = time.perf_counter()
        result = train(recipe)
        seconds[setting] = time.perf_counter() - start
        log = result.trainer.state.log_history
        runtimes[setting] = next(entry["train_runtime"] for entry in log if "train_runtime" in entry)
        if evaluator is None:  # the same held-out queries for every setting (same split seed and rows)
            data = load_training_data(recipe.data)
            evaluator = build_evaluator(recipe, data)
        runs[setting] = result.runs[FINE_TUNED].runs  # the run's own final evaluation of those queries
    comparison = compare_modes(
        evaluator.qrels, runs, evaluator.metrics, eval_set={**data.eval.summary(), "top_k": evaluator.top_k}
    )
    return {
        "bench": "sweep",
        "set": name,
        "settings": settings,
        "comparison": comparison.to_dict(),
        "seconds": seconds,
        "train_runtime": runtimes,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sets", nargs="+", choices=list(SETS), default=list(SETS))
    parser.add_argument("--settings", nargs="+", choices=list(SETTINGS), default=list(SETTINGS))
    parser.add_argument("--output", type=Path, help="Also write the tables to this Markdown file.")
    args = parser.parse_args()
    if args.settings[0] != "today":
        parser.error("the first setting is the baseline: start --settings with today")
    run_sets(args.sets, args.settings, run_set, tables.sweep, args.output)


if __name__ == "__main__":
    main()
