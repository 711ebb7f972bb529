"""`st-bge`: the command line. Each subcommand (`st_bge.commands`) registers its own parser and runs its stage;
this module only puts them under one `argparse` parser.

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
import sys
from collections.abc import Sequence

from st_bge.commands import COMMANDS as COMMAND_TREE
from st_bge.commands import Command, CommandGroup, run_reporting_errors
from st_bge.commands.base import FLAGS
from st_bge.commands.train import EvalCommand, TrainCommand

# Every subcommand by its full name ("data check" included), in `--help` order.
COMMANDS: dict[str, Command] = {
    command.name: command
    for entry in COMMAND_TREE
    for command in (entry.commands if isinstance(entry, CommandGroup) else [entry])
}


def parser() -> argparse.ArgumentParser:
    """`st-bge` and its subcommands, each registered by itself."""
    top = argparse.ArgumentParser(prog="st-bge", description="Fine-tune BGE embedding models for a domain.")
    subparsers = top.add_subparsers(dest="command_name", required=True)
    for entry in COMMAND_TREE:
        entry.register(subparsers)
    return top


def main(argv: Sequence[str] | None = None) -> int:
    """`st-bge <command> [recipe.yaml | folder | data file] [--field value ...]`."""
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        # The words after a command's name are its own: its recipe parser reads them.
        namespace, words = parser().parse_known_args(argv or ["--help"])
    except SystemExit as exit:  # the help, or a usage error naming the unknown command
        return exit.code
    command = namespace.command
    return run_reporting_errors(command, command.arguments(words), command.parser_names())


def _script(command: Command, script: str, argv: Sequence[str] | None) -> int:
    """A recipe script (`recipes/train.py --config recipe.yaml` plus flags, as trl's scripts take them)."""
    names = {"prog": script, "usage": f"{script} --config RECIPE.yaml {FLAGS}"}
    return run_reporting_errors(command, list(sys.argv[1:] if argv is None else argv), names)


def train_main(argv: Sequence[str] | None = None) -> int:
    """`recipes/train.py`."""
    return _script(TrainCommand(), "recipes/train.py", argv)


def eval_main(argv: Sequence[str] | None = None) -> int:
    """`recipes/evaluate.py`."""
    return _script(EvalCommand(), "recipes/evaluate.py", argv)


if __name__ == "__main__":
    sys.exit(main())
