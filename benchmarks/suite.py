"""`make bench`: run the benchmarks, keep what they measured, and rewrite RESULTS.md's tables from it.

    python benchmarks/bench.py all --output benchmarks/RESULTS.md               # every benchmark (hours on 2 cores)
    python benchmarks/bench.py all --only train encode --output benchmarks/RESULTS.md
    python benchmarks/bench.py render --output benchmarks/RESULTS.md           # the tables again, from the results

Every benchmark script prints its measurements as JSON lines. A run of the suite executes each benchmark's commands,
keeps those records with the run's provenance (date, commit, library versions, machine, the exact commands) in
`benchmarks/results/<name>.json`, and writes each stored result into its block of RESULTS.md, the text between
`<!-- bench:<name> -->` and `<!-- /bench:<name> -->`. The prose lives outside the blocks and is written by hand;
every number inside a block is written from a stored result, so `render` alone reproduces RESULTS.md.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import platform
import shlex
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import tables

from st_bge.storage import write_text_atomically

REPO = Path(__file__).resolve().parents[1]
RESULTS_DIR = REPO / "benchmarks" / "results"
SHARED_DATA = REPO.parent / "shared" / "data"  # the experiments' real data, beside the repository, not shipped
LIBRARIES = ("torch", "transformers", "sentence-transformers", "accelerate", "peft", "ranx", "fastapi", "uvicorn")
SCRATCH = "{scratch}"  # in a command: a scratch folder of the benchmark's run, removed after it


@dataclass(frozen=True)
class Benchmark:
    """One block of RESULTS.md: the commands that measure it (as a user would type them, from the repository
    root) and the writer that turns their records into its tables."""

    name: str
    commands: tuple[tuple[str, ...], ...]
    tables: Callable[[list[dict]], str]
    minutes: int  # about, on the 2-core development machine; `--list` shows it before anyone waits
    needs_shared_data: bool = False  # reads ../shared/data, which is not shipped


BENCH = ("python", "benchmarks/bench.py")
BENCHMARKS = {
    benchmark.name: benchmark
    for benchmark in (
        Benchmark("serve", (("python", "benchmarks/serve_load.py", "--texts_per_request", "1", "--requests", "480"),
                            ("python", "benchmarks/serve_load.py", "--texts_per_request", "8", "--requests", "160")),
                  tables.serve, 6),
        Benchmark("losses", ((*BENCH, "losses"),), tables.losses, 25),
        Benchmark("memory", ((*BENCH, "memory"), (*BENCH, "memory", "--model", "bge-small", "--max_plain_batch", "128")),
                  tables.memory, 20),
        Benchmark("memory-m3", ((*BENCH, "memory", "--losses", "mnrl", "cached_mnrl", "m3_unified", "cached_m3_unified",
                                 "--meters", "tensors", "--max_plain_batch", "128"),), tables.memory, 10),
        Benchmark("m3-quickstart", (("st-bge", "train", "recipes/quickstart.yaml", "--output_dir", f"{SCRATCH}/dense"),
                                    ("st-bge", "train", "recipes/quickstart-unified.yaml",
                                     "--output_dir", f"{SCRATCH}/unified"),
                                    ("python", "benchmarks/m3_quickstart.py", "--recipe", "recipes/quickstart.yaml",
                                     "--models", f"dense={SCRATCH}/dense", f"unified={SCRATCH}/unified",
                                     "--output_dir", f"{SCRATCH}/compare")),
                  tables.m3_quickstart, 14),
        Benchmark("m3-encode", ((*BENCH, "m3-memory"),), tables.m3_encode, 5),
        Benchmark("encode", ((*BENCH, "encode"),), tables.encode, 2),
        Benchmark("train", ((*BENCH, "train"),), tables.train, 12),
        Benchmark("sweep", (("python", "benchmarks/sweep.py", "--settings", "today", "+mined", "6 epochs", "batch 64"),),
                  tables.sweep, 100, needs_shared_data=True),
        Benchmark("cold-start", (("python", "benchmarks/cold_start.py", "--sets", "mbpp",
                                  "--settings", "real", "ict", "ict_unfiltered"),
                                 ("python", "benchmarks/cold_start.py", "--sets", "zh_medical",
                                  "--settings", "real", "ict")),
                  tables.cold_start, 60, needs_shared_data=True),
    )
}  # fmt: skip


def run_sets(
    sets: Sequence[str],
    settings: Sequence[str],
    run_set: Callable[[str, Sequence[str], Path], dict],
    writer: Callable[[list[dict]], str],
    output: Path | None,
) -> None:
    """A script that measures its settings on one set after another (sweep.py, cold_start.py): each set's record
    printed as a JSON line as soon as it is done, with `output` the tables so far written there (what finished
    survives a crash), and the tables at the end. `run_set(name, settings, scratch)` may write under `scratch`,
    which is removed afterwards."""
    records = []
    with tempfile.TemporaryDirectory() as scratch:
        for name in sets:
            records.append(run_set(name, settings, Path(scratch)))
            print(json.dumps(records[-1]), flush=True)
            if output:
                output.write_text(writer(records) + "\n", encoding="utf-8")
    print(f"\n{writer(records)}")


# ---------------------------------------------------------------------------------------------- provenance


def git(*args: str) -> str:
    return subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True, check=True).stdout.strip()


def uncommitted_changes(output: Path | None = None) -> list[str]:
    """Tracked files that differ from HEAD: a result measured on them would name a commit it did not run. What the
    suite itself writes (the results, the rendered `output`) is not what it measures, and does not count."""
    written = {str(output.resolve().relative_to(REPO))} if output and output.resolve().is_relative_to(REPO) else set()
    changed = git("diff", "--name-only", "HEAD").splitlines()
    return [path for path in changed if path not in written and not path.startswith("benchmarks/results/")]


def machine() -> dict:
    import torch

    cpu = platform.processor() or platform.machine()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        names = [line.split(":", 1)[1].strip() for line in cpuinfo.read_text().splitlines() if "model name" in line]
        cpu = names[0] if names else cpu
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") if hasattr(os, "sysconf") else None
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "memory_gib": round(memory / 2**30) if memory else None,
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "system": f"{platform.system()} {platform.machine()}",
    }


def provenance(benchmark: Benchmark, changed: Sequence[str] = ()) -> dict:
    versions = {}
    for library in LIBRARIES:
        try:
            versions[library] = importlib.metadata.version(library)
        except importlib.metadata.PackageNotFoundError:
            continue
    return {
        "date": time.strftime("%Y-%m-%d"),
        "commit": git("rev-parse", "--short", "HEAD"),
        "python": platform.python_version(),
        "versions": versions,
        "machine": machine(),
        "commands": [shlex.join(command) for command in benchmark.commands],
        **({"uncommitted_changes": list(changed)} if changed else {}),
    }


# ------------------------------------------------------------------------------------------------------ runs


def executable(command: Sequence[str], scratch: Path) -> list[str]:
    """The command as this interpreter runs it: `python` is this Python, `st-bge` the CLI beside it."""
    program, *args = command
    program = {"python": sys.executable, "st-bge": str(Path(sys.executable).with_name("st-bge"))}.get(program, program)
    return [program, *(arg.replace(SCRATCH, str(scratch)) for arg in args)]


def record_of(line: str) -> dict | None:
    """A benchmark's record: a JSON object with a "bench" field on a line of its own (the Trainer's log lines are
    Python dicts, not JSON, and are only echoed)."""
    if not line.startswith("{"):
        return None
    try:
        value = json.loads(line)
    except json.JSONDecodeError:
        return None
    return value if isinstance(value, dict) and "bench" in value else None


class CommandFailed(Exception):
    """A benchmark's command exited with an error: nothing of that benchmark is stored."""


