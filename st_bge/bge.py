"""Facts about BGE models that several stages rely on: names, query instructions, BGE-M3's modes, head files and
weights.

A bottom-layer module (no other st-bge import, no model code), so that the recipe parser can name BGE-M3's
defaults without importing the modeling stack.
"""

from __future__ import annotations

import re
from pathlib import Path

BGE_QUERY_INSTRUCTIONS = {
    "en": "Represent this sentence for searching relevant passages: ",
    "zh": "为这个句子生成表示以用于检索相关文章：",
}
_BGE_NAME = re.compile(r"(^|[/_-])bge([_-]|$)", re.IGNORECASE)
_BGE_INSTRUCTED = re.compile(r"bge-(small|base|large)-(en|zh)(-v1\.5)?$", re.IGNORECASE)
_M3_NAME = re.compile(r"bge-m3", re.IGNORECASE)

# BGE-M3's heads, as BAAI ships them beside the weights (state dicts of one Linear each).
SPARSE_HEAD_FILE = "sparse_linear.pt"
COLBERT_HEAD_FILE = "colbert_linear.pt"
HEAD_FILES = {"sparse": SPARSE_HEAD_FILE, "colbert": COLBERT_HEAD_FILE}
MODES = ("dense", "sparse", "colbert")
# BGE-M3's ensemble score, dense + 0.3 x sparse + ColBERT: its training ensemble and its hybrid retrieval weights.
ENSEMBLE_WEIGHTS = (1.0, 0.3, 1.0)
# The weights of the dense, sparse and ColBERT terms in BGE-M3's unified loss (and in its self-distillation).
LOSS_WEIGHTS = (1.0, 0.1, 1.0)
# FlagEmbedding's `compute_score` weights for dense, sparse and ColBERT; its training ensemble uses 1 : 0.3 : 1.
DEFAULT_SCORE_WEIGHTS = (1.0, 1.0, 1.0)


def is_bge(name_or_path: str) -> bool:
    """Whether a model id or folder name belongs to the BGE family (bge-m3, bge-*-v1.5, bge-reranker excluded)."""
    name = Path(name_or_path).name if Path(name_or_path).is_dir() else name_or_path
    return bool(_BGE_NAME.search(name.split("/")[-1])) and "reranker" not in name.lower()


def default_query_prompt(name_or_path: str) -> str:
    """BGE's query instruction for bge-{small,base,large}-{en,zh}[-v1.5]; none for BGE-M3 and other models."""
    match = _BGE_INSTRUCTED.search(name_or_path.rstrip("/").split("/")[-1])
    return BGE_QUERY_INSTRUCTIONS[match.group(2).lower()] if match else ""


def is_m3_name(name_or_path: str) -> bool:
    """Whether a Hub id or folder name says BGE-M3 (so its heads are expected even where no file is found)."""
    return bool(_M3_NAME.search(str(name_or_path).rstrip("/").split("/")[-1]))
