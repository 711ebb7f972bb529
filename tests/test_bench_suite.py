"""`make bench` (benchmarks/suite.py, benchmarks/tables.py): the runner keeps what a benchmark printed with its
provenance and stores nothing of a failed one; the splice rewrites only the marked blocks of RESULTS.md and refuses
what does not fit; the writers compute their tables and goal verdicts from the records; and the RESULTS.md in the
repository is exactly what its stored results render to."""

from __future__ import annotations

import json
import shlex
import sys
from pathlib import Path

import pytest

from st_bge.evaluation.comparison import RetrievalComparison, compare_runs
from st_bge.evaluation.metrics import to_qrels, to_run
from st_bge.synthesis.filters import FILTERS

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import suite
import tables

BENCHMARKS_DIR = suite.REPO / "benchmarks"
PYTHON = "python"  # suite.executable runs it as this interpreter


def stored(records: list[dict], **extra) -> dict:
    """A stored result as suite.run writes it (provenance + records)."""
    return {
        "date": "2026-12-04",
        "commit": "abc1234",
        "python": "3.11.7",
        "versions": {"torch": "2.13.0+cpu"},
        "machine": {"cpu": "Test CPU", "cores": 2, "torch_threads": 2, "memory_gib": 24, "gpu": None},
        "commands": ["python benchmarks/toy.py"],
        "seconds": 12,
        "records": records,
        **extra,
    }


def toy_writer(records: list[dict]) -> str:
    return "| value |\n|--:|\n" + "".join(f"| {record['value']} |\n" for record in records if record["bench"] == "toy")


TEXT = """# Results

Hand-written prose, kept as it is.

<!-- bench:toy -->
| value |
|--:|
| 999 (stale) |
<!-- /bench:toy -->

More prose.
"""


# ---------------------------------------------------------------------------------------------------- render


def test_render_rewrites_only_the_blocks_and_is_idempotent():
    results = {"toy": stored([{"bench": "toy", "value": 7}])}
    rendered = tables.render(TEXT, results, {"toy": toy_writer})
    assert "999" not in rendered and "| 7 |" in rendered
    assert "_Measured 2026-12-04 at commit `abc1234`, 12 s in all. Test CPU, 2 cores" in rendered
    assert "Commands: `python benchmarks/toy.py`" in rendered
    before, after = TEXT.split("<!-- bench:toy -->")[0], TEXT.split("<!-- /bench:toy -->")[1]
    assert rendered.startswith(before) and rendered.endswith(after)
    assert tables.render(rendered, results, {"toy": toy_writer}) == rendered


def test_a_block_without_a_result_loses_its_stale_numbers_and_says_how_to_measure_it():
    rendered = tables.render(TEXT, {}, {"toy": toy_writer})
    assert "999" not in rendered
    assert "python benchmarks/bench.py all --only toy --output benchmarks/RESULTS.md" in rendered


def test_a_result_measured_on_uncommitted_changes_says_so():
    results = {"toy": stored([{"bench": "toy", "value": 7}], uncommitted_changes=["a.py", "b.py"])}
    assert "commit `abc1234` plus uncommitted changes to 2 files" in tables.render(TEXT, results, {"toy": toy_writer})


def test_a_block_naming_no_benchmark_is_an_error():
    with pytest.raises(tables.RenderError, match="block `toy`, which is no benchmark"):
        tables.render(TEXT, {}, {"other": toy_writer})


def test_a_result_its_writer_cannot_read_is_an_error_naming_the_file_and_the_fix(tmp_path):
    output = tmp_path / "RESULTS.md"
    output.write_text(TEXT, encoding="utf-8")
    (tmp_path / "results").mkdir()
    (tmp_path / "results" / "toy.json").write_text(json.dumps(stored([{"bench": "toy"}])), encoding="utf-8")
    with pytest.raises(tables.RenderError, match=r"results/toy\.json \(KeyError: 'value'\).*--only toy"):
        tables.render_file(output, tmp_path / "results", {"toy": toy_writer})
    assert output.read_text(encoding="utf-8") == TEXT  # left as it was


