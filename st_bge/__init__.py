"""st-bge: fine-tune BGE embedding models for a retrieval domain, the sentence-transformers way.

The stages, one module each: `config` (recipes) -> `data` -> `modeling` (+ LoRA, `m3` for BGE-M3's heads) ->
`losses` -> `training` (SentenceTransformerTrainer) -> `evaluation` (ranx) -> `model_card` -> `publish`.

`from st_bge import BGEM3Model` is imported on first use, so that `st-bge --help` stays fast.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0.dev0"

_PUBLIC = {"BGEM3Model": "st_bge.m3", "M3Embeddings": "st_bge.m3"}
__all__ = ["__version__", *_PUBLIC]


def __getattr__(name: str) -> Any:
    if name in _PUBLIC:
        return getattr(importlib.import_module(_PUBLIC[name]), name)
    raise AttributeError(f"module 'st_bge' has no attribute {name!r}")