def run_command(argv: list[str]) -> list[dict]:
    """Run one command from the repository root, echoing its output as it comes; the records it printed."""
    records = []
    process = subprocess.Popen(argv, cwd=REPO, stdout=subprocess.PIPE, text=True, bufsize=1)
    assert process.stdout is not None
    for line in process.stdout:
        print(line, end="", flush=True)
        if (record := record_of(line)) is not None:
            records.append(record)
    if process.wait() != 0:
        raise CommandFailed(f"`{shlex.join(argv)}` exited with status {process.returncode}")
    return records


def run(benchmark: Benchmark, results_dir: Path, changed: Sequence[str] = ()) -> Path:
    """Every command of `benchmark` in turn; its records and provenance stored under `results_dir`, written only
    once all of them succeeded, so that a failed run leaves the previous result in place."""
    record = provenance(benchmark, changed)
    start = time.perf_counter()
    records = []
    with tempfile.TemporaryDirectory(prefix=f"bench-{benchmark.name}-") as scratch:
        for command in benchmark.commands:
            print(f"\n# bench {benchmark.name}: {shlex.join(command)}", flush=True)
            began = time.perf_counter()
            records += run_command(executable(command, Path(scratch)))
            seconds = round(time.perf_counter() - began, 1)
            records.append({"bench": "command", "command": shlex.join(command), "seconds": seconds})
    record["seconds"] = round(time.perf_counter() - start)
    path = results_dir / f"{benchmark.name}.json"
    write_text_atomically(json.dumps({**record, "records": records}, indent=1) + "\n", path)
    return path


