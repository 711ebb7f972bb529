"""`st-bge`: the command line, in one place. Each subcommand registers itself (`@command`), parses its recipe or
flags into the dataclasses of `st_bge.config`, calls the public function of the same stage (`st_bge.train`,
`st_bge.check_data`, ...) and prints what it returns; a user error prints one line, not a trace.

st-bge train recipes/quickstart.yaml [--any_field value ...]
st-bge eval recipes/eval/mbpp.yaml [--any_field value ...]
st-bge data check recipes/quickstart.yaml        (or a data file: st-bge data check pairs.jsonl [--flags])
st-bge data mine recipes/quickstart.yaml [--mine_output_dir outputs/mined]
st-bge data score data.jsonl --score_cross_encoder BAAI/bge-reranker-v2-m3 [--score_output_dir outputs/scored]
st-bge data synth corpus/ --model_name_or_path BAAI/bge-m3 [--synth_generator ict|openai] [--synth_output_dir outputs/synth]
st-bge push outputs/quickstart --repo_id user/name [--variant adapter|merged|both] [--private true] ...
st-bge export outputs/quickstart --output_dir outputs/onnx [--check_dataset data/mbpp_sanitized]
st-bge serve outputs/quickstart [--host 127.0.0.1] [--port 8000] [--backend onnx] ...
st-bge check-endpoint http://127.0.0.1:8000/v1 --model outputs/quickstart
"""

from __future__ import annotations

import argparse
import importlib.util
import logging
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import st_bge
from st_bge.errors import ConfigError, StBgeError
from st_bge.markdown import markdown_table

logger = logging.getLogger("st_bge")

RECIPE_SUFFIXES = (".yaml", ".yml")


# How a command's parser names it in `--help` and errors: {"prog": "st-bge push", "usage": "st-bge push MODEL_DIR ..."}.
ParserNames = dict[str, str]
Run = Callable[[list[str], ParserNames], int]


@dataclass(frozen=True)
class Command:
    """One subcommand: `run(argv, names)` gets the arguments after its name and how to call it in help and errors,
    and returns the exit code (0 done, 1 a 'fail' verdict); `positional` is what a first argument that is not a
    flag stands for, `usage` the rest of its usage line."""

    name: str
    help: str
    positional: str
    usage: str
    run: Run
    # What a first argument that is a data file or folder (not a recipe) stands for, for `data` subcommands.
    data_positional: str = "--dataset_name_or_path"

    def parser_names(self) -> ParserNames:
        return {"prog": f"st-bge {self.name}", "usage": f"st-bge {self.name} {self.usage}"}


COMMANDS: dict[str, Command] = {}
FLAGS = "[--field value ...]"


def command(
    name: str,
    help: str,
    positional: str = "--config",
    usage: str = f"RECIPE.yaml {FLAGS}",
    data_positional: str = "--dataset_name_or_path",
) -> Callable[[Run], Run]:
    """Register the decorated function as `st-bge <name>` (`name` may be two words: `data check`)."""

    def register(run: Run) -> Run:
        COMMANDS[name] = Command(name, help, positional, usage, run, data_positional)
        return run

    return register


@command("train", "fine-tune a model from a recipe")
def train_command(argv: list[str], names: ParserNames) -> int:
    result = st_bge.train(st_bge.parse_recipe(argv, **names))
    if not result.trainer.is_world_process_zero():
        return 0
    if result.comparison is None:
        print(f"\nSaved to {result.output_dir} (no evaluation set: set eval_split_size or eval_dataset_name_or_path)")
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


@command(
    "eval",
    "evaluate and compare models",
    usage=f"[RECIPE.yaml] --models [NAME=]PATH ... --eval_datasets PATH ... {FLAGS}",
)
def eval_command(argv: list[str], names: ParserNames) -> int:
    from st_bge.evaluation.evaluate import summary_markdown

    recipe = st_bge.parse_eval_recipe(argv, **names)
    results = st_bge.evaluate(recipe)
    print("\n" + summary_markdown(results, recipe.evaluation.eval_primary_metric))
    print(f"Written to {recipe.run.output_dir} (summary.md; per set: results, per-query CSV, failures, plots)")
    return 0


