"""What several stages keep on disk or name: the names of an output folder's files, the shape of a Hub id, the
cache roots, the fingerprints that key cache entries, and atomic writes.

The bottom layer: it imports no other st-bge module, so that data, evaluation, training and publishing can all
share it without importing each other (tests/test_structure.py keeps every import pointing down the pipeline).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Callable, Sequence
from pathlib import Path

import torch
from torch import nn

from st_bge.errors import ConfigError

# The shape of a Hub repo id, `name` or `namespace/name`: what model and dataset loaders tell apart from a path.
HUB_ID = re.compile(r"^[\w.-]+(/[\w.-]+)?$")

# ---- an output folder's files --------------------------------------------------------------------------------

DATA_QUALITY_JSON = "data_quality.json"
DATA_QUALITY_MARKDOWN = "data_quality.md"
DATA_REPORTS_FOLDER = "data_reports"  # per source, in a mixture
MINING_REPORT = "mining_report.json"
MINING_DROPPED_SAMPLE = "mining_dropped_sample.jsonl"
SCORE_REPORT = "score_report.json"
TRAINING_LOG = "training_log.json"
EVAL_RESULTS = "eval_results"  # .json, .md, .tex
METRICS_PLOT = "metrics.png"
TRAINING_CURVES_PLOT = "training_curves.png"
# What the model card is rendered from, saved beside the model so that `st-bge push` can render it again.
CARD_INPUTS = "st_bge_card.json"
ADAPTER_CONFIG = "adapter_config.json"  # peft's: the folder holds a LoRA adapter
ONNX_CHECK = "onnx_check.json"

# The data reports written before the first training step: a run stopped by them (a 'fail' verdict) leaves only
# these, and running again after fixing the data rewrites them instead of asking for --overwrite_output_dir.
PRE_TRAINING_FILES = frozenset(
    {DATA_QUALITY_JSON, DATA_QUALITY_MARKDOWN, MINING_REPORT, MINING_DROPPED_SAMPLE, DATA_REPORTS_FOLDER}
)
# Results that describe a run with numbers and plots only: safe in a public repo (the dropped-candidates sample
# and the data reports quote training text, so they stay out).
PUBLIC_FILES = (
    *(f"{EVAL_RESULTS}.{suffix}" for suffix in ("json", "md", "tex")),
    TRAINING_LOG,
    METRICS_PLOT,
    TRAINING_CURVES_PLOT,
)


def point_adapter_at(model_dir: Path, base_id: str) -> None:
    """Make a LoRA adapter folder name its base model by Hub id in `adapter_config.json` (peft records the local
    path it was trained from, which breaks the folder anywhere else)."""
    path = Path(model_dir) / ADAPTER_CONFIG
    config = json.loads(path.read_text(encoding="utf-8"))
    config["base_model_name_or_path"] = base_id
    path.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n", encoding="utf-8")


# ---- caches --------------------------------------------------------------------------------------------------


def cache_dir(kind: str) -> Path:
    """`$ST_BGE_CACHE/<kind>`, else `$XDG_CACHE_HOME/st-bge/<kind>` (default `~/.cache`): one root for every cache
    (`embeddings`, `mined`, `scores`), so that one variable moves them all."""
    root = os.environ.get("ST_BGE_CACHE") or Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "st-bge"
    return Path(root) / kind


def model_fingerprint(model: nn.Module) -> str:
    """A digest of everything in a Sentence Transformer (or CrossEncoder) that decides its outputs: its modules,
    prompts, max length and weights."""
    digest = hashlib.blake2b(digest_size=16)
    digest.update(repr(model).encode())
    digest.update(repr(sorted(model.prompts.items())).encode())
    digest.update(str(model.max_seq_length).encode())
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def texts_fingerprint(*text_lists: Sequence[str]) -> str:
    """A digest of lists of texts, length-prefixed so that no two different lists give the same bytes."""
    digest = hashlib.blake2b(digest_size=16)
    for texts in text_lists:
        digest.update(len(texts).to_bytes(8, "little"))
        for text in texts:
            encoded = text.encode()
            digest.update(len(encoded).to_bytes(8, "little") + encoded)
    return digest.hexdigest()


def save_atomically(value: object, path: Path) -> None:
    """`torch.save` under a temporary name, then rename: a killed run never leaves a half-written cache file."""
    _replace_atomically(path, lambda partial: torch.save(value, partial))


def write_text_atomically(text: str, path: Path) -> None:
    """UTF-8 text under a temporary name, then rename: a killed run never leaves half a file for the next step."""
    _replace_atomically(path, lambda partial: partial.write_text(text, encoding="utf-8"))


def _replace_atomically(path: Path, write: Callable[[Path], object]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(".partial")
    write(partial)
    partial.replace(path)


def check_output_dir(output_dir: str | Path, *, overwrite: bool) -> None:
    """Refuse to write into a folder that already holds files unless `overwrite`: nothing the user had is lost.

    Raises:
        ConfigError: `output_dir` is a file, or a non-empty folder and `overwrite` is false.
    """
    output_dir = Path(output_dir)
    if output_dir.is_file():
        raise ConfigError(f"output_dir '{output_dir}' is a file")
    if output_dir.is_dir() and not overwrite and any(p.name not in PRE_TRAINING_FILES for p in output_dir.iterdir()):
        raise ConfigError(
            f"output_dir '{output_dir}' already has files; choose another output_dir or pass "
            "--overwrite_output_dir true to write over them"
        )