WRITERS = {name: benchmark.tables for name, benchmark in BENCHMARKS.items()}


def check_names(names: Sequence[str]) -> Sequence[str]:
    unknown = [name for name in names if name not in BENCHMARKS]
    if unknown:
        raise SystemExit(f"bench: unknown benchmark {', '.join(unknown)}; known: {', '.join(BENCHMARKS)}")
    return names


def check_selection(names: Sequence[str]) -> list[Benchmark]:
    return [BENCHMARKS[name] for name in check_names(names)]


def default_selection(skip: Sequence[str] = ()) -> list[str]:
    """Every benchmark but `skip`, less those whose data is not on this machine (said, not silently)."""
    names = [name for name in BENCHMARKS if name not in check_names(skip)]
    absent = [name for name in names if BENCHMARKS[name].needs_shared_data and not SHARED_DATA.is_dir()]
    if absent:
        print(f"# bench: leaving out {', '.join(absent)}: they read ../shared/data, which is not here", flush=True)
    return [name for name in names if name not in absent]


def print_plan(names: Sequence[str]) -> None:
    for benchmark in check_selection(names):
        needs = ", reads ../shared/data" if benchmark.needs_shared_data else ""
        print(f"{benchmark.name} (about {benchmark.minutes} min on 2 CPU cores{needs}):")
        for command in benchmark.commands:
            print(f"    {shlex.join(command)}")


def render(output: Path) -> None:
    try:
        tables.render_file(output, RESULTS_DIR, WRITERS)
    except tables.RenderError as error:
        raise SystemExit(f"bench: {error}") from error


def run_all(names: Sequence[str], output: Path, *, allow_uncommitted: bool = False) -> None:
    """Run the selected benchmarks in the order given, re-rendering `output` after each, so that what finished is
    written even if a later one fails; a result the tables cannot show yet is kept, and `render` shows it once
    the writer is fixed."""
    selected = check_selection(names)
    if not output.is_file():  # before hours of measuring, not after
        raise SystemExit(f"bench: {output} does not exist: --output names the RESULTS.md whose blocks to write")
    changed = uncommitted_changes(output)
    if changed and not allow_uncommitted:
        raise SystemExit(
            f"bench: uncommitted changes to {', '.join(changed)}: each result names the commit it ran, so commit "
            "first (or pass --allow_uncommitted; the header then says so)"
        )
    needing = [benchmark.name for benchmark in selected if benchmark.needs_shared_data]
    if needing and not SHARED_DATA.is_dir():
        raise SystemExit(f"bench: {', '.join(needing)} read ../shared/data, which is not here; leave them out")
    minutes = sum(benchmark.minutes for benchmark in selected)
    print(f"# bench: {', '.join(b.name for b in selected)} (about {minutes} min on 2 CPU cores)", flush=True)
    failed = []
    for benchmark in selected:
        try:
            path = run(benchmark, RESULTS_DIR, changed)
        except CommandFailed as error:
            failed.append(benchmark.name)
            print(f"# bench {benchmark.name}: {error}; its previous result stays, the next benchmark runs", flush=True)
            continue
        print(f"# bench {benchmark.name}: stored {path}", flush=True)
        try:
            tables.render_file(output, RESULTS_DIR, WRITERS)
        except tables.RenderError as error:
            print(f"# bench: {output} not rewritten: {error}", flush=True)
    if failed:
        raise SystemExit(f"bench: {', '.join(failed)} failed (their output above says why); the others are stored")
