"""The command line is one layer over the public API: each subcommand parses its dataclasses and calls the
`st_bge.<name>` function of its stage; every public name resolves and says what it does."""

from __future__ import annotations

import dataclasses
import importlib
import os
import pkgutil
import subprocess
import sys
from pathlib import Path
from types import ModuleType, SimpleNamespace

import pytest

import st_bge
from st_bge import config
from st_bge.cli import COMMANDS, main
from st_bge.errors import StBgeError

REPO = Path(__file__).resolve().parents[1]

# Subcommand -> (the parser it uses, the stage function it calls, as "module:name"). The public name of each
# stage in `st_bge` is the same function (`test_the_public_api_is_what_the_commands_run`).
CALLS = {
    "train": ("parse_recipe", "st_bge.training:train"),
    "eval": ("parse_eval_recipe", "st_bge.evaluation.evaluate:evaluate_models"),
    "data check": ("parse_data_recipe", "st_bge.data.preparation:check_data"),
    "data mine": ("parse_data_recipe", "st_bge.data.preparation:mine"),
    "data score": ("parse_data_recipe", "st_bge.data.scoring:score"),
    "data synth": ("parse_synth_recipe", "st_bge.synthesis.pipeline:synth"),
    "merge": ("parse_merge_arguments", "st_bge.merging:merge"),
    "push": ("parse_push_arguments", "st_bge.publish:push"),
    "export": ("parse_export_arguments", "st_bge.onnx_export:export_model"),
    "serve": ("parse_serve_arguments", "st_bge.serving.app:serve"),
    "check-endpoint": ("parse_endpoint_check_arguments", "st_bge.serving.check:check_endpoint"),
}
PUBLIC = {
    "train": "train",
    "eval": "evaluate",
    "data check": "check_data",
    "data mine": "mine",
    "data score": "score",
    "data synth": "synth",
    "merge": "merge",
    "push": "push",
    "export": "export",
    "serve": "serve",
    "check-endpoint": "check_endpoint",
}


def patch_stage(monkeypatch, name, stage):
    module, attribute = CALLS[name][1].split(":")
    monkeypatch.setattr(importlib.import_module(module), attribute, stage)


@pytest.mark.parametrize("name", list(CALLS))
def test_the_public_api_is_what_the_commands_run(name):
    module, attribute = CALLS[name][1].split(":")
    assert getattr(st_bge, PUBLIC[name]) is getattr(importlib.import_module(module), attribute)
    assert getattr(st_bge, CALLS[name][0]) is getattr(config, CALLS[name][0])


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
    parser = CALLS[name][0]
    calls = []
    parsed = SimpleNamespace(name="parsed")
    monkeypatch.setattr(config, parser, lambda argv, **names: calls.append(("parse", argv)) or parsed)

    def stage(arguments):
        calls.append(("call", arguments))
        raise StBgeError("stop here")  # the printing is not under test

    patch_stage(monkeypatch, name, stage)
    assert main([*name.split(), "recipe.yaml", "--seed", "1"]) == 2
    positional = COMMANDS[name].positional
    assert calls == [("parse", [positional, "recipe.yaml", "--seed", "1"]), ("call", parsed)]


def test_a_data_file_is_the_data_commands_dataset(monkeypatch):
    seen = []
    monkeypatch.setattr(config, "parse_data_recipe", lambda argv, **names: seen.append(argv) or SimpleNamespace())
    patch_stage(monkeypatch, "data check", lambda recipe: (_ for _ in ()).throw(StBgeError("x")))
    main(["data", "check", "pairs.jsonl"])
    assert seen == [["--dataset_name_or_path", "pairs.jsonl"]]


def test_a_corpus_is_what_data_synth_writes_queries_for(monkeypatch):
    seen = []
    monkeypatch.setattr(config, "parse_synth_recipe", lambda argv, **names: seen.append(argv) or SimpleNamespace())
    patch_stage(monkeypatch, "data synth", lambda recipe: (_ for _ in ()).throw(StBgeError("x")))
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


