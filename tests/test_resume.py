"""A run killed with SIGKILL after a checkpoint and resumed ends exactly like the same run left alone.

Exactly, not approximately: a resumed run that drifted (another data order, dropout masks drawn from another RNG
state, a learning-rate schedule restarted) would still train and still look plausible, so only bit-identical
weights, optimizer state, per-step losses and final metrics show that the Trainer picked up where it stopped.

The setup is chosen to reach the hard paths: 3 batches per epoch (8 training queries, batch size 3), so the
checkpoints at steps 2 and 4 fall mid-epoch (the resumed run skips batches of the no-duplicates sampler, in epoch
1 at step 4, whose order depends on `set_epoch`), and LoRA plus BERT dropout, which consume the torch RNG.
"""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
import time

import pytest
import torch
from conftest import flags
from safetensors.torch import load_file

from st_bge.cli import main

STEPS, SAVE_STEPS, KILLED_AFTER = 8, 2, 4
TIMING_KEYS = {"train_runtime", "train_samples_per_second", "train_steps_per_second"}

# `st-bge train`, plus a callback that holds the process once checkpoint-KILLED_AFTER is saved. The test kills it
# there with SIGKILL: without the hold the kill would race the remaining steps (about a second on a tiny model),
# and a kill after the last checkpoint would test nothing. The hold only sleeps, so the run is otherwise untouched.
HELD_CLI = f"""
import sys, time
from transformers import TrainerCallback, trainer

class HoldAfterCheckpoint(TrainerCallback):
    def on_save(self, args, state, control, **kwargs):
        if state.global_step == {KILLED_AFTER}:
            time.sleep(600)

trainer.DEFAULT_CALLBACKS.append(HoldAfterCheckpoint)
from st_bge.cli import main
sys.exit(main(sys.argv[1:]))
"""


def run_flags(model, data, output_dir) -> list[str]:
    """A LoRA + MNRL run of STEPS steps, a checkpoint every SAVE_STEPS, evaluated once at the end."""
    return flags(
        model_name_or_path=model,
        dataset_name_or_path=data,
        eval_dataset_name_or_path=data,
        loss="mnrl",
        use_lora=True,
        lora_target_modules=["query", "value"],
        max_seq_length=64,
        per_device_train_batch_size=3,
        learning_rate=1e-3,
        max_steps=STEPS,
        save_strategy="steps",
        save_steps=SAVE_STEPS,
        keep_checkpoints=True,  # the optimizer states are compared after the run
        logging_steps=1,
        eval_strategy="no",
        seed=7,
        dataloader_num_workers=0,
        dataloader_pin_memory=False,
        report_to="none",
        output_dir=output_dir,
    )


@pytest.fixture(scope="module")
def uninterrupted(tiny_bert_path, beir_folder, tmp_path_factory):
    """The reference: the same run from start to end in one go."""
    output_dir = tmp_path_factory.mktemp("runs") / "uninterrupted"
    assert main(["train", *run_flags(tiny_bert_path, beir_folder, output_dir)]) == 0
    return output_dir


def is_whole_json(path) -> bool:
    """Polled while the child writes the file: existing is not enough, the kill must not cut it short."""
    try:
        json.loads(path.read_text())
    except (OSError, ValueError):
        return False
    return True


