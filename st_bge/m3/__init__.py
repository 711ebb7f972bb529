"""BGE-M3, one package: the model and its heads, its embeddings and their scores, the unified loss; the exact
search of its modes (`search`) and its card notes (`card`) are imported where they are used. docs/bge-m3.md."""

from st_bge.m3.embeddings import M3Embeddings, lexical_vectors, m3_scores, sparse_scores
from st_bge.m3.heads import M3Heads, find_head_files, load_head, new_heads
from st_bge.m3.loss import M3_CITATION, CachedM3UnifiedLoss, M3StepCallback, M3UnifiedLoss, colbert_scores
from st_bge.m3.model import BGEM3Model

__all__ = [
    "M3_CITATION",
    "BGEM3Model",
    "CachedM3UnifiedLoss",
    "M3Embeddings",
    "M3Heads",
    "M3StepCallback",
    "M3UnifiedLoss",
    "colbert_scores",
    "find_head_files",
    "lexical_vectors",
    "load_head",
    "m3_scores",
    "new_heads",
    "sparse_scores",
]