def test_a_missing_output_or_a_corrupt_result_is_an_error_naming_the_file(tmp_path):
    with pytest.raises(tables.RenderError, match=r"RESULTS\.md does not exist"):
        tables.render_file(tmp_path / "RESULTS.md", tmp_path, {"toy": toy_writer})
    output = tmp_path / "RESULTS.md"
    output.write_text(TEXT, encoding="utf-8")
    (tmp_path / "toy.json").write_text('{"date": ', encoding="utf-8")
    with pytest.raises(tables.RenderError, match=r"toy\.json is not a stored result .*--only toy"):
        tables.render_file(output, tmp_path, {"toy": toy_writer})
    assert output.read_text(encoding="utf-8") == TEXT


def test_a_file_without_blocks_is_an_error(tmp_path):
    output = tmp_path / "RESULTS.md"
    output.write_text("# Results\n\nNo blocks.\n", encoding="utf-8")
    with pytest.raises(tables.RenderError, match="no `<!-- bench:<name> -->` block"):
        tables.render_file(output, tmp_path, {"toy": toy_writer})


def test_the_repositorys_results_md_is_what_its_stored_results_render_to():
    """No table of RESULTS.md that `make bench` did not write: a hand edit inside a block, a stale result or a
    writer change that was not re-rendered fails here (fix: `python benchmarks/bench.py render`)."""
    text = (BENCHMARKS_DIR / "RESULTS.md").read_text(encoding="utf-8")
    blocks = {match["name"] for match in tables.BLOCK.finditer(text)}
    assert blocks == set(suite.BENCHMARKS), "every benchmark has its block in RESULTS.md, and only those"
    results = tables.load_results(BENCHMARKS_DIR / "results")
    assert set(results) <= set(suite.BENCHMARKS)
    assert tables.render(text, results, suite.WRITERS) == text, "run `python benchmarks/bench.py render`"


def test_every_benchmark_command_names_a_script_in_the_repository():
    for benchmark in suite.BENCHMARKS.values():
        for program, *args in benchmark.commands:
            if program == PYTHON:
                assert (BENCHMARKS_DIR.parent / args[0]).is_file(), (benchmark.name, args[0])
            else:
                assert program == "st-bge", benchmark.name


# ------------------------------------------------------------------------------------------------------ runs


def toy_benchmark(name: str, *code: str) -> suite.Benchmark:
    return suite.Benchmark(name, tuple((PYTHON, "-c", line) for line in code), toy_writer, minutes=1)


def test_a_run_stores_the_json_records_it_printed_with_provenance(tmp_path):
    code = (
        "import json; print(json.dumps({'bench': 'toy', 'value': 1})); print({'loss': 0.5}); "
        "print(json.dumps({'not': 'a record'})); print('text')"
    )
    path = suite.run(toy_benchmark("toy", code), results_dir=tmp_path)
    result = json.loads(path.read_text(encoding="utf-8"))
    records = result["records"]
    assert records[0] == {"bench": "toy", "value": 1}
    assert [record["bench"] for record in records] == ["toy", "command"]  # the Trainer's dict line is not JSON
    assert records[1]["command"].startswith("python -c ") and records[1]["seconds"] >= 0
    assert result["commit"] == suite.git("rev-parse", "--short", "HEAD")
    assert {"torch", "transformers", "sentence-transformers"} <= set(result["versions"])
    assert {"cpu", "cores", "torch_threads", "memory_gib", "gpu"} <= set(result["machine"])
    assert result["commands"] == [shlex.join(["python", "-c", code])]


def test_a_failed_command_stores_nothing_and_keeps_the_previous_result(tmp_path):
    previous = tmp_path / "toy.json"
    previous.write_text("{}", encoding="utf-8")
    benchmark = toy_benchmark("toy", 'print(\'{"bench": "toy", "value": 1}\')', "raise SystemExit(3)")
    with pytest.raises(suite.CommandFailed, match="exited with status 3"):
        suite.run(benchmark, results_dir=tmp_path)
    assert previous.read_text(encoding="utf-8") == "{}"


