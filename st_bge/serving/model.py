"""The model behind `st-bge serve`: what a request's texts become, on the torch or the ONNX backend.

Every text is embedded as `SentenceTransformer.encode_query` / `encode_document` embed it (the side's prompt, the
model's own pooling and normalisation), so a served vector equals the one `SentenceTransformer("user/repo")` gives
(tests/test_serve.py, 1e-5). A BGE-M3 (`BGEM3Model`) can add its lexical weights and ColBERT vectors, under
FlagEmbedding's names (`lexical_weights`: `{token id: weight}`, `colbert_vecs`), from the same forward pass.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from sentence_transformers import SentenceTransformer
from sentence_transformers.sentence_transformer.modules import Normalize

from st_bge.config import ServeArguments
from st_bge.errors import ConfigError
from st_bge.m3 import BGEM3Model
from st_bge.modeling import load_full_model, load_saved_model, require_model_dir, resolve_model_path

logger = logging.getLogger(__name__)

SIDES = ("query", "document")
# Request extras -> the BGE-M3 mode that gives them (FlagEmbedding's output names).
EXTRAS = {"lexical_weights": "sparse", "colbert_vecs": "colbert"}
ONNX_FILE = Path("onnx") / "model_qint8.onnx"


@dataclass(frozen=True)
class Embedding:
    """One text's outputs: the dense vector (full dimension, as the model gives it) and the extras asked for."""

    dense: np.ndarray
    lexical_weights: dict[str, float] | None = None
    colbert_vecs: np.ndarray | None = None


class ServedModel:
    """A loaded model with what the server needs to know about it: its name, dimension, prompts and extras.

    Args:
        model: The Sentence Transformer (a `BGEM3Model` for the extras).
        name: The name requests give as `model`.
        onnx_file: Encode with onnxruntime and this file in place of the PyTorch encoder (dense only).
    """

    def __init__(self, model: SentenceTransformer, name: str, *, onnx_file: str | Path | None = None) -> None:
        self.model = model.eval()
        self.name = name
        self.dimension = model.get_embedding_dimension()
        self.normalized = any(isinstance(module, Normalize) for module in model)
        self.prompts = {side: model.prompts.get(side) or "" for side in SIDES}
        # Requests are tokenized on the event loop while a forward pass tokenizes in the worker thread. A fast
        # tokenizer keeps its padding and truncation settings in the one Rust object it wraps, so sharing it let
        # an unpadded count land in the middle of a padded batch (500s under load): counting gets its own copy.
        self._counting_tokenizer = copy.deepcopy(model.tokenizer)
        self.onnx = None
        if onnx_file is not None:
            from st_bge.onnx_export import OnnxEncoder

            self.onnx = OnnxEncoder(model, onnx_file)
        m3_modes = model.modes if isinstance(model, BGEM3Model) and self.onnx is None else []
        self.extras = [extra for extra, mode in EXTRAS.items() if mode in m3_modes]

    @property
    def max_seq_length(self) -> int:
        return self.model.max_seq_length

    @property
    def backend(self) -> str:
        return "onnx" if self.onnx is not None else "torch"

    def token_counts(self, texts: Sequence[str], side: str) -> list[int]:
        """Tokens of each text as the model reads it: the side's prompt and the special tokens included, before
        truncation."""
        prompt = self.prompts[side]
        encoded = self._counting_tokenizer([prompt + text for text in texts], add_special_tokens=True)["input_ids"]
        return [len(ids) for ids in encoded]

    def embed(self, texts: Sequence[str], side: str, extras: Sequence[str] = ()) -> list[Embedding]:
        """The embeddings of `texts` on `side` ("query" or "document"), in one forward pass."""
        texts = list(texts)
        if extras:
            return self._embed_m3(texts, side, extras)
        if self.onnx is not None:
            # What `encode` does with a prompt: prepend it (the pooling then counts its tokens, as CLS and a
            # Pooling with include_prompt=True do).
            vectors = self.onnx.encode([self.prompts[side] + text for text in texts], batch_size=len(texts))
        else:
            encode = self.model.encode_query if side == "query" else self.model.encode_document
            vectors = encode(texts, batch_size=len(texts), convert_to_numpy=True, show_progress_bar=False)
        return [Embedding(dense=np.asarray(vector, dtype=np.float32)) for vector in vectors]

    def _embed_m3(self, texts: list[str], side: str, extras: Sequence[str]) -> list[Embedding]:
        modes = ["dense", *(EXTRAS[extra] for extra in extras)]
        outputs = self.model.encode_m3(
            texts, prompt_name=side, batch_size=len(texts), show_progress_bar=False, modes=modes
        )
        weights = outputs.lexical_weights() if outputs.sparse is not None else [None] * len(texts)
        colbert = outputs.colbert if outputs.colbert is not None else [None] * len(texts)
        return [
            Embedding(
                dense=dense.numpy().astype(np.float32),
                lexical_weights=lexical,
                colbert_vecs=None if vectors is None else vectors.numpy().astype(np.float32),
            )
            for dense, lexical, vectors in zip(outputs.dense, weights, colbert, strict=True)
        ]


def load_served_model(args: ServeArguments) -> ServedModel:
    """The model of `st-bge serve`: an output folder as a full model (an adapter merged into its base, BGE-M3 heads
    kept), or a Hub id as sentence-transformers loads it.

    Raises:
        ConfigError: a folder that is not a Sentence Transformers folder, or a missing ONNX file.
    """
    folder = Path(args.model)
    local = folder.is_dir()
    source = resolve_model_path(args.model, field="model")
    if local:
        model = load_full_model(require_model_dir(folder), device=args.device)
    else:
        model = load_saved_model(source, device=args.device)
    onnx_file = None
    if args.backend == "onnx":
        onnx_file = Path(args.onnx_file) if args.onnx_file else folder / ONNX_FILE
        if not onnx_file.is_file():
            raise ConfigError(
                f"--backend onnx: {onnx_file} not found; write it with `st-bge export {args.model} --output_dir "
                f"{folder / ONNX_FILE.parent}` or give its path as --onnx_file"
            )
    name = args.served_model_name or (folder.resolve().name if local else args.model)
    served = ServedModel(model, name, onnx_file=onnx_file)
    logger.info(
        "Serving %s as %r: %d dimensions, %s backend, prompts %s, extras %s",
        args.model,
        name,
        served.dimension,
        served.backend,
        served.prompts,
        served.extras or "none",
    )
    return served
