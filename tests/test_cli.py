"""The command line is one layer over the public API: each subcommand parses its dataclasses and calls the
`st_bge.<name>` function of its stage; every public name resolves and says what it does."""

from __future__ import annotations

import importlib
import pkgutil
from types import ModuleType, SimpleNamespace

import pytest

import st_bge
from st_bge.cli import COMMANDS, main
from st_bge.errors import StBgeError

# Subcommand -> (the parser it uses, the public function it calls).
CALLS = {
    "train": ("parse_recipe", "train"),
    "eval": ("parse_eval_recipe", "evaluate"),
    "data check": ("parse_data_recipe", "check_data"),
    "data mine": ("parse_data_recipe", "mine"),
    "data score": ("parse_data_recipe", "score"),
    "data synth": ("parse_synth_recipe", "synth"),
    "push": ("parse_push_arguments", "push"),
    "export": ("parse_export_arguments", "export"),
    "serve": ("parse_serve_arguments", "serve"),
    "check-endpoint": ("parse_endpoint_check_arguments", "check_endpoint"),
}


@pytest.mark.parametrize("name", sorted(set(st_bge.__all__) - {"__version__"}))
def test_every_public_name_resolves_and_is_documented(name):
    """Also once every submodule is imported: a submodule named like a public function would shadow it."""
    for module in pkgutil.walk_packages(st_bge.__path__, prefix="st_bge."):
        importlib.import_module(module.name)
    value = getattr(st_bge, name)
    assert callable(value) and not isinstance(value, ModuleType), f"st_bge.{name} is {value!r}"
    assert (value.__doc__ or "").strip(), f"st_bge.{name} has no docstring"


def test_every_subcommand_is_registered():
    assert set(COMMANDS) == set(CALLS)


@pytest.mark.parametrize("name", list(CALLS))
def test_each_subcommand_calls_the_public_function(name, monkeypatch):
    parser, function = CALLS[name]
    calls = []
    parsed = SimpleNamespace(name="parsed")
    monkeypatch.setattr(st_bge, parser, lambda argv: calls.append(("parse", argv)) or parsed)

    def stage(arguments):
        calls.append(("call", arguments))
        raise StBgeError("stop here")  # the printing is not under test

    monkeypatch.setattr(st_bge, function, stage)
    assert main([*name.split(), "recipe.yaml", "--seed", "1"]) == 2
    positional = COMMANDS[name].positional
    assert calls == [("parse", [positional, "recipe.yaml", "--seed", "1"]), ("call", parsed)]


def test_a_data_file_is_the_data_commands_dataset(monkeypatch):
    seen = []
    monkeypatch.setattr(st_bge, "parse_data_recipe", lambda argv: seen.append(argv) or SimpleNamespace())
    monkeypatch.setattr(st_bge, "check_data", lambda recipe: (_ for _ in ()).throw(StBgeError("x")))
    main(["data", "check", "pairs.jsonl"])
    assert seen == [["--dataset_name_or_path", "pairs.jsonl"]]


def test_a_corpus_is_what_data_synth_writes_queries_for(monkeypatch):
    seen = []
    monkeypatch.setattr(st_bge, "parse_synth_recipe", lambda argv: seen.append(argv) or SimpleNamespace())
    monkeypatch.setattr(st_bge, "synth", lambda recipe: (_ for _ in ()).throw(StBgeError("x")))
    main(["data", "synth", "corpus_folder", "--synth_generator", "ict"])
    assert seen == [["--synth_corpus", "corpus_folder", "--synth_generator", "ict"]]


@pytest.mark.parametrize(
    ("argv", "message"),
    [(["bogus"], "invalid choice: 'bogus'"), (["data"], "required"), (["data", "bogus"], "invalid choice")],
)
def test_an_unknown_command_is_one_usage_error(argv, message, capsys):
    assert main(argv) == 2
    assert message in capsys.readouterr().err


def test_no_command_prints_the_help(capsys):
    assert main([]) == 0
    out = capsys.readouterr().out
    assert all(name.split()[0] in out for name in COMMANDS)


@pytest.mark.parametrize(("argv", "module"), [(["serve", "run"], "fastapi"), (["export", "run"], "onnxruntime")])
def test_a_missing_extra_is_one_line_with_the_pip_command(argv, module, monkeypatch, capsys):
    import importlib.util

    find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == module else find_spec(name, *a))
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert f"needs {module}: pip install 'st-bge[" in err and "Traceback" not in err