DATA_USAGE = f"RECIPE.yaml|DATA {FLAGS}"


@command(
    "data check",
    "print the quality report of a recipe's data or a data file (exit code 1 on 'fail')",
    usage=DATA_USAGE,
)
def data_check_command(argv: list[str], names: ParserNames) -> int:
    prepared = st_bge.check_data(st_bge.parse_data_recipe(argv, **names))
    print(prepared.to_markdown())
    return 1 if any(report.verdict == "fail" for report in prepared.quality.values()) else 0


@command("data mine", "mine hard negatives into trainable files", usage=DATA_USAGE)
def data_mine_command(argv: list[str], names: ParserNames) -> int:
    mined = st_bge.mine(st_bge.parse_data_recipe(argv, **names))
    print(mined.prepared.to_markdown())
    files = ", ".join(path.name for path in mined.files)
    print(
        f"\nWritten to {mined.output_dir}: {files} (train on it with dataset_name_or_path), mining and quality reports"
    )
    return 0


@command("data score", "add a teacher cross-encoder's scores (for kd_loss)", usage=DATA_USAGE)
def data_score_command(argv: list[str], names: ParserNames) -> int:
    scored = st_bge.score(st_bge.parse_data_recipe(argv, **names))
    keys = list(next(iter(scored.report.values())))
    rows = [[name, *(summary.get(key, "") for key in keys)] for name, summary in scored.report.items()]
    print(markdown_table(["Source", *keys], rows))
    files = ", ".join(path.name for path in scored.files)
    print(f"\nWritten to {scored.output_dir}: {files} (train on it with kd_loss), score_report.json")
    return 0


@command(
    "data synth",
    "write training queries for a corpus that has none",
    usage=f"RECIPE.yaml|CORPUS {FLAGS}",
    data_positional="--synth_corpus",
)
def data_synth_command(argv: list[str], names: ParserNames) -> int:
    result = st_bge.synth(st_bge.parse_synth_recipe(argv, **names))
    print(result.to_markdown())
    train_with = f"dataset_name_or_path: {result.train_file}"
    if result.eval_dir is not None:
        train_with += f", eval_dataset_name_or_path: {result.eval_dir}"
    print(f"Written to {result.output_dir}: train on it with {train_with}")
    return 0


@command(
    "push",
    "publish an output folder to the Hub (adapter, merged or both)",
    positional="--model_dir",
    usage=f"MODEL_DIR --repo_id REPO_ID {FLAGS}",
)
def push_command(argv: list[str], names: ParserNames) -> int:
    for result in st_bge.push(st_bge.parse_push_arguments(argv, **names)):
        where = result.commit.pr_url or result.commit.commit_url
        print(f"Pushed the {result.variant} to {result.commit.repo_url.repo_id}@{result.revision}: {where}")
    return 0


@command(
    "export",
    "export a model to ONNX + int8 and check it against PyTorch",
    positional="--model_dir",
    usage=f"MODEL_DIR --output_dir OUTPUT_DIR {FLAGS}",
)
def export_command(argv: list[str], names: ParserNames) -> int:
    require_extra("export", "onnx", "onnx", "onnxruntime")
    args = st_bge.parse_export_arguments(argv, **names)
    checks = st_bge.export(args)
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
    return 0


@command(
    "serve",
    "serve a model over an OpenAI-compatible embeddings API (extra st-bge[serve])",
    positional="--model",
    usage=f"MODEL {FLAGS}",
)
def serve_command(argv: list[str], names: ParserNames) -> int:
    require_extra("serve", "serve", "fastapi", "uvicorn", "prometheus_client")
    st_bge.serve(st_bge.parse_serve_arguments(argv, **names))
    return 0


