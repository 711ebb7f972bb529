"""The `st-bge` subcommands, one module per family; `COMMANDS` is the order `st-bge --help` lists them in."""

from st_bge.commands.base import Command, CommandGroup, run_reporting_errors
from st_bge.commands.data import DATA
from st_bge.commands.merge import MergeCommand
from st_bge.commands.publish import ExportCommand, PushCommand
from st_bge.commands.serve import CheckEndpointCommand, ServeCommand
from st_bge.commands.train import EvalCommand, TrainCommand

COMMANDS: list[Command | CommandGroup] = [
    TrainCommand(),
    EvalCommand(),
    DATA,
    MergeCommand(),
    PushCommand(),
    ExportCommand(),
    ServeCommand(),
    CheckEndpointCommand(),
]

__all__ = ["COMMANDS", "Command", "CommandGroup", "run_reporting_errors"]
