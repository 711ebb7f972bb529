"""`st-bge` command line: the same functions the recipes call, with user errors as one line, not a trace.

st-bge train recipes/quickstart.yaml [--any_field value ...]
"""

from __future__ import annotations

import argparse
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


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="st-bge", description="Fine-tune BGE embedding models for retrieval.")
    commands = parser.add_subparsers(dest="command", required=True)
    train_parser = commands.add_parser(
        "train",
        help="fine-tune a model from a recipe",
        description="Fine-tune from a recipe YAML; any recipe field can be overridden as --field value.",
        add_help=False,
    )
    train_parser.add_argument("recipe", nargs="?", help="recipe YAML file, e.g. recipes/quickstart.yaml")
    args, rest = parser.parse_known_args(argv)
    if args.command == "train":
        if args.recipe is None or args.recipe in ("-h", "--help"):
            return train_main(["--help"])
        return train_main(["--config", args.recipe, *rest])
    parser.error(f"unknown command {args.command!r}")
    return 2


if __name__ == "__main__":
    sys.exit(main())
