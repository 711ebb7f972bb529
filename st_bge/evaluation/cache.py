"""Corpus embeddings cached on disk, keyed by the model's weights and settings and by the corpus itself.

Evaluating several models, or the same model again, on a large corpus is dominated by encoding the corpus; the
key changes whenever anything that changes an embedding changes (weights, modules, prompts, max length, texts),
so a hit is always safe to use.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import torch
from sentence_transformers import SentenceTransformer

from st_bge.m3 import BGEM3Model, M3Embeddings
from st_bge.storage import cache_dir, model_fingerprint, save_atomically, texts_fingerprint

logger = logging.getLogger(__name__)


class EmbeddingCache:
    """Document embeddings in `folder`, one file per (model, corpus) pair."""

    def __init__(self, folder: str | Path | None = None) -> None:
        self.folder = Path(folder) if folder is not None else cache_dir("embeddings")

    def path(self, model: SentenceTransformer, doc_ids: Sequence[str], texts: Sequence[str], kind: str = "") -> Path:
        suffix = f"-{kind}" if kind else ""
        return self.folder / f"{model_fingerprint(model)}-{texts_fingerprint(doc_ids, texts)}{suffix}.pt"

    def encode_documents(
        self, model: SentenceTransformer, doc_ids: Sequence[str], texts: Sequence[str], **encode_kwargs
    ) -> torch.Tensor:
        """`model.encode_document(texts)`, read from the cache when this model has encoded this corpus before."""
        path = self.path(model, doc_ids, texts)
        if path.is_file():
            logger.info("Corpus embeddings from cache: %s", path)
            return torch.load(path, weights_only=True)["embeddings"]
        embeddings = model.encode_document(list(texts), convert_to_tensor=True, **encode_kwargs).cpu()
        self._store({"embeddings": embeddings}, path)
        return embeddings

    def encode_m3_documents(
        self, model: BGEM3Model, doc_ids: Sequence[str], texts: Sequence[str], modes: Sequence[str], **encode_kwargs
    ) -> M3Embeddings:
        """`model.encode_m3(texts, prompt_name="document", modes=modes)`, read from the cache when it was done before."""
        path = self.path(model, doc_ids, texts, kind="m3-" + "-".join(modes))
        if path.is_file():
            logger.info("Corpus embeddings (%s) from cache: %s", ", ".join(modes), path)
            return M3Embeddings.from_state(torch.load(path, weights_only=True))
        embeddings = model.encode_m3(list(texts), prompt_name="document", modes=modes, **encode_kwargs)
        self._store(embeddings.to_state(), path)
        return embeddings

    def _store(self, state: dict, path: Path) -> None:
        save_atomically(state, path)
        logger.info("Corpus embeddings cached: %s", path)
