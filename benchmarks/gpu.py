"""The GPU benchmarks in one command, written to run as they are when a GPU is lent (none is, here).

    python benchmarks/gpu.py                 # a CUDA machine: everything below, one JSON line per measurement
    python benchmarks/gpu.py --dry-run       # anywhere: the same code on tiny shapes, on the CPU, in float32

1. `encoder`: a BGE-M3-sized random model (XLM-R large: 24 layers, hidden 1024, 250,002-token vocabulary) trained
   by a bare loop on full (batch 32 x 512) batches under bf16 autocast: samples/s,
   `torch.cuda.max_memory_allocated`, and MFU (benchmarks/mfu.py: matmul FLOPs over the bf16 peak of the model's
   own matmul shapes, measured before and after).
2. `loss`: the cached losses (cached_mnrl, cached_gist, cached_m3_unified, mini-batch 128) at batch 1024 and 8192,
   max length 256: one forward + backward each after a warm-up, seconds and peak memory.
3. `launch`: recipes/README.md's DeepSpeed ZeRO-2, ZeRO-3 and FSDP lines, 3 steps each of
   recipes/bge-m3/full-mnrl.yaml on the random model and the shipped MBPP data: exit code and wall time (DeepSpeed
   must be installed; a missing one shows as its exit code). The dry run prints these lines without running them.

Sized for one H200 in under 10 minutes (an estimate: it has not run on a GPU yet); tests/test_gpu_bench.py runs the
dry run.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import suite
import torch
import torch.nn.functional as F
from bench import MBPP, emit, m3_random, mbpp_batch
from mfu import Utilisation, encoder_flops, matmul_peak, model_matmul_shapes

from st_bge.config import LossArguments, ModelArguments
from st_bge.losses import build_loss
from st_bge.modeling import frozen_copy, load_model

REPO = Path(__file__).resolve().parents[1]
LAUNCH_CONFIGS = ("deepspeed_zero2", "deepspeed_zero3", "fsdp")
LOSSES = ("cached_mnrl", "cached_gist", "cached_m3_unified")


@dataclass(frozen=True)
class Plan:
    """The shapes and sizes of one run."""

    model: dict
    encoder_batch: int
    encoder_length: int
    encoder_steps: int
    loss_batches: tuple[int, ...]
    loss_length: int
    mini_batch: int
    launch_steps: int


FULL = Plan(
    model={"layers": 24},
    encoder_batch=32,
    encoder_length=512,
    encoder_steps=6,
    loss_batches=(1024, 8192),
    loss_length=256,
    mini_batch=128,
    launch_steps=3,
)
DRY = Plan(
    model={"layers": 2, "hidden": 32, "vocab": 3000, "heads": 2, "intermediate": 64, "max_length": 64},
    encoder_batch=4,
    encoder_length=16,
    encoder_steps=3,
    loss_batches=(8,),
    loss_length=16,
    mini_batch=4,
    launch_steps=1,
)


def device_settings(dry_run: bool) -> tuple[torch.device, torch.dtype]:
    if dry_run:
        return torch.device("cpu"), torch.float32
    if not torch.cuda.is_available():
        raise SystemExit("no CUDA device: `python benchmarks/gpu.py --dry-run` runs the CPU fallback")
    return torch.device("cuda"), torch.bfloat16


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()


def peak_mib(device: torch.device) -> float | None:
    return torch.cuda.max_memory_allocated() / 2**20 if device.type == "cuda" else None


def bench_encoder(model_path: Path, plan: Plan, device: torch.device, dtype: torch.dtype) -> None:
    """A bare training loop on full batches (every row `encoder_length` tokens): in-batch softmax over CLS."""
    from transformers import AutoModel

    encoder = AutoModel.from_pretrained(str(model_path), add_pooling_layer=False).to(device).train()
    optimizer = torch.optim.AdamW(encoder.parameters(), lr=1e-5)
    vocab = min(encoder.config.vocab_size, 2000)  # ids the tokenizer makes: the lookup's cost does not depend on them
    shapes = model_matmul_shapes(encoder.config, tokens=plan.encoder_batch * plan.encoder_length)
    peak_before = matmul_peak(shapes, dtype=dtype, device=device)
    reset_peak(device)
    times = []
    for _ in range(plan.encoder_steps):
        ids = torch.randint(5, vocab, (2, plan.encoder_batch, plan.encoder_length), device=device)
        with torch.autocast(device.type, dtype=dtype, enabled=dtype != torch.float32):
            anchors, positives = (F.normalize(encoder(input_ids=x).last_hidden_state[:, 0], dim=-1) for x in ids)
            loss = F.cross_entropy(anchors @ positives.T * 50, torch.arange(plan.encoder_batch, device=device))
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        sync(device)
        times.append(time.perf_counter())
    peak_after = matmul_peak(shapes, dtype=dtype, device=device)
    steps_per_second = (len(times) - 1) / (times[-1] - times[0])
    flops = 2 * encoder_flops(encoder.config, plan.encoder_batch, plan.encoder_length)  # anchors and positives
    utilisation = Utilisation(flops * steps_per_second, peak_before, peak_after)
    emit(
        {
            "bench": "gpu-encoder",
            "dtype": str(dtype),
            "batch": plan.encoder_batch,
            "max_length": plan.encoder_length,
            "samples_per_second": plan.encoder_batch * steps_per_second,
            "max_memory_allocated_mib": peak_mib(device),
            **utilisation.to_dict(),
        }
    )


def bench_loss(model_path: Path, loss_name: str, batch: int, plan: Plan, device: torch.device, dtype) -> None:
    """One forward + backward of a cached loss at `batch` rows (after a 2-row warm-up)."""
    args = ModelArguments(model_name_or_path=str(model_path), max_seq_length=plan.loss_length)
    model = load_model(args, as_m3="m3" in loss_name).to(device)
    guide = frozen_copy(model) if "gist" in loss_name else None
    loss = build_loss(
        model, LossArguments(loss=loss_name, temperature=0.02, mini_batch_size=plan.mini_batch), guide=guide
    )
    anchors, positives = mbpp_batch(batch)

    def step(rows: int) -> None:
        features = [model.tokenize(anchors[:rows]), model.tokenize(positives[:rows])]
        features = [{k: v.to(device) if torch.is_tensor(v) else v for k, v in f.items()} for f in features]
        with torch.autocast(device.type, dtype=dtype, enabled=dtype != torch.float32):
            value = loss(features, None)
        value.backward()
        sync(device)

    step(2)
    reset_peak(device)
    start = time.perf_counter()
    step(batch)
    emit(
        {
            "bench": "gpu-loss",
            "loss": loss_name,
            "batch": batch,
            "mini_batch": plan.mini_batch,
            "max_length": plan.loss_length,
            "seconds": time.perf_counter() - start,
            "max_memory_allocated_mib": peak_mib(device),
        }
    )


def launch_command(config: str, model_path: Path, output_dir: Path, steps: int) -> list[str]:
    """recipes/README.md's launch line for `config`, on the random model for `steps` steps."""
    return [
        *(sys.executable, "-m", "accelerate.commands.launch"),
        *("--config_file", str(REPO / "accelerate_configs" / f"{config}.yaml")),
        str(REPO / "recipes" / "train.py"),
        *("--config", str(REPO / "recipes" / "bge-m3" / "full-mnrl.yaml")),
        *("--model_name_or_path", str(model_path), "--dataset_name_or_path", str(MBPP)),
        *("--bf16", "true", "--gradient_checkpointing", "true", "--max_steps", str(steps)),
        *("--output_dir", str(output_dir), "--eval_strategy", "no", "--save_strategy", "no"),
        *("--load_best_model_at_end", "false", "--eval_split_size", "0"),
    ]


