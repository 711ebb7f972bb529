"""Dense-only vs unified fine-tuning on the quickstart's held-out queries: every mode and the hybrid, with significance.

    st-bge train recipes/quickstart.yaml --output_dir outputs/qs-dense
    st-bge train recipes/quickstart-unified.yaml --output_dir outputs/qs-unified
    python benchmarks/m3_quickstart.py --recipe recipes/quickstart.yaml \\
        --models dense=outputs/qs-dense unified=outputs/qs-unified --output_dir outputs/qs-compare

The eval set is the recipe's own (the test split, or `eval_split_size` held out with `split_seed`), read the way training read it, so every
model is scored on the queries none of them trained on. The base model is the first column; the dense fine-tune
is compared with it in the dense mode, the unified fine-tune in all its modes (its sparse, ColBERT and hybrid modes
have no baseline: the base model has no such heads), and every model with BM25. A second table compares the two
fine-tunes directly, mode by mode, the dense fine-tune (dense mode) as the baseline of every row.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import tables

from st_bge.config import ModelArguments, parse_recipe
from st_bge.data import load_training_data
from st_bge.evaluation.bm25 import bm25_run
from st_bge.evaluation.comparison import RetrievalComparison, compare_modes, compare_runs
from st_bge.evaluation.metrics import to_qrels
from st_bge.evaluation.retrieval import mode_notes, retrieve_modes
from st_bge.modeling import load_model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--recipe", required=True, help="The recipe whose held-out split to evaluate on.")
    parser.add_argument("--models", nargs="+", required=True, help="name=folder of each fine-tuned model.")
    parser.add_argument("--output_dir", required=True)
    args = parser.parse_args()

    recipe = parse_recipe(["--config", args.recipe])
    held_out = load_training_data(recipe.data).eval
    evaluation = recipe.evaluation
    qrels = to_qrels(held_out.qrels, name=held_out.name)
    models = {"base": recipe.model.model_name_or_path, **dict(spec.split("=", 1) for spec in args.models)}
    runs = {}
    for name, path in models.items():
        model = load_model(ModelArguments(model_name_or_path=path, max_seq_length=recipe.model.max_seq_length))
        runs[name] = retrieve_modes(model, held_out, top_k=evaluation.eval_top_k, show_progress_bar=False)
    bm25 = ("BM25", bm25_run(held_out, top_k=evaluation.eval_top_k))
    eval_set = {**held_out.summary(), "top_k": evaluation.eval_top_k}
    against_base = compare_modes(
        qrels,
        {name: mode_runs.runs for name, mode_runs in runs.items()},
        evaluation.eval_metrics,
        eval_set=eval_set,
        reference=bm25,
        notes=mode_notes(runs, evaluation.eval_top_k),
    )
    # The fine-tunes against each other: every run of the unified model against the dense fine-tune's dense run.
    dense_name, *others = list(models)[1:]
    head_to_head = {}
    for other in others:
        for mode, run in runs[other].runs.items():
            head_to_head[mode] = compare_runs(
                qrels,
                {f"{dense_name} (dense)": runs[dense_name].runs["dense"], f"{other} ({mode})": run},
                evaluation.eval_metrics,
                eval_set=eval_set,
                mode=mode,
            )
    output_dir = Path(args.output_dir)
    head_to_head = RetrievalComparison(head_to_head)
    against_base.save(output_dir, stem="against_base")
    head_to_head.save(output_dir, stem="head_to_head")
    (output_dir / "models.json").write_text(json.dumps(models, indent=2) + "\n")
    records = [
        {"bench": "m3-quickstart", "table": table, "models": models, "comparison": result.to_dict()}
        for table, result in (("against_base", against_base), ("head_to_head", head_to_head))
    ]
    for record in records:
        print(json.dumps(record), flush=True)
    print(f"\n{tables.m3_quickstart(records)}")


if __name__ == "__main__":
    main()
