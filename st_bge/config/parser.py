"""The recipe parser: `HfArgumentParser` over recipe sections, with trl-style `--config recipe.yaml` defaults,
one-line errors naming the file, line and key, `--field null`, and old field names that still work (with a
warning naming the new one)."""

from __future__ import annotations

import argparse
import json
import os
import sys
import typing
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NoReturn, TypeVar

import yaml
from transformers import HfArgumentParser

from st_bge.errors import ConfigError, did_you_mean

# What the parse functions take: command-line words (None: sys.argv), or the path of a recipe YAML file.
Argv = Sequence[str] | str | os.PathLike | None
# Recipe fields renamed since they were published: old name -> new name. The old name keeps working, with a warning.
RENAMED_FIELDS = {"m3_heads": "m3_train_heads"}
SectionT = TypeVar("SectionT")


class HelpFormatter(argparse.HelpFormatter):
    """`--help` as a field's own text, with its default said once: argparse's `ArgumentDefaultsHelpFormatter`
    appends "(default: None)" after texts that already explain their default, and %-expands the text, so a
    literal "10%" in a help text crashed every help page."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = (action.help or "").replace("%", "%%")
        if (
            action.default in (None, argparse.SUPPRESS)
            or action.required
            or isinstance(action, argparse._StoreFalseAction)  # its default is its twin's
            or "default" in text.lower()
        ):
            return text
        return f"{text} (default: %(default)s)"


class RecipeParser(HfArgumentParser):
    """`HfArgumentParser` over the recipe sections, with trl-style `--config recipe.yaml` defaults.

    `prog` and `usage` are what `--help` and errors show (e.g. "st-bge push" and "st-bge push MODEL_DIR ...");
    a bad flag or value is a `ConfigError` of one line pointing to `--help`, not a page of usage.
    """

    def __init__(
        self,
        sections: Sequence[type],
        optional: Sequence[str] = (),
        *,
        prog: str | None = None,
        usage: str | None = None,
    ) -> None:
        super().__init__(
            sections,
            prog=prog,
            usage=usage,
            description="A YAML file of fields (--config FILE, or RECIPE.yaml in the usage line) gives their values; "
            "a flag overrides one, and `--field null` unsets it.",
            formatter_class=HelpFormatter,
        )
        self.given_keys: set[str] = set()  # what the last parse set explicitly (YAML keys and flags)
        for action in self._actions:
            field_type = _field_type(sections, action.dest)
            if field_type == "dict":
                action.type = _json_mapping(action.dest)
            if action.type is not None and field_type is not None and "None" in field_type:
                action.type = _nullable(action.type)  # `--field null` unsets what the YAML set
            if action.dest in optional:  # a field some commands can do without (then None)
                action.required = False
                action.default = None
            if isinstance(action, argparse._StoreFalseAction):  # HfArgumentParser's `--no_<field>` twin
                action.help = f"Same as --{action.dest} false."

    def error(self, message: str) -> NoReturn:
        raise ConfigError(f"{message} (`{self.prog} --help` lists every field)")

    def parse_sections(self, argv: Argv = None) -> list[Any]:
        """Parse `--config FILE` (optional) and flags into one instance per section; a lone path is the recipe.

        Raises:
            ConfigError: an unknown key in the YAML or on the command line, or a value of the wrong type.
        """
        if isinstance(argv, (str, os.PathLike)):
            argv = ["--config", os.fspath(argv)]
        argv = [_renamed_flag(item) for item in (sys.argv[1:] if argv is None else argv)]
        self.given_keys = {item[2:].split("=")[0].removeprefix("no_") for item in argv if item.startswith("--")}
        if "--config" in argv:
            index = argv.index("--config")
            if index + 1 >= len(argv):
                raise ConfigError("--config needs a path to a recipe YAML file")
            path = Path(argv[index + 1])
            del argv[index : index + 2]
            self._set_yaml_defaults(path)
        *sections, unknown = self.parse_args_into_dataclasses(args=argv, return_remaining_strings=True)
        if unknown:
            flag = next((item for item in unknown if item.startswith("--")), unknown[0])
            raise ConfigError(f"unknown command-line argument {flag!r}{self._suggest(flag.lstrip('-'))}")
        return sections

    def _set_yaml_defaults(self, path: Path) -> None:
        if not path.is_file():
            raise ConfigError(f"{path}: recipe file not found")
        text = path.read_text(encoding="utf-8")
        try:
            config = yaml.safe_load(text) or {}
            lines = {key.value: key.start_mark.line + 1 for key, _ in yaml.compose(text).value} if config else {}
        except yaml.YAMLError as error:
            raise ConfigError(f"{path}: not valid YAML: {error}") from None
        if not isinstance(config, dict):
            raise ConfigError(f"{path}: a recipe is a mapping of keys to values, got {type(config).__name__}")
        config = {renamed(key, f"{path}, line {lines.get(key, '?')}"): value for key, value in config.items()}
        lines = {RENAMED_FIELDS.get(key, key): line for key, line in lines.items()}
        # The first action of a dest is the one with its type and choices; a True-default bool also has a
        # `--no_<field>` action after it.
        actions: dict[str, Any] = {}
        for action in self._actions:
            actions.setdefault(action.dest, action)
        for key, value in config.items():
            where = f"{path}, line {lines.get(key, '?')}"
            action = actions.get(key)
            if action is None or key == "help":
                raise ConfigError(f"{where}: unknown key '{key}'{self._suggest(key)}")
            if isinstance(value, str) and action.type is not None:
                try:
                    action.type(value)
                except (TypeError, ValueError) as error:
                    raise ConfigError(f"{where}: key '{key}': invalid value {value!r} ({error})") from None
            if action.choices is not None and value not in action.choices:
                raise ConfigError(f"{where}: key '{key}': {value!r} is not one of {list(action.choices)}")
            action.required = False
        # set_defaults reaches every action of a dest (e.g. `--no_<field>` too), so a YAML `false` sticks.
        self.set_defaults(**config)
        self.given_keys |= set(config)

    def _suggest(self, key: str) -> str:
        return did_you_mean(key, (action.dest for action in self._actions if action.dest != "help"))


def _field_type(sections: Sequence[type], name: str) -> str | None:
    """A field's annotation as written ("dict" for mappings): `HfArgumentParser` overwrites `Field.type` with what
    it parses (`str | None` becomes `str`), so the annotations are read from the class."""
    for section in sections:
        hints = typing.get_type_hints(section)
        if name in hints:
            return "dict" if str(hints[name]).startswith("dict") else str(hints[name])
    return None


def _nullable(parse: Callable[[str], Any]) -> Callable[[str], Any]:
    """`parse`, with the YAML spelling `null` for None: `--dataset_name_or_path null` unsets a recipe's value."""

    def parse_or_none(value: str) -> Any:
        return None if value == "null" else parse(value)

    parse_or_none.__name__ = getattr(parse, "__name__", "value")
    return parse_or_none


