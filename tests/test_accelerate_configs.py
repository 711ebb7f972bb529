"""Every accelerate config in accelerate_configs/ is one accelerate itself accepts, launched as documented."""

from __future__ import annotations

import re

import pytest
from accelerate.commands.config.config_args import load_config_from_file
from accelerate.utils import DistributedType
from conftest import REPO

CONFIGS = sorted((REPO / "accelerate_configs").glob("*.yaml"))
# (processes, machines): one per GPU of an 8-GPU machine, two machines for multi_node, two CPU processes.
PROCESSES = {
    "cpu.yaml": (1, 1),
    "cpu_multi_process.yaml": (2, 1),
    "single_gpu.yaml": (1, 1),
    "multi_gpu.yaml": (8, 1),
    "multi_node.yaml": (16, 2),
    "deepspeed_zero2.yaml": (8, 1),
    "deepspeed_zero3.yaml": (8, 1),
    "fsdp.yaml": (8, 1),
}
EXPECTED = {
    "cpu.yaml": DistributedType.NO,
    "cpu_multi_process.yaml": DistributedType.MULTI_GPU,
    "single_gpu.yaml": DistributedType.NO,
    "multi_gpu.yaml": DistributedType.MULTI_GPU,
    "multi_node.yaml": DistributedType.MULTI_GPU,
    "deepspeed_zero2.yaml": DistributedType.DEEPSPEED,
    "deepspeed_zero3.yaml": DistributedType.DEEPSPEED,
    "fsdp.yaml": DistributedType.FSDP,
}


def test_the_documented_set_is_there():
    assert sorted(path.name for path in CONFIGS) == sorted(EXPECTED)


@pytest.mark.parametrize("path", CONFIGS, ids=lambda path: path.name)
def test_config_loads_and_its_launch_line_is_in_the_recipes_readme(path):
    config = load_config_from_file(str(path))
    assert config.distributed_type == EXPECTED[path.name]
    assert (config.num_processes, config.num_machines) == PROCESSES[path.name]
    readme = (REPO / "recipes" / "README.md").read_text()
    assert re.search(rf"accelerate launch --config_file accelerate_configs/{re.escape(path.name)} ", readme), path.name
    if config.distributed_type != DistributedType.NO or path.name == "single_gpu.yaml":
        assert config.mixed_precision in ("bf16", "no"), path.name
