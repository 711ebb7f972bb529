"""BGE-M3 in sentence-transformers terms: one model, one forward pass, three retrieval modes (dense, sparse,
ColBERT), saved in BAAI's folder layout so that FlagEmbedding, vLLM and `SentenceTransformer` all load it; why it is
built this way: docs/bge-m3.md."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from sentence_transformers import MultiVectorEncoder, SentenceTransformer
from sentence_transformers.base.modules.dense import Dense
from sentence_transformers.multi_vector_encoder.modules import MultiVectorMask
from sentence_transformers.sentence_transformer.modules import Normalize
from sentence_transformers.util import batch_to_device
from torch import Tensor, nn
from tqdm.auto import trange

from st_bge.bge import DEFAULT_SCORE_WEIGHTS, HEAD_FILES, MODES, is_m3_name
from st_bge.m3.embeddings import M3Embeddings, lexical_vectors, m3_scores, reorder_sparse
from st_bge.m3.heads import M3Heads, find_head_files, load_head, new_heads, unused_token_ids

logger = logging.getLogger(__name__)


class BGEM3Model(SentenceTransformer):
    """A BGE-M3: the dense Sentence Transformer with its sparse and ColBERT heads, in BAAI's folder layout.

    Loads like `SentenceTransformer` (same arguments) and then attaches the heads found beside the weights; saves
    like it and then writes the heads. Everything that uses `sentence_embedding` is unchanged.

    Args:
        model_name_or_path: Folder or Hub id, as for `SentenceTransformer`.
        m3_heads: Heads to use instead of those found at `model_name_or_path`.
        **kwargs: Passed to `SentenceTransformer`.

    Example:
        ::

            from st_bge.m3 import BGEM3Model

            model = BGEM3Model("BAAI/bge-m3")
            queries = model.encode_m3(["What is BGE M3?"], prompt_name="query")
            documents = model.encode_m3(["BGE M3 is an embedding model with dense, sparse and ColBERT modes."])
            scores = model.m3_similarity(queries, documents)  # {"dense": ..., "sparse": ..., "colbert": ...}
    """

    def __init__(self, model_name_or_path: str | None = None, *, m3_heads: M3Heads | None = None, **kwargs) -> None:
        super().__init__(model_name_or_path, **kwargs)
        self.missing_head_files: list[str] = []  # head files a BGE-M3 should have and this one lacks
        if m3_heads is None and model_name_or_path is not None:
            hub_kwargs = {key: kwargs[key] for key in ("revision", "token", "local_files_only") if key in kwargs}
            if kwargs.get("cache_folder"):
                hub_kwargs["cache_dir"] = kwargs["cache_folder"]
            m3_heads = self._load_heads(str(model_name_or_path), hub_kwargs)
        self.set_m3_heads(m3_heads)

    def _load_heads(self, name_or_path: str, hub_kwargs: dict[str, Any]) -> M3Heads | None:
        files = find_head_files(name_or_path, **hub_kwargs)
        hidden = self.get_hidden_size()
        heads = {mode: load_head(path, hidden, mode) if path else None for mode, path in files.items()}
        missing = [HEAD_FILES[mode] for mode, head in heads.items() if head is None]
        if missing and (len(missing) < len(HEAD_FILES) or is_m3_name(name_or_path)):
            self.missing_head_files = missing
            modes = " and ".join(mode for mode, head in heads.items() if head is None)
            logger.warning(
                "%s has no %s: its %s mode is untrained and left out (it gets no random head)",
                name_or_path,
                " or ".join(missing),
                modes,
            )
        if all(head is None for head in heads.values()):
            return None
        return M3Heads(heads["sparse"], heads["colbert"], unused_token_ids(self.tokenizer))

    @property
    def m3_heads(self) -> M3Heads | None:
        """The sparse and ColBERT heads (None if the model has neither)."""
        return getattr(self[0], "m3_heads", None)

    def set_m3_heads(self, heads: M3Heads | None) -> None:
        """Attach (or, with None, remove) the heads. A method, not a property setter: `nn.Module.__setattr__`
        would register a module assigned to an attribute of this model itself, bypassing any setter."""
        if heads is None:
            if hasattr(self[0], "m3_heads"):
                del self[0].m3_heads
            return
        self[0].m3_heads = heads.to(self.device)

    @property
    def modes(self) -> list[str]:
        """The retrieval modes this model has: dense, then those of its heads."""
        return ["dense", *(self.m3_heads.modes if self.m3_heads is not None else [])]

    @property
    def colbert_dim(self) -> int | None:
        """Width of the ColBERT vectors (None without a ColBERT head)."""
        head = self.m3_heads.colbert_linear if self.m3_heads is not None else None
        return head.out_features if head is not None else None

    def get_hidden_size(self) -> int:
        """Width of the encoder's token embeddings (what the heads read)."""
        return self[0].auto_model.config.hidden_size

    def add_missing_heads(self, colbert_dim: int | None = None) -> list[str]:
        """Give the model new (randomly initialised) heads for the modes it lacks; returns those modes."""
        heads = {**new_heads(self.get_hidden_size(), self.tokenizer, colbert_dim).by_mode()}
        present = self.m3_heads.by_mode() if self.m3_heads is not None else {}
        added = [mode for mode in heads if mode not in present]
        heads.update(present)
        self.set_m3_heads(M3Heads(heads["sparse"], heads["colbert"], unused_token_ids(self.tokenizer)))
        self.missing_head_files = []
        return added

    @property
    def vocab_size(self) -> int:
        """Size of the sparse vectors: the encoder's vocabulary."""
        return self[0].auto_model.config.vocab_size

    def get_model_kwargs(self) -> list[str]:
        return [*super().get_model_kwargs(), "m3_outputs"]

    def forward(self, input: dict[str, Tensor], m3_outputs: bool = False, **kwargs) -> dict[str, Tensor]:
        """The Sentence Transformer's forward; with `m3_outputs`, the heads' outputs from the same pass too."""
        features = super().forward(input, **kwargs)
        if m3_outputs and self.m3_heads is not None:
            if "cu_seq_lens_q" in features:  # flash-attention unpadding: the heads work on padded batches
                from sentence_transformers.util.tensor import repad_flattened_features

                features = repad_flattened_features(features)
            features.update(self.m3_heads(features))
        return features

    def save(self, path: str, *args, **kwargs) -> None:
        """Save as `SentenceTransformer` does, plus the heads as `sparse_linear.pt` / `colbert_linear.pt`."""
        super().save(path, *args, **kwargs)
        if self.m3_heads is not None:
            self.m3_heads.save(path)

    def sparse_vectors(self, token_weights: Tensor, input_ids: Tensor) -> Tensor:
        """(batch, vocabulary) lexical vectors of this model's vocabulary (`lexical_vectors`)."""
        return lexical_vectors(token_weights, input_ids, self.vocab_size)

    def encode_m3(
        self,
        inputs: Sequence[str],
        *,
        prompt_name: str | None = None,
        prompt: str | None = None,
        batch_size: int = 32,
        show_progress_bar: bool | None = None,
        modes: Sequence[str] | None = None,
        device: str | torch.device | None = None,
    ) -> M3Embeddings:
        """The dense, sparse and ColBERT representations of `inputs`, from one forward pass per batch.

        Args:
            inputs: Texts.
            prompt_name: Key of `self.prompts` to prepend (e.g. "query"); BGE-M3 has none, fine-tunes may.
            prompt: A prompt to prepend, instead of `prompt_name`'s.
            batch_size: Texts per forward pass (sorted by length, as `encode` does).
            show_progress_bar: Show a progress bar (default: when logging is at INFO).
            modes: Which representations to return (default: every mode the model has).
            device: Where to compute (default: the model's device); results are on the CPU.
        """
        modes = list(modes or self.modes)
        unknown = sorted(set(modes) - set(self.modes))
        if unknown:
            raise ValueError(f"this model has no {' or '.join(unknown)} mode (it has {self.modes})")
        if prompt is None and prompt_name is not None:
            prompt = self.prompts.get(prompt_name) or None
        if show_progress_bar is None:
            show_progress_bar = logger.getEffectiveLevel() <= logging.INFO
        inputs = list(inputs)
        order = np.argsort([-len(text) for text in inputs], kind="stable")
        dense, sparse_rows, colbert = [], [], []
        was_training = self.training
        self.eval()
        if device is not None:
            self.to(device)
        try:
            with torch.inference_mode():
                for start in trange(0, len(inputs), batch_size, desc="Batches", disable=not show_progress_bar):
                    batch = [inputs[i] for i in order[start : start + batch_size]]
                    features = batch_to_device(self.preprocess(batch, prompt=prompt), self.device)
                    out = self(features, m3_outputs=modes != ["dense"])
                    if "dense" in modes:
                        dense.append(out["sentence_embedding"].float().cpu())
                    if "sparse" in modes:
                        vectors = self.sparse_vectors(out["token_weights"].float(), out["input_ids"])
                        sparse_rows.append(vectors.to_sparse().cpu())
                    if "colbert" in modes:
                        vectors, mask = out["colbert_vectors"].float().cpu(), out["colbert_mask"].bool().cpu()
                        colbert += [row[row_mask] for row, row_mask in zip(vectors, mask, strict=True)]
        finally:
            self.train(was_training)
        restore = torch.from_numpy(np.argsort(order))
        return M3Embeddings(
            dense=torch.cat(dense)[restore] if dense else None,
            sparse=reorder_sparse(torch.cat(sparse_rows), restore) if sparse_rows else None,
            colbert=[colbert[i] for i in restore.tolist()] if colbert else None,
        )

    def m3_similarity(self, queries: M3Embeddings, documents: M3Embeddings) -> dict[str, Tensor]:
        """(queries, documents) score matrices of every mode both sides have."""
        return m3_scores(queries, documents)

    def compute_score(
        self,
        sentence_pairs: Sequence[tuple[str, str]],
        *,
        batch_size: int = 32,
        weights_for_different_modes: Sequence[float] = DEFAULT_SCORE_WEIGHTS,
    ) -> dict[str, list[float]]:
        """FlagEmbedding's `BGEM3FlagModel.compute_score`: each pair's dense, sparse and ColBERT score, and the
        weighted means `sparse+dense` and `colbert+sparse+dense` (weights for dense, sparse, ColBERT)."""
        if self.modes != list(MODES):
            raise ValueError(f"compute_score needs all three modes; this model has {self.modes}")
        queries = self.encode_m3([q for q, _ in sentence_pairs], prompt_name="query", batch_size=batch_size)
        documents = self.encode_m3([d for _, d in sentence_pairs], prompt_name="document", batch_size=batch_size)
        scores = m3_scores(queries, documents, pairwise=True)
        w_dense, w_sparse, w_colbert = weights_for_different_modes
        return {
            "colbert": scores["colbert"].tolist(),
            "sparse": scores["sparse"].tolist(),
            "dense": scores["dense"].tolist(),
            "sparse+dense": (
                (w_sparse * scores["sparse"] + w_dense * scores["dense"]) / (w_sparse + w_dense)
            ).tolist(),
            "colbert+sparse+dense": (
                (w_colbert * scores["colbert"] + w_sparse * scores["sparse"] + w_dense * scores["dense"])
                / (w_dense + w_sparse + w_colbert)
            ).tolist(),
        }

    def to_multi_vector_encoder(self) -> MultiVectorEncoder:
        """The ColBERT mode as a sentence-transformers `MultiVectorEncoder` built from its own modules only.

        Transformer (shared with this model, not copied) -> token-level Dense (the ColBERT head, no activation) ->
        token-level Normalize -> MultiVectorMask that drops the CLS token on both sides; MeanMaxSim scoring. Its
        vectors and scores equal `encode_m3`'s ColBERT ones, and it saves as a standard MultiVectorEncoder.
        """
        head = self.m3_heads.colbert_linear if self.m3_heads is not None else None
        if head is None:
            raise ValueError("this model has no ColBERT head")
        dense = Dense(
            head.in_features,
            head.out_features,
            bias=head.bias is not None,
            activation_function=nn.Identity(),
            module_input_name="token_embeddings",
        )
        dense.linear.load_state_dict(head.state_dict())
        mask = MultiVectorMask(skiplist_words=[self.tokenizer.cls_token], skiplist_tasks=["query", "document"])
        modules = [self[0], dense.to(self.device), Normalize(module_input_name="token_embeddings"), mask]
        return MultiVectorEncoder(modules=modules, similarity_fn_name="meanmaxsim", prompts=dict(self.prompts))
