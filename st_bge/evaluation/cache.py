"""Corpus embeddings cached on disk, keyed by the model's weights and settings and by the corpus itself.

Evaluating several models, or the same model again, on a large corpus is dominated by encoding the corpus; the
key changes whenever anything that changes an embedding changes (weights, modules, prompts, max length, texts),
so a hit is always safe to use.
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Sequence
from pathlib import Path

import torch
from sentence_transformers import SentenceTransformer

from st_bge.m3 import BGEM3Model, M3Embeddings

logger = logging.getLogger(__name__)


def default_cache_dir() -> Path:
    """`$ST_BGE_CACHE/embeddings`, else `$XDG_CACHE_HOME/st-bge/embeddings` (default `~/.cache`)."""
    root = os.environ.get("ST_BGE_CACHE") or Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "st-bge"
    return Path(root) / "embeddings"


def model_fingerprint(model: SentenceTransformer) -> str:
    """A digest of everything in `model` that decides a document embedding."""
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


class EmbeddingCache:
    """Document embeddings in `folder`, one file per (model, corpus) pair."""

    def __init__(self, folder: str | Path | None = None) -> None:
        self.folder = Path(folder) if folder is not None else default_cache_dir()

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


def save_atomically(value: object, path: Path) -> None:
    """`torch.save` under a temporary name, then rename: a killed run never leaves a half-written cache file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(".partial")
    torch.save(value, partial)
    partial.replace(path)
