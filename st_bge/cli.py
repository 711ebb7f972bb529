"""`st-bge` command line: the same functions the recipes call, with user errors as one line, not a trace.

st-bge train recipes/quickstart.yaml [--any_field value ...]
st-bge eval recipes/eval/mbpp.yaml [--any_field value ...]
st-bge data check recipes/quickstart.yaml        (or a data file: st-bge data check pairs.jsonl [--flags])
st-bge data mine recipes/quickstart.yaml [--mine_output_dir outputs/mined]
st-bge data score data.jsonl --score_cross_encoder BAAI/bge-reranker-v2-m3 [--score_output_dir outputs/scored]
st-bge push outputs/quickstart --repo_id user/name [--variant adapter|merged|both] [--private true] ...
st-bge export outputs/quickstart --output_dir outputs/onnx [--check_dataset data/mbpp_sanitized]
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable, Sequence

from st_bge.errors import StBgeError

logger = logging.getLogger("st_bge")


def run_reporting_errors(command: Callable[[], object]) -> int:
    """Run `command`; a user error (bad recipe, data or path) prints one line to stderr and gives exit code 2."""
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    logger.setLevel(logging.INFO)
    try:
        command()
    except StBgeError as error:
        print(f"st-bge: error: {error}", file=sys.stderr)
        return 2
    return 0


def train_main(argv: Sequence[str] | None = None) -> int:
    """`recipes/train.py`: `--config recipe.yaml` plus flags, as trl's scripts take them."""
    from st_bge.config import parse_recipe
    from st_bge.training import print_summary, train

    def command() -> None:
        print_summary(train(parse_recipe(argv)))

    return run_reporting_errors(command)


def eval_main(argv: Sequence[str] | None = None) -> int:
    """`recipes/evaluate.py`: `--config recipe.yaml` plus flags."""
    from st_bge.config import parse_eval_recipe
    from st_bge.evaluation.evaluate import evaluate_models, summary_markdown

    def command() -> None:
        recipe = parse_eval_recipe(argv)
        results = evaluate_models(recipe)
        print("\n" + summary_markdown(results, recipe.evaluation.eval_primary_metric))
        print(f"Written to {recipe.run.output_dir} (summary.md; per set: results, per-query CSV, failures, plots)")

    return run_reporting_errors(command)


DATA_COMMANDS = ("check", "mine", "score")
RECIPE_SUFFIXES = (".yaml", ".yml")


def data_main(argv: Sequence[str] | None = None) -> int:
    """`st-bge data check|mine|score <recipe.yaml or data file> [--flags]`: the data stage of a training run, alone.

    `check` prints the quality report and exits with 1 if its verdict is 'fail'; `mine` writes the mined rows;
    `score` writes the rows with a teacher cross-encoder's scores (`--score_cross_encoder`).
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] not in DATA_COMMANDS:
        print("usage: st-bge data {check,mine,score} <recipe.yaml or data file> [--field value ...]", file=sys.stderr)
        return 2
    kind, rest = argv[0], argv[1:]
    if rest and not rest[0].startswith("-"):
        option = "--config" if rest[0].endswith(RECIPE_SUFFIXES) else "--dataset_name_or_path"
        rest = [option, *rest]
    verdicts: list[str] = []

    def command() -> None:
        from st_bge.config import parse_data_recipe
        from st_bge.data.commands import check_data, mine_data, score_data

        recipe = parse_data_recipe(rest)
        if kind == "check":
            verdicts.extend(check_data(recipe))
        elif kind == "mine":
            mine_data(recipe)
        else:
            score_data(recipe)

    code = run_reporting_errors(command)
    return 1 if code == 0 and "fail" in verdicts else code


def push_main(argv: Sequence[str] | None = None) -> int:
    """`st-bge push <model_dir> --repo_id user/name [--flags]`: one commit per variant, the token from the env."""
    from st_bge.config import parse_push_arguments
    from st_bge.publish import push

    def command() -> None:
        for result in push(parse_push_arguments(argv)):
            where = result.commit.pr_url or result.commit.commit_url
            print(f"Pushed the {result.variant} to {result.commit.repo_url.repo_id}@{result.revision}: {where}")

    return run_reporting_errors(command)


def export_main(argv: Sequence[str] | None = None) -> int:
    """`st-bge export <model_dir> --output_dir DIR [--check_dataset DATA]`: ONNX + int8, checked against PyTorch."""
    from st_bge.config import parse_export_arguments
    from st_bge.export import export_model
    from st_bge.markdown import markdown_table

    def command() -> None:
        args = parse_export_arguments(argv)
        checks = export_model(args)
        print(f"Written to {args.output_dir}")
        if checks:
            header = ["File", "Texts", "Cosine min", "Cosine mean", "PyTorch texts/s", "ONNX texts/s", "Speed-up"]
            rows = [
                [
                    c.file,
                    c.texts,
                    f"{c.cosine_min:.4f}",
                    f"{c.cosine_mean:.4f}",
                    f"{c.torch_texts_per_second:.1f}",
                    f"{c.onnx_texts_per_second:.1f}",
                    f"{c.speedup:.2f}x",
                ]
                for c in checks
            ]
            print(markdown_table(header, rows))

    return run_reporting_errors(command)


COMMANDS = {
    "train": (train_main, "fine-tune a model from a recipe"),
    "eval": (eval_main, "evaluate and compare models"),
    "data": (data_main, "check data quality (check), mine hard negatives (mine), add teacher scores (score)"),
    "push": (push_main, "publish an output folder to the Hub (adapter, merged or both)"),
    "export": (export_main, "export a model to ONNX + int8 and check it against PyTorch"),
}
# Commands whose first argument, if not a flag, is the model folder rather than a recipe.
FOLDER_COMMANDS = {"push", "export"}


def main(argv: Sequence[str] | None = None) -> int:
    """`st-bge <command> [recipe.yaml] [--field value ...]`: a first argument that is not a flag is the recipe."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] not in COMMANDS:
        usage = "usage: st-bge {" + ",".join(COMMANDS) + "} [recipe.yaml] [--field value ...]\n\n"
        usage += "\n".join(f"  {name:6} {help_text}" for name, (_, help_text) in COMMANDS.items())
        known = not argv or argv[0] in ("-h", "--help")
        print(
            usage if known else f"{usage}\n\nst-bge: error: unknown command {argv[0]!r}",
            file=sys.stdout if known else sys.stderr,
        )
        return 0 if known else 2
    command, rest = COMMANDS[argv[0]][0], argv[1:]
    if command is data_main:
        return data_main(rest)
    if rest and not rest[0].startswith("-"):
        rest = ["--model_dir" if argv[0] in FOLDER_COMMANDS else "--config", rest[0], *rest[1:]]
    return command(rest or ["--help"])


if __name__ == "__main__":
    sys.exit(main())