def test_run_all_refuses_uncommitted_changes(monkeypatch, tmp_path):
    monkeypatch.setattr(suite, "uncommitted_changes", lambda output: ["st_bge/losses.py"])
    (tmp_path / "RESULTS.md").write_text(TEXT, encoding="utf-8")
    with pytest.raises(SystemExit, match=r"uncommitted changes to st_bge/losses\.py.*--allow_uncommitted"):
        suite.run_all(["train"], tmp_path / "RESULTS.md")


def test_what_the_suite_writes_is_not_an_uncommitted_change(monkeypatch):
    changed = "benchmarks/RESULTS.md\nbenchmarks/results/train.json\nst_bge/losses.py"
    monkeypatch.setattr(suite, "git", lambda *args: changed)
    assert suite.uncommitted_changes(BENCHMARKS_DIR / "RESULTS.md") == ["st_bge/losses.py"]
    assert suite.uncommitted_changes() == ["benchmarks/RESULTS.md", "st_bge/losses.py"]


def test_the_default_selection_leaves_out_what_needs_absent_data_and_says_so(monkeypatch, tmp_path, capsys):
    monkeypatch.setattr(suite, "SHARED_DATA", tmp_path / "absent")
    names = suite.default_selection(skip=["serve"])
    assert "serve" not in names and "train" in names
    assert not {"sweep", "cold-start"} & set(names)
    assert "leaving out sweep, cold-start: they read ../shared/data" in capsys.readouterr().out
    (tmp_path / "RESULTS.md").write_text(TEXT, encoding="utf-8")
    with pytest.raises(SystemExit, match=r"sweep read \.\./shared/data, which is not here"):
        suite.run_all(["sweep"], tmp_path / "RESULTS.md", allow_uncommitted=True)
    with pytest.raises(SystemExit, match="unknown benchmark nope"):
        suite.default_selection(skip=["nope"])


def test_run_all_refuses_a_missing_output_before_measuring(tmp_path):
    with pytest.raises(SystemExit, match=r"RESULTS\.md does not exist"):
        suite.run_all(["train"], tmp_path / "RESULTS.md")


def test_run_all_refuses_unknown_names():
    with pytest.raises(SystemExit, match="unknown benchmark nope; known: serve"):
        suite.run_all(["nope"], Path("RESULTS.md"))


def test_run_all_goes_on_after_a_failure_and_renders_what_finished(monkeypatch, tmp_path, capsys):
    fine = toy_benchmark("toy", 'print(\'{"bench": "toy", "value": 5}\')')
    broken = toy_benchmark("broken", "raise SystemExit(1)")
    monkeypatch.setattr(suite, "BENCHMARKS", {"broken": broken, "toy": fine})
    monkeypatch.setattr(suite, "WRITERS", {"broken": toy_writer, "toy": toy_writer})
    monkeypatch.setattr(suite, "RESULTS_DIR", tmp_path / "results")
    monkeypatch.setattr(suite, "uncommitted_changes", lambda output: [])
    output = tmp_path / "RESULTS.md"
    output.write_text(TEXT + "\n<!-- bench:broken -->\n<!-- /bench:broken -->\n", encoding="utf-8")
    with pytest.raises(SystemExit, match="broken failed"):
        suite.run_all(["broken", "toy"], output)
    text = output.read_text(encoding="utf-8")
    assert "| 5 |" in text and "999" not in text
    assert "--only broken" in text  # still not measured, and says how
    assert not (tmp_path / "results" / "broken.json").exists()


# --------------------------------------------------------------------------------------------------- writers


def train_record(model: str, mfu_before: float, mfu_after: float, vs_bare: float) -> dict:
    return {
        "bench": "train",
        "model": model,
        "parameters": 22.7e6,
        "batch": 32,
        "max_length": 256,
        "st_bge_samples_per_second": 4.0 * vs_bare,
        "bare_samples_per_second": 4.0,
        "pad512_samples_per_second": 0.5,
        "st_bge_vs_bare": vs_bare,
        "st_bge_vs_pad512": 8.0 * vs_bare,
        "bare_tokens_per_step": 7781.0,
        "bare_flops_per_step": 0.532e12,
        "bare_achieved_flops_per_second": 84e9,
        "bare_peak_before": 84e9 / mfu_before,
        "bare_peak_after": 84e9 / mfu_after,
        "bare_mfu": min(mfu_before, mfu_after),
        "bare_mfu_if_peak_before": mfu_before,
        "bare_mfu_if_peak_after": mfu_after,
    }