def bench_launch(model_path: Path, plan: Plan, tmp: Path, dry_run: bool) -> None:
    for config in LAUNCH_CONFIGS:
        command = launch_command(config, model_path, tmp / f"launch-{config}", plan.launch_steps)
        if dry_run:
            emit({"bench": "gpu-launch", "config": config, "ran": False, "command": command})
            continue
        start = time.perf_counter()
        done = subprocess.run(command, capture_output=True, text=True, timeout=300)
        emit(
            {
                "bench": "gpu-launch",
                "config": config,
                "ran": True,
                "returncode": done.returncode,
                "seconds": time.perf_counter() - start,
                "stderr_tail": done.stderr[-2000:] if done.returncode else "",
            }
        )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dry-run", action="store_true", help="tiny shapes on the CPU (no GPU needed)")
    parser.add_argument(
        "--only", nargs="+", choices=["encoder", "loss", "launch"], default=["encoder", "loss", "launch"]
    )
    args = parser.parse_args(argv)
    device, dtype = device_settings(args.dry_run)
    plan = DRY if args.dry_run else FULL
    emit({"bench": "gpu-machine", "device": str(device), "dry_run": args.dry_run, **suite.machine()})
    with tempfile.TemporaryDirectory() as tmp:
        model_path = m3_random(Path(tmp), **plan.model)
        if "encoder" in args.only:
            bench_encoder(model_path, plan, device, dtype)
        if "loss" in args.only:
            for loss_name in LOSSES:
                for batch in plan.loss_batches:
                    bench_loss(model_path, loss_name, batch, plan, device, dtype)
        if "launch" in args.only:
            bench_launch(model_path, plan, Path(tmp), args.dry_run)


if __name__ == "__main__":
    main()
