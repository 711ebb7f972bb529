"""`python benchmarks/gpu.py --dry-run`: the GPU benchmark command runs end to end on the CPU (tiny shapes), so
that the code a lent GPU will run has run somewhere."""

from __future__ import annotations

import json
import sys
from pathlib import Path

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def test_the_gpu_benchmarks_dry_run_on_the_cpu(capsys, monkeypatch):
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    import gpu

    gpu.main(["--dry-run"])
    records = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith("{")]
    by_bench = {}
    for record in records:
        by_bench.setdefault(record["bench"], []).append(record)
    assert by_bench["gpu-machine"][0]["device"] == "cpu"
    (encoder,) = by_bench["gpu-encoder"]
    assert encoder["samples_per_second"] > 0 and 0 < encoder["mfu"] < 1
    assert {record["loss"] for record in by_bench["gpu-loss"]} == set(gpu.LOSSES)
    launches = {record["config"]: record for record in by_bench["gpu-launch"]}
    assert set(launches) == set(gpu.LAUNCH_CONFIGS) and not any(record["ran"] for record in launches.values())
    for config, record in launches.items():
        config_file = Path(record["command"][record["command"].index("--config_file") + 1])
        assert config_file.is_file() and config_file.stem == config
        assert Path(record["command"][record["command"].index("--config") + 1]).is_file()
    # The recipe part of a launch line parses (bf16 off: the CPU here refuses it, as transformers should).
    from st_bge.config import parse_recipe

    argv = launches["fsdp"]["command"]
    argv = argv[argv.index("--config") :]
    argv[argv.index("--bf16") + 1] = "false"
    recipe = parse_recipe(argv)
    assert recipe.training.gradient_checkpointing and recipe.training.max_steps == gpu.DRY.launch_steps
    sys.modules.pop("gpu", None)