def _json_mapping(name: str):
    def parse(value: str) -> dict[str, str]:
        try:
            mapping = json.loads(value)
        except json.JSONDecodeError as error:
            raise ValueError(f"{name} must be a JSON object: {error}") from None
        if not isinstance(mapping, dict):
            raise ValueError(f"{name} must be a JSON object, got {value!r}")
        return mapping

    parse.__name__ = "JSON object"
    return parse


def renamed(name: str, where: str) -> str:
    """The current name of a recipe field, warning when `name` is one it had before."""
    new = RENAMED_FIELDS.get(name)
    if new is None:
        return name
    warnings.warn(
        f"{where}: '{name}' is now called '{new}'; the old name will stop working", FutureWarning, stacklevel=3
    )
    return new


def _renamed_flag(item: str) -> str:
    """`--old_name[=value]` as `--new_name[=value]` (and `--no_old_name`), with the warning; other words as they are."""
    if not item.startswith("--"):
        return item
    name, equals, value = item[2:].partition("=")
    negated = name.startswith("no_") and name[3:] in RENAMED_FIELDS
    bare = name[3:] if negated else name
    if bare not in RENAMED_FIELDS:
        return item
    return f"--{'no_' if negated else ''}{renamed(bare, 'command line')}{equals}{value}"


def parse_section(section: type[SectionT], argv: Argv, prog: str | None, usage: str | None) -> SectionT:
    """Flags (or a YAML of them) as one section: the arguments of a subcommand that is not a recipe."""
    (parsed,) = RecipeParser((section,), prog=prog, usage=usage).parse_sections(argv)
    return parsed
