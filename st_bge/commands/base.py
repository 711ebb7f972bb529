"""What every `st-bge` subcommand is: a `Command` registers its own parser (trl's `Command.register(subparsers)`),
turns its words into its recipe parser's arguments and runs its stage; a user error prints one line, not a trace.
"""

from __future__ import annotations

import argparse
import importlib.util
import logging
import sys
from collections.abc import Sequence

from st_bge.errors import ConfigError, StBgeError

logger = logging.getLogger("st_bge")

FLAGS = "[--field value ...]"
RECIPE_SUFFIXES = (".yaml", ".yml")
# How a command's parser names it in `--help` and errors: {"prog": "st-bge push", "usage": "st-bge push MODEL_DIR ..."}.
ParserNames = dict[str, str]


class Command:
    """One subcommand. Subclasses set the class attributes and `run`.

    Attributes:
        name: What follows `st-bge` (two words for a group's command: "data check").
        help: One line for `st-bge --help`.
        usage: The rest of its usage line.
        positional: The field a first word that is not a flag stands for (a recipe: `--config`).
        data_positional: For a first word that is not a recipe (a data file or folder), if the command takes one.
    """

    name: str
    help: str
    usage: str = f"RECIPE.yaml {FLAGS}"
    positional: str = "--config"
    data_positional: str | None = None

    def register(self, subparsers: argparse._SubParsersAction) -> None:
        """Add this command to `subparsers`. Its own flags are parsed by its recipe parser, which knows the fields."""
        parser = subparsers.add_parser(self.name.split()[-1], help=self.help, add_help=False)
        parser.set_defaults(command=self)

    def parser_names(self) -> ParserNames:
        return {"prog": f"st-bge {self.name}", "usage": f"st-bge {self.name} {self.usage}"}

    def arguments(self, words: Sequence[str]) -> list[str]:
        """The recipe parser's arguments for the words after the command name: a bare first word is `positional`
        (or `data_positional` when it is not a recipe file), and no words at all ask for the help."""
        words = list(words)
        if not words:
            return ["--help"]
        if words[0].startswith("-"):
            return words
        positional = self.positional
        if self.data_positional is not None and not words[0].endswith(RECIPE_SUFFIXES):
            positional = self.data_positional
        return [positional, *words]

    def run(self, argv: list[str], names: ParserNames) -> int:
        """Parse `argv` (recipe-parser arguments) and run the stage; the exit code: 0 done, 1 a 'fail' verdict."""
        raise NotImplementedError


class CommandGroup:
    """Commands under one word (`st-bge data check|mine|score|synth`)."""

    def __init__(self, name: str, commands: Sequence[Command]) -> None:
        self.name = name
        self.commands = list(commands)

    def register(self, subparsers: argparse._SubParsersAction) -> None:
        names = ", ".join(command.name.split()[-1] for command in self.commands)
        group = subparsers.add_parser(self.name, help=names).add_subparsers(dest="subcommand", required=True)
        for command in self.commands:
            command.register(group)


def require_extra(name: str, extra: str, *modules: str) -> None:
    """Stop with the pip line, not an import trace, when a subcommand's optional dependencies are not installed.

    Raises:
        ConfigError: one of `modules` cannot be imported.
    """
    missing = [module for module in modules if importlib.util.find_spec(module) is None]
    if missing:
        raise ConfigError(f"st-bge {name} needs {', '.join(missing)}: pip install 'st-bge[{extra}]'")


def run_reporting_errors(command: Command, argv: list[str], names: ParserNames) -> int:
    """`command.run(argv, names)`; a user error (bad recipe, data or path) prints one line to stderr, exit code 2."""
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    logger.setLevel(logging.INFO)
    try:
        return command.run(argv, names)
    except StBgeError as error:
        print(f"st-bge: error: {error}", file=sys.stderr)
        return 2