def test_train_goals_are_computed_from_the_measurements():
    text = tables.train([train_record("good", 0.5, 0.4, 1.0), train_record("bad", 0.9, 1.2, 0.8)])
    assert "- good: st-bge / bare loop: 1.00x, goal ≥ 0.9x: **met**" in text
    assert "- good: MFU against the slower peak: 0.50, goal ≤ 1: **met**" in text
    assert "- bad: st-bge / bare loop: 0.80x, goal ≥ 0.9x: **not met**" in text
    assert "- bad: MFU against the slower peak: 1.20, goal ≤ 1: **not met**" in text
    assert "| good | 7,781 | 0.532 T | 84.0 | 168.0 / 210.0 | **0.40** | 0.50 / 0.40 |" in text


def loss_record(variant: str, batch: int, samples_per_second: float, lora: bool = True) -> dict:
    return {
        "bench": "losses",
        "variant": variant,
        "batch": batch,
        "lora": lora,
        "samples_per_second": samples_per_second,
    }


def test_losses_cost_per_sample_is_relative_to_mnrl_at_the_same_batch():
    records = [{"bench": "losses", "max_length": 128, "steps": 3}]  # the header record has no variant
    for lora in (True, False):
        records += [loss_record("mnrl", 32, 8.0, lora), loss_record("cached_gist (st-bge)", 32, 4.0, lora)]
        records += [loss_record("mnrl", 128, 6.0, lora), loss_record("cached_gist (st-bge)", 128, 5.0, lora)]
    text = tables.losses(records)
    assert "| cached GIST (st-bge now) | 4.00 | 2.00x | 5.00 | 1.20x |" in text
    assert "LoRA, batch 32: 2.00x, goal ≤ 1.3x: **not met**" in text
    assert "LoRA, batch 128: 1.20x, goal ≤ 1.3x: **met**" in text


def test_memory_table_marks_skipped_cells_and_judges_the_cached_loss_on_the_first_meter():
    def cell(loss, batch, meter, mib):
        record = {"bench": "memory", "model": "m", "loss": loss, "batch": batch, "max_length": 64}
        return {**record, "meter": meter, "peak_increase_mib": mib}

    records = [
        cell("mnrl", 32, "tensors", 400.0),
        cell("mnrl", 32, "rss", 500.0),
        cell("cached_mnrl", 32, "tensors", 300.0),
        cell("cached_mnrl", 32, "rss", 350.0),
        {"bench": "memory", "model": "m", "loss": "mnrl", "batch": 1024, "skipped": "over --max_plain_batch"},
        cell("cached_mnrl", 1024, "tensors", 600.0),
        cell("cached_mnrl", 1024, "rss", 900.0),
    ]
    text = tables.memory(records)
    assert "| 32 | **400** / 500 | **300** / 350 |" in text
    assert "| 1024 | skipped | **600** / 900 |" in text
    assert "cached_mnrl at batch 1024 vs MNRL at 32 (tensors): 1.50x, goal ≤ 1.3x: **not met**" in text


def toy_comparison() -> dict:
    qrels = to_qrels({"q1": {"d1": 1}, "q2": {"d2": 1}, "q3": {"d3": 1}})
    base = to_run({"q1": {"x": 2, "d1": 1}, "q2": {"d2": 1}, "q3": {"x": 2, "d3": 1}})
    tuned = to_run({"q1": {"d1": 2}, "q2": {"d2": 1}, "q3": {"d3": 2, "x": 1}})
    result = compare_runs(
        qrels,
        {"base": base, "tuned": tuned},
        ["ndcg@10"],
        eval_set={"name": "toy", "queries": 3, "corpus": 4, "top_k": 100},
    )
    return RetrievalComparison({"dense": result}).to_dict()


