"""`st-bge data check|mine` and the data stage of `st-bge train`: reports, verdicts, mined files, refusals."""

from __future__ import annotations

import json

from datasets import load_dataset

from st_bge.cli import main
from st_bge.data.quality import check_quality
from tests.conftest import NO_EVAL_DURING_TRAINING, TOPICS, flags

CLEAN = [{"anchor": query, "positive": code} for query, code in TOPICS.values()]


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def with_negatives(rows, *, copy_positive: bool):
    """Each row with one negative: its own positive (a false negative) or the next row's positive."""
    return [
        {**row, "negative": row["positive"] if copy_positive else rows[(i + 1) % len(rows)]["positive"]}
        for i, row in enumerate(rows)
    ]


def test_check_a_clean_file_prints_the_report_and_exits_0(tmp_path, tiny_bert_path, capsys):
    path = write_jsonl(tmp_path / "pairs.jsonl", CLEAN)
    assert main(["data", "check", str(path)]) == 0
    assert capsys.readouterr().out.splitlines()[0] == f"# Data quality: {path} — ok"
    # With the model, token lengths count: the tiny tokenizer cuts most of the code at 8 tokens, a warning.
    code = main(["data", "check", str(path), *flags(model_name_or_path=tiny_bert_path, max_seq_length=8)])
    out = capsys.readouterr().out
    assert code == 0
    assert out.splitlines()[0] == f"# Data quality: {path} — warn"
    assert "raise max_seq_length" in out


def test_check_fails_on_false_negatives_with_exit_code_1(tmp_path, capsys):
    path = write_jsonl(tmp_path / "triplets.jsonl", with_negatives(CLEAN, copy_positive=True))
    assert main(["data", "check", str(path)]) == 1
    out = capsys.readouterr().out
    assert "fail" in out.splitlines()[0] and "false negative" in out


def test_training_stops_before_the_first_step_on_a_fail_and_runs_after_the_fix(tmp_path, tiny_bert_path, capsys):
    output_dir = tmp_path / "run"
    bad = write_jsonl(tmp_path / "bad.jsonl", with_negatives(CLEAN, copy_positive=True))
    common = flags(model_name_or_path=tiny_bert_path, output_dir=output_dir, max_steps=1, loss="mnrl")
    common += flags(per_device_train_batch_size=4, **NO_EVAL_DURING_TRAINING)
    assert main(["train", *common, "--dataset_name_or_path", str(bad)]) == 2
    error = capsys.readouterr().err.splitlines()[-1]  # after the model's loading bars
    assert error.startswith(f"st-bge: error: {bad}: data quality check failed: ")
    assert f"report: {output_dir / 'data_quality.md'}" in error
    assert sorted(p.name for p in output_dir.iterdir()) == ["data_quality.json", "data_quality.md"]

    fixed = write_jsonl(tmp_path / "fixed.jsonl", with_negatives(CLEAN, copy_positive=False))
    assert main(["train", *common, "--dataset_name_or_path", str(fixed)]) == 0  # the old report is no obstacle
    assert (output_dir / "model.safetensors").is_file()
    assert json.loads((output_dir / "data_quality.json").read_text())["verdict"] == "ok"


def test_eval_overlap_can_be_refused(tmp_path, capsys):
    train = write_jsonl(tmp_path / "train.jsonl", CLEAN)
    held_out = write_jsonl(tmp_path / "eval.jsonl", CLEAN[:2])
    argv = ["data", "check", str(train), "--eval_dataset_name_or_path", str(held_out)]
    assert main(argv) == 0
    assert "evaluation queries seen in training" in capsys.readouterr().out
    assert main([*argv, "--eval_overlap", "refuse"]) == 2
    assert "training data overlaps the evaluation set" in capsys.readouterr().err


def test_mine_writes_a_trainable_file_and_the_reports(tmp_path, tiny_bert_path, capsys):
    data = write_jsonl(tmp_path / "pairs.jsonl", CLEAN)
    output_dir = tmp_path / "mined"
    argv = ["data", "mine", str(data)]
    argv += flags(
        model_name_or_path=tiny_bert_path,
        mine_num_negatives=2,
        mine_relative_margin=0.0,
        mine_output_dir=output_dir,
        mine_use_cache=False,
    )
    assert main(argv) == 0
    assert "kept" in capsys.readouterr().out
    mined = load_dataset("json", data_files=str(output_dir / "pairs.jsonl"), split="train")
    assert mined.column_names == ["anchor", "positive", "negative_1", "negative_2"]
    report = json.loads((output_dir / "mining_report.json").read_text())
    assert report["counts"]["rows_mined"] == len(mined) > 0
    assert check_quality(mined).verdict != "fail"
    assert {"data_quality.md", "mining_dropped_sample.jsonl"} <= {p.name for p in output_dir.iterdir()}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mined", "pairs.jsonl"]  # nothing beside the user's data

    assert main(argv) == 2  # nothing already mined is overwritten
    assert "already has files" in capsys.readouterr().err