# Subcommand -> the dataclasses its flags fill: its help page must list every field of them.
SECTIONS = {
    "train": config.SECTIONS,
    "eval": config.EVAL_SECTIONS,
    "data check": config.SECTIONS,
    "data mine": config.SECTIONS,
    "data score": config.SECTIONS,
    "data synth": config.SECTIONS,
    "merge": (config.MergeArguments,),
    "push": (config.PushArguments,),
    "export": (config.ExportArguments,),
    "serve": (config.ServeArguments,),
    "check-endpoint": (config.EndpointCheckArguments,),
}


def field_flags(sections) -> list[str]:
    return [f"--{f.name}" for section in sections for f in dataclasses.fields(section) if f.init]


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_every_subcommand_help_shows_its_usage_and_lists_every_field(name, capsys):
    """argparse %-expands help texts: one field's "10% of the time" crashed every recipe command's --help."""
    assert set(SECTIONS) == set(COMMANDS)
    with pytest.raises(SystemExit) as exit:
        main([*name.split(), "--help"])
    assert exit.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith(f"usage: {COMMANDS[name].parser_names()['usage']}\n")
    missing = [flag for flag in field_flags(SECTIONS[name]) if flag not in out]
    assert not missing, f"st-bge {name} --help does not list {missing}"
    assert "(default: None)" not in out
    assert out.count("(default:") <= out.count("\n  --")  # once per flag at most, never twice in one text


@pytest.mark.parametrize(
    ("script", "sections"), [("train.py", config.SECTIONS), ("evaluate.py", config.EVAL_SECTIONS)]
)
def test_the_recipe_scripts_help_lists_every_field(script, sections):
    done = subprocess.run(
        [sys.executable, str(REPO / "recipes" / script), "--help"], capture_output=True, text=True, env=os.environ
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(f"usage: recipes/{script} --config RECIPE.yaml")
    assert [flag for flag in field_flags(sections) if flag not in done.stdout] == []


def test_a_no_twin_says_what_it_does_instead_of_repeating_the_help(capsys):
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    out = capsys.readouterr().out
    assert "--no_gist_contrast_anchors" in out
    twin = out[out.index("  --no_gist_contrast_anchors") :].split("\n  --")[0]
    assert "Same as --gist_contrast_anchors false." in twin and "contrast anchor vs anchor" not in twin


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["train", "recipes/quickstart.yaml", "--seed", "x"], "argument --seed: invalid int value: 'x'"),
        (["push", "outputs/x"], "the following arguments are required: --repo_id"),
    ],
)
def test_a_bad_flag_is_one_line_pointing_to_help(argv, message, capsys):
    assert main(argv) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    name = " ".join(argv[:1])
    assert captured.err.count("\n") == 1 and message in captured.err
    assert captured.err.endswith(f"(`st-bge {name} --help` lists every field)\n")


@pytest.mark.parametrize(
    ("argv", "field", "value"),
    [
        (["push", "--model", "out", "--repo_id", "u/r"], "model_dir", "out"),
        (["export", "--model", "out", "--output_dir", "o"], "model_dir", "out"),
        (["serve", "--model_dir", "out"], "model", "out"),
        (["check-endpoint", "http://x/v1", "--model_dir", "out"], "model", "out"),
        (["eval", "--model", "a", "b", "--eval_datasets", "d"], "models", ["a", "b"]),
    ],
)
def test_each_command_takes_the_other_commands_model_flag_as_an_alias(argv, field, value, monkeypatch):
    seen = []

    def stage(parsed):
        seen.append(parsed)
        raise StBgeError("stop here")

    patch_stage(monkeypatch, argv[0], stage)
    assert main(argv) == 2
    parsed = seen[0].run if argv[0] == "eval" else seen[0]
    assert getattr(parsed, field) == value