@command(
    "check-endpoint",
    "compare an OpenAI-compatible endpoint's vectors with the local model's",
    positional="--base_url",
    usage=f"BASE_URL --model MODEL {FLAGS}",
)
def check_endpoint_command(argv: list[str], names: ParserNames) -> int:
    require_extra("check-endpoint", "serve", "openai")
    args = st_bge.parse_endpoint_check_arguments(argv, **names)
    checks = st_bge.check_endpoint(args)
    header = ["Side", "Texts", "Cosine min", "Cosine mean", "Max |diff|", f"Cosine >= {args.min_cosine}"]
    rows = [
        [
            c.side,
            c.texts,
            f"{c.cosine_min:.6f}",
            f"{c.cosine_mean:.6f}",
            f"{c.max_abs_diff:.2e}",
            "yes" if c.passed else "NO",
        ]
        for c in checks
    ]
    print(markdown_table(header, rows))
    return 0 if all(check.passed for check in checks) else 1


def require_extra(name: str, extra: str, *modules: str) -> None:
    """Stop with the pip line, not an import trace, when a subcommand's optional dependencies are not installed.

    Raises:
        ConfigError: one of `modules` cannot be imported.
    """
    missing = [module for module in modules if importlib.util.find_spec(module) is None]
    if missing:
        raise ConfigError(f"st-bge {name} needs {', '.join(missing)}: pip install 'st-bge[{extra}]'")


def _parser() -> argparse.ArgumentParser:
    """The subcommands as argparse subparsers, for usage, help and unknown names; each one's own flags are parsed
    by its recipe parser, which knows the recipe's fields."""
    parser = argparse.ArgumentParser(prog="st-bge", description="Fine-tune BGE embedding models for a domain.")
    subparsers = parser.add_subparsers(dest="command", required=True)
    groups: dict[str, argparse._SubParsersAction] = {}
    for name, spec in COMMANDS.items():
        group, _, sub = name.partition(" ")
        if not sub:
            subparsers.add_parser(name, help=spec.help, add_help=False)
            continue
        if group not in groups:
            subcommands = ", ".join(other.partition(" ")[2] for other in COMMANDS if other.startswith(group + " "))
            groups[group] = subparsers.add_parser(group, help=subcommands).add_subparsers(
                dest="subcommand", required=True
            )
        groups[group].add_parser(sub, help=spec.help, add_help=False)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """`st-bge <command> [recipe.yaml | folder | data file] [--field value ...]`."""
    argv = list(sys.argv[1:] if argv is None else argv)
    words = 2 if argv[:1] == ["data"] else 1
    name = " ".join(argv[:words])
    if name not in COMMANDS:
        try:
            _parser().parse_args(argv[:words] or ["--help"])  # prints the help, or the error with the usage
        except SystemExit as exit:
            return exit.code
    rest = argv[words:]
    spec = COMMANDS[name]
    if rest and not rest[0].startswith("-"):
        positional = spec.positional
        if name.startswith("data ") and not rest[0].endswith(RECIPE_SUFFIXES):
            positional = spec.data_positional  # a data file or folder, with flags for the rest
        rest = [positional, *rest]
    return run_reporting_errors(spec.run, rest or ["--help"], spec.parser_names())


def run_reporting_errors(run: Run, argv: list[str], names: ParserNames) -> int:
    """`run(argv, names)`; a user error (bad recipe, data or path) prints one line to stderr and gives exit code 2."""
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    logger.setLevel(logging.INFO)
    try:
        return run(argv, names)
    except StBgeError as error:
        print(f"st-bge: error: {error}", file=sys.stderr)
        return 2


def _script_names(script: str) -> ParserNames:
    return {"prog": script, "usage": f"{script} --config RECIPE.yaml {FLAGS}"}


def train_main(argv: Sequence[str] | None = None) -> int:
    """`recipes/train.py`: `--config recipe.yaml` plus flags, as trl's scripts take them."""
    return run_reporting_errors(
        train_command, list(sys.argv[1:] if argv is None else argv), _script_names("recipes/train.py")
    )


def eval_main(argv: Sequence[str] | None = None) -> int:
    """`recipes/evaluate.py`: `--config recipe.yaml` plus flags."""
    return run_reporting_errors(
        eval_command, list(sys.argv[1:] if argv is None else argv), _script_names("recipes/evaluate.py")
    )


if __name__ == "__main__":
    sys.exit(main())