@pytest.fixture(scope="module")
def killed(tiny_bert_path, beir_folder, tmp_path_factory):
    """The run as a separate `st-bge train` process, killed with SIGKILL once checkpoint-4 is complete on disk."""
    output_dir = tmp_path_factory.mktemp("runs") / "killed"
    state = output_dir / f"checkpoint-{KILLED_AFTER}" / "trainer_state.json"  # the Trainer writes it last
    log = output_dir.with_name("killed.log")
    argv = ["train", *run_flags(tiny_bert_path, beir_folder, output_dir)]
    with open(log, "wb") as output:  # a file, not a pipe nobody reads, which could block the child
        child = subprocess.Popen([sys.executable, "-c", HELD_CLI, *argv], stdout=output, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 300
        while not is_whole_json(state) and child.poll() is None and time.monotonic() < deadline:
            time.sleep(0.02)
        child.send_signal(signal.SIGKILL)
        returncode = child.wait()
    assert is_whole_json(state), log.read_text()[-3000:]
    assert returncode == -signal.SIGKILL
    return output_dir


def resumed_copy(killed, tmp_path):
    """A copy of the killed run's folder, so that each test resumes from the state the kill left."""
    output_dir = tmp_path / "resumed"
    shutil.copytree(killed, output_dir)
    return output_dir


def assert_same_run(resumed, uninterrupted, resumed_from: int) -> None:
    """Weights, optimizer state, every logged step and the final metrics of the two runs are identical."""
    expected = load_file(uninterrupted / "adapter_model.safetensors")
    actual = load_file(resumed / "adapter_model.safetensors")
    assert expected.keys() == actual.keys()
    for name in expected:
        assert torch.equal(actual[name], expected[name]), name
    last = f"checkpoint-{STEPS}/optimizer.pt"
    expected_state = torch.load(uninterrupted / last, weights_only=True)["state"]
    actual_state = torch.load(resumed / last, weights_only=True)["state"]
    for index, moments in expected_state.items():
        for key, tensor in moments.items():
            assert torch.equal(actual_state[index][key], tensor), (index, key)

    expected_log = json.loads((uninterrupted / "training_log.json").read_text())
    actual_log = json.loads((resumed / "training_log.json").read_text())
    *expected_steps, expected_summary = expected_log
    *actual_steps, actual_summary = actual_log
    assert [entry["step"] for entry in expected_steps] == list(range(1, STEPS + 1))
    assert actual_steps == expected_steps  # loss, grad_norm, learning_rate, epoch of every step, exactly
    # transformers reports train_loss of one `train()` call: after a resume, the mean over the resumed steps only.
    resumed_losses = [entry["loss"] for entry in actual_steps[resumed_from:]]
    assert actual_summary["train_loss"] == pytest.approx(sum(resumed_losses) / len(resumed_losses), rel=1e-6)
    assert {k: v for k, v in actual_summary.items() if k not in TIMING_KEYS | {"train_loss"}} == {
        k: v for k, v in expected_summary.items() if k not in TIMING_KEYS | {"train_loss"}
    }
    expected_results = json.loads((uninterrupted / "eval_results.json").read_text())
    actual_results = json.loads((resumed / "eval_results.json").read_text())
    assert actual_results["modes"]["dense"]["scores"] == expected_results["modes"]["dense"]["scores"]


def test_killed_run_resumes_with_auto_to_the_same_end(
    killed, uninterrupted, tiny_bert_path, beir_folder, tmp_path, caplog
):
    """`--resume_from_checkpoint auto` takes the last complete checkpoint and skips one the kill left half-written."""
    assert not (killed / "adapter_model.safetensors").exists()  # killed before the end
    assert (killed / "data_quality.json").is_file()  # written before training: must not block the resume
    output_dir = resumed_copy(killed, tmp_path)
    # A kill while checkpoint-6 was being saved leaves weights but no whole trainer_state.json (written last).
    half_written = output_dir / f"checkpoint-{KILLED_AFTER + SAVE_STEPS}"
    shutil.copytree(output_dir / f"checkpoint-{KILLED_AFTER}", half_written)
    (half_written / "trainer_state.json").write_text('{"global_step": 6, "log_hi')
    caplog.set_level("INFO", logger="st_bge")
    argv = run_flags(tiny_bert_path, beir_folder, output_dir)
    assert main(["train", *argv, "--resume_from_checkpoint", "auto"]) == 0
    assert f"Skipping {half_written}: no valid trainer_state.json" in caplog.text
    assert f"Resuming from {output_dir / f'checkpoint-{KILLED_AFTER}'}" in caplog.text
    assert_same_run(output_dir, uninterrupted, resumed_from=KILLED_AFTER)


def test_resume_from_an_explicit_checkpoint_folder(killed, uninterrupted, tiny_bert_path, beir_folder, tmp_path):
    """A path still works: back to checkpoint-2 (mid-epoch 0), two checkpoints before where the run was killed."""
    output_dir = resumed_copy(killed, tmp_path)
    argv = run_flags(tiny_bert_path, beir_folder, output_dir)
    assert main(["train", *argv, "--resume_from_checkpoint", str(output_dir / "checkpoint-2")]) == 0
    assert_same_run(output_dir, uninterrupted, resumed_from=2)


@pytest.mark.parametrize("value", ["auto", "true"])
def test_resume_without_a_checkpoint_is_a_config_error(value, tiny_bert_path, beir_folder, tmp_path, capsys):
    output_dir = tmp_path / "fresh"
    for step in (1, 3):  # saves killed before or while writing trainer_state.json: nothing to resume from
        (output_dir / f"checkpoint-{step}").mkdir(parents=True)
    (output_dir / "checkpoint-3" / "trainer_state.json").write_text('{"global_step": 3')
    argv = ["train", *run_flags(tiny_bert_path, beir_folder, output_dir), "--resume_from_checkpoint", value]
    assert main(argv) == 2
    assert capsys.readouterr().err == (
        f"st-bge: error: resume_from_checkpoint {value}: no checkpoint-* folder with a valid trainer_state.json "
        f"in output_dir '{output_dir}' to resume from; train without resume_from_checkpoint to start afresh\n"
    )


def test_resume_from_a_folder_that_is_not_a_checkpoint_is_a_config_error(
    tiny_bert_path, beir_folder, tmp_path, capsys
):
    argv = ["train", *run_flags(tiny_bert_path, beir_folder, tmp_path / "out"), "--resume_from_checkpoint", "nope"]
    assert main(argv) == 2
    assert capsys.readouterr().err == (
        "st-bge: error: resume_from_checkpoint 'nope' is not a checkpoint folder (no valid trainer_state.json)\n"
    )