def test_comparison_writers_print_the_stored_comparison_and_the_training_wall_times():
    data = toy_comparison()
    records = [
        {"bench": "m3-quickstart", "table": "against_base", "comparison": data},
        {"bench": "m3-quickstart", "table": "head_to_head", "comparison": data},
        {"bench": "command", "command": "st-bge train recipes/quickstart.yaml --output_dir /tmp/x", "seconds": 300.4},
        {"bench": "command", "command": "python benchmarks/m3_quickstart.py --recipe r", "seconds": 20.0},
    ]
    text = tables.m3_quickstart(records)
    table = RetrievalComparison.from_dict(data).to_markdown()
    assert "| ndcg@10 |" in table and text.count(table) == 2  # against the base, and the one mode head to head
    assert text.count("_toy: 3 queries, 4 documents, top 100 retrieved._") == 1
    assert "Wall time of the training runs: `st-bge train recipes/quickstart.yaml --output_dir /tmp/x` 300 s." in text


def test_cold_start_writer_shows_both_comparisons_and_the_synthesis_counts():
    report = {
        "corpus": {"source": "toy", "records": 10, "duplicates_dropped": 1, "passages_used": 9},
        "generation": {
            "generator": "ict",
            "answered": 9,
            "resumed": 0,
            "failed_this_run": 0,
            "retries_this_run": {},
            "unusable": {},
            "queries_generated": 9,
        },
        "filters": {"dropped": dict.fromkeys(FILTERS, 1)},
        "output": {"train_pairs": 3, "eval_queries": 0},
    }
    record = {
        "bench": "cold-start",
        "set": "mbpp",
        "settings": ["real", "ict"],
        "real_rows": 342,
        "against_base": toy_comparison(),
        "against_real": toy_comparison(),
        "seconds": {"real": 300, "ict": 400},
        "synth_reports": {"ict": report},
    }
    text = tables.cold_start([record])
    assert "mbpp (342 real training rows), against the base model:" in text
    assert "Against training on the real queries:" in text
    assert "Wall time (synthesis + training): real 300 s, ict 400 s" in text
    assert "| training pairs kept | 3 |" in text and "| dropped: round_trip | 1 |" in text


def test_sweep_writer_quotes_the_settings_as_a_shell_would_and_shows_each_sets_comparison():
    record = {
        "bench": "sweep",
        "set": "mbpp",
        "settings": ["today", "+mined", "6 epochs"],
        "comparison": toy_comparison(),
        "seconds": {"today": 300, "+mined": 420, "6 epochs": 450},
        "train_runtime": {"today": 280, "+mined": 400, "6 epochs": 430},
    }
    text = tables.sweep([record, {**record, "set": "zh_medical"}])
    assert "mbpp, `--settings today +mined '6 epochs'`:" in text  # what to type to run it again
    assert "zh_medical, `--settings today +mined '6 epochs'`:" in text
    assert text.count(RetrievalComparison.from_dict(record["comparison"]).to_markdown()) == 2
    assert "Wall time (train + evaluations): today 300 s, +mined 420 s, 6 epochs 450 s" in text


def test_run_sets_prints_each_sets_record_as_it_finishes_and_keeps_the_tables_so_far(tmp_path, capsys):
    output, scratches = tmp_path / "tables.md", []

    def run_set(name, settings, scratch):
        scratches.append(scratch)
        (scratch / name).write_text("model")
        if name == "broken":
            assert output.read_text() == "first: a b\n"  # the finished set is already on disk
            raise RuntimeError("out of memory")
        return {"bench": "toy", "set": name, "settings": settings}

    def writer(records):
        return "\n".join(f"{record['set']}: {' '.join(record['settings'])}" for record in records)

    suite.run_sets(["first", "second"], ["a", "b"], run_set, writer, output)
    lines = capsys.readouterr().out.splitlines()
    assert [json.loads(line)["set"] for line in lines[:2]] == ["first", "second"]
    assert lines[2:] == ["", "first: a b", "second: a b"]
    assert output.read_text() == "first: a b\nsecond: a b\n"
    with pytest.raises(RuntimeError, match="out of memory"):
        suite.run_sets(["first", "broken"], ["a", "b"], run_set, writer, output)
    assert not any(scratch.exists() for scratch in scratches)
