"""`st-bge train RECIPE.yaml` and `st-bge eval`: fine-tune from a recipe; evaluate and compare models."""

from __future__ import annotations

from st_bge.commands.base import FLAGS, Command, ParserNames


class TrainCommand(Command):
    name = "train"
    help = "fine-tune a model from a recipe"

    def run(self, argv: list[str], names: ParserNames) -> int:
        from st_bge.config import parse_recipe
        from st_bge.training import train

        result = train(parse_recipe(argv, **names))
        if not result.trainer.is_world_process_zero():
            return 0
        if result.comparison is None:
            print(
                f"\nSaved to {result.output_dir} (no evaluation set: set eval_split_size or eval_dataset_name_or_path)"
            )
            return 0
        eval_set = result.comparison.eval_set
        print(
            f"\nRetrieval on {eval_set['name']} ({eval_set['queries']} queries, {eval_set['corpus']} documents), "
            f"ranx, top {eval_set['top_k']}:\n"
        )
        print(result.comparison.to_markdown())
        kind = "LoRA adapter" if result.model.model_card_data.adapter else "model"
        print(
            f"\nSaved to {result.output_dir}: {kind}, README.md (model card), eval_results.{{json,md,tex}}, "
            "training_log.json, training_curves.png, metrics.png"
        )
        return 0


class EvalCommand(Command):
    name = "eval"
    help = "evaluate and compare models"
    usage = f"[RECIPE.yaml] --models [NAME=]PATH ... --eval_datasets PATH ... {FLAGS}"

    def run(self, argv: list[str], names: ParserNames) -> int:
        from st_bge.config import parse_eval_recipe
        from st_bge.evaluation.evaluate import evaluate_models, summary_markdown

        recipe = parse_eval_recipe(argv, **names)
        results = evaluate_models(recipe)
        print("\n" + summary_markdown(results, recipe.evaluation.eval_primary_metric))
        print(f"Written to {recipe.run.output_dir} (summary.md; per set: results, per-query CSV, failures, plots)")
        return 0
