"""BGE-M3 in sentence-transformers terms: one model, one forward pass, three retrieval modes.

BGE-M3 is a Sentence Transformer (XLM-R, CLS pooling, Normalize: the dense mode) plus two heads that BAAI ships as
state dicts beside the weights, and that every M3 consumer (FlagEmbedding, vLLM's `BgeM3EmbeddingModel`, SGLang)
reads from there:

- `sparse_linear.pt`, Linear(hidden, 1): a token's lexical weight is `relu(sparse_linear(hidden state))`; a text's
  sparse vector keeps, per token id, the largest weight of its occurrences, without CLS, EOS, SEP, PAD and UNK
  (FlagEmbedding's `lexical_weights`; SEP is EOS for XLM-R and ends a BERT input). Lexical score = the dot product
  of two sparse vectors (the sum over shared token ids of w_q * w_d).
- `colbert_linear.pt`, Linear(hidden, colbert_dim): the ColBERT vectors are the head applied to every token but the
  first (CLS), padding masked, L2-normalised. ColBERT score = the mean over query tokens of the best similarity to
  any document token (sentence-transformers' MeanMaxSim).

`BGEM3Model` keeps that layout in both directions. Its `modules.json` is BAAI's own (Transformer, Pooling,
Normalize: no custom class), so `SentenceTransformer(folder)` still loads the dense model with no
`trust_remote_code`; st-bge's loader attaches the heads from their files, and `save` writes them back (every save:
the final folder, Trainer checkpoints, the merged push). The heads live on the Transformer module
(`model[0].m3_heads`): that keeps them out of the module sequence (which `SentenceTransformer` runs, saves and
lists) while making them part of the model's parameters, state dict, device moves and DDP wrapping. A missing head
is never replaced by a random one behind the user's back: it is absent, and loading warns that its mode is
untrained.

sentence-transformers can express the ColBERT head with its own modules (`to_multi_vector_encoder`), but not the
sparse one: `SparseEncoder`'s pooling (`SpladePooling`) reads vocabulary-sized MLM logits and applies log1p, and no
built-in module maps one weight per token onto its token id.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from sentence_transformers import MultiVectorEncoder, SentenceTransformer
from sentence_transformers.base.modules.dense import Dense
from sentence_transformers.multi_vector_encoder import maxsim, maxsim_pairwise
from sentence_transformers.multi_vector_encoder.modules import MultiVectorMask
from sentence_transformers.sentence_transformer.modules import Normalize
from sentence_transformers.util import batch_to_device
from torch import Tensor, nn
from tqdm.auto import trange

from st_bge.bge import DEFAULT_SCORE_WEIGHTS, HEAD_FILES, MODES, is_m3_name
from st_bge.errors import ConfigError

logger = logging.getLogger(__name__)


class M3Heads(nn.Module):
    """BGE-M3's sparse and ColBERT heads over the encoder's token embeddings; either may be absent.

    Args:
        sparse_linear: Linear(hidden, 1), or None.
        colbert_linear: Linear(hidden, colbert_dim), or None.
        unused_token_ids: Token ids that get no lexical weight (the tokenizer's CLS, EOS, SEP, PAD, UNK).
    """

    def __init__(
        self, sparse_linear: nn.Linear | None, colbert_linear: nn.Linear | None, unused_token_ids: Sequence[int]
    ) -> None:
        super().__init__()
        self.sparse_linear = sparse_linear
        self.colbert_linear = colbert_linear
        self.register_buffer("unused_token_ids", torch.tensor(sorted(set(unused_token_ids))), persistent=False)

    def by_mode(self) -> dict[str, nn.Linear]:
        """The heads present, by the mode they give: {"sparse": ..., "colbert": ...}."""
        heads = {"sparse": self.sparse_linear, "colbert": self.colbert_linear}
        return {mode: head for mode, head in heads.items() if head is not None}

    @property
    def modes(self) -> list[str]:
        """The retrieval modes these heads give, besides dense."""
        return list(self.by_mode())

    def forward(self, features: dict[str, Tensor]) -> dict[str, Tensor]:
        """`token_weights` (batch, tokens) and `colbert_vectors` (batch, tokens - 1, dim) + `colbert_mask`."""
        tokens, mask, ids = features["token_embeddings"], features["attention_mask"], features["input_ids"]
        outputs = {}
        if self.sparse_linear is not None:
            weights = torch.relu(self.sparse_linear(tokens)).squeeze(-1)
            keep = mask.bool() & ~torch.isin(ids, self.unused_token_ids)
            outputs["token_weights"] = weights * keep
        if self.colbert_linear is not None:
            vectors = self.colbert_linear(tokens[:, 1:]) * mask[:, 1:, None]
            outputs["colbert_vectors"] = F.normalize(vectors, dim=-1)
            outputs["colbert_mask"] = mask[:, 1:]
        return outputs

    def save(self, folder: str | Path) -> list[Path]:
        """Write each head as FlagEmbedding does: a `{weight, bias}` state dict in `<folder>/<head>_linear.pt`."""
        paths = []
        for mode, head in self.by_mode().items():
            path = Path(folder) / HEAD_FILES[mode]
            torch.save({name: tensor.detach().cpu().clone() for name, tensor in head.state_dict().items()}, path)
            paths.append(path)
        return paths


def lexical_vectors(token_weights: Tensor, input_ids: Tensor, vocab_size: int) -> Tensor:
    """(batch, vocabulary) lexical vectors from (batch, tokens) weights: per token id, the largest weight among its
    occurrences (the special tokens' weights are already 0).

    Out of place, so it can be trained through; at most (batch, vocabulary), never FlagEmbedding's training-time
    (batch, tokens, vocabulary) (8 x 512 x 250k floats = 4 GB).
    """
    empty = token_weights.new_zeros(token_weights.size(0), vocab_size)
    return empty.scatter_reduce(1, input_ids, token_weights, reduce="amax", include_self=True)


def unused_token_ids(tokenizer) -> list[int]:
    """The ids FlagEmbedding drops from lexical weights (CLS, EOS, PAD, UNK), and SEP (= EOS for XLM-R)."""
    tokens = [getattr(tokenizer, f"{name}_token", None) for name in ("cls", "eos", "sep", "pad", "unk")]
    return [tokenizer.convert_tokens_to_ids(token) for token in tokens if token is not None]


def new_heads(hidden_size: int, tokenizer, colbert_dim: int | None = None) -> M3Heads:
    """Freshly initialised heads (for a model that has none), as FlagEmbedding initialises them: nn.Linear's
    default; ColBERT's width defaults to the hidden size, which vLLM's `BgeM3EmbeddingModel` requires."""
    return M3Heads(
        nn.Linear(hidden_size, 1), nn.Linear(hidden_size, colbert_dim or hidden_size), unused_token_ids(tokenizer)
    )


def find_head_files(name_or_path: str, **hub_kwargs: Any) -> dict[str, Path | None]:
    """`{"sparse": path or None, "colbert": path or None}` for a local folder or a Hub id (through the Hub cache).

    Args:
        name_or_path: Local folder or Hub model id.
        **hub_kwargs: `revision`, `token`, `cache_dir`, `local_files_only`, as `hf_hub_download` takes them.
    """
    folder = Path(name_or_path)
    if folder.is_dir():
        return {mode: folder / name if (folder / name).is_file() else None for mode, name in HEAD_FILES.items()}
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import EntryNotFoundError, RepositoryNotFoundError, RevisionNotFoundError

    found = {}
    for mode, name in HEAD_FILES.items():
        try:
            found[mode] = Path(hf_hub_download(name_or_path, name, **hub_kwargs))
        # Not in the repository, not in the cache while offline, no such repository, or not a repository id.
        except (EntryNotFoundError, RepositoryNotFoundError, RevisionNotFoundError, ValueError):
            found[mode] = None
    return found


def load_head(path: Path, hidden_size: int, mode: str) -> nn.Linear:
    """One head from its state dict file, checked against the encoder's hidden size.

    Raises:
        ConfigError: the file is not a Linear state dict over `hidden_size` (sparse: with one output).
    """
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises several unrelated types for a file that is not a state dict
        raise ConfigError(f"{path}: not a PyTorch state dict ({error})") from None
    weight = state.get("weight") if isinstance(state, dict) else None
    if (
        weight is None
        or weight.dim() != 2
        or weight.shape[1] != hidden_size
        or (mode == "sparse" and weight.shape[0] != 1)
    ):
        shape = tuple(weight.shape) if isinstance(weight, Tensor) else None
        expected = f"(1, {hidden_size})" if mode == "sparse" else f"(colbert_dim, {hidden_size})"
        raise ConfigError(f"{path}: expected a Linear state dict with weight {expected}, got weight {shape}")
    linear = nn.Linear(hidden_size, weight.shape[0], bias="bias" in state)
    linear.load_state_dict(state)
    return linear


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

            from st_bge import BGEM3Model

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

    def heads_notes(self, *, trained: Sequence[str] = (), added: Sequence[str] = ()) -> list[str]:
        """What a model card should say about the heads: missing ones, new ones, and which this run trained."""
        notes = [
            f"The base model has no `{name}`: this model has no {mode} mode (it was not given a random, untrained "
            "head)."
            for mode, name in HEAD_FILES.items()
            if name in self.missing_head_files
        ]
        if added:
            notes.append(
                f"The base model had no {' or '.join(added)} head: st-bge added new ones (randomly initialised, "
                f"`{'`, `'.join(HEAD_FILES[mode] for mode in added)}`) and trained them in this run."
            )
        untrained = [
            mode for mode in (self.m3_heads.modes if self.m3_heads is not None else []) if mode not in trained
        ]
        if untrained:
            heads = " and ".join(f"{mode} (`{HEAD_FILES[mode]}`)" for mode in untrained)
            notes.append(
                f"BGE-M3's {heads} head{'s were' if len(untrained) > 1 else ' was'} not trained by this "
                "run's loss: saved unchanged from the base model. The encoder they read was fine-tuned, so the "
                "per-mode results show what this fine-tune did to those modes."
            )
        return notes

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
            sparse=_reorder_sparse(torch.cat(sparse_rows), restore) if sparse_rows else None,
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


@dataclass
class M3Embeddings:
    """The representations `BGEM3Model.encode_m3` gives a list of texts (on the CPU; a mode not asked is None).

    Attributes:
        dense: (texts, hidden) L2-normalised CLS embeddings.
        sparse: (texts, vocabulary) sparse COO tensor of lexical weights.
        colbert: One (tokens, colbert_dim) tensor of L2-normalised vectors per text (CLS excluded).
    """

    dense: Tensor | None = None
    sparse: Tensor | None = None
    colbert: list[Tensor] | None = None

    def __len__(self) -> int:
        for value in (self.dense, self.sparse, self.colbert):
            if value is not None:
                return len(value)
        return 0

    @property
    def modes(self) -> list[str]:
        return [mode for mode in MODES if getattr(self, mode) is not None]

    def lexical_weights(self) -> list[dict[str, float]]:
        """The sparse vectors as FlagEmbedding's `lexical_weights`: `{str(token id): weight}` per text."""
        sparse = self.sparse.coalesce()
        rows, ids = sparse.indices()
        values = sparse.values()
        weights: list[dict[str, float]] = [{} for _ in range(sparse.size(0))]
        for row, token_id, value in zip(rows.tolist(), ids.tolist(), values.tolist(), strict=True):
            weights[row][str(token_id)] = value
        return weights

    def to_state(self) -> dict[str, Any]:
        """Plain tensors for `torch.save` (`weights_only` loading): sparse as indices + values, ColBERT concatenated."""
        state: dict[str, Any] = {"dense": self.dense}
        if self.sparse is not None:
            sparse = self.sparse.coalesce()
            state["sparse"] = {"indices": sparse.indices(), "values": sparse.values(), "size": list(sparse.size())}
        if self.colbert is not None:
            state["colbert"] = {
                "vectors": torch.cat(self.colbert) if self.colbert else torch.empty(0),
                "lengths": torch.tensor([len(vectors) for vectors in self.colbert]),
            }
        return state

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> M3Embeddings:
        """The inverse of `to_state`."""
        sparse = state.get("sparse")
        colbert = state.get("colbert")
        return cls(
            dense=state.get("dense"),
            sparse=torch.sparse_coo_tensor(sparse["indices"], sparse["values"], sparse["size"]).coalesce()
            if sparse
            else None,
            colbert=list(torch.split(colbert["vectors"], colbert["lengths"].tolist())) if colbert else None,
        )

    def select(self, indices: Sequence[int]) -> M3Embeddings:
        """The representations of the texts at `indices`, in that order."""
        index = torch.as_tensor(list(indices), dtype=torch.long)
        return M3Embeddings(
            dense=self.dense[index] if self.dense is not None else None,
            sparse=_reorder_sparse(self.sparse, index) if self.sparse is not None else None,
            colbert=[self.colbert[i] for i in index.tolist()] if self.colbert is not None else None,
        )


def m3_scores(queries: M3Embeddings, documents: M3Embeddings, *, pairwise: bool = False) -> dict[str, Tensor]:
    """Score matrices (queries x documents), or one score per aligned pair with `pairwise`, of every mode both sides
    have: dense dot product, lexical matching (sparse dot product), ColBERT MeanMaxSim."""
    scores = {}
    if queries.dense is not None and documents.dense is not None:
        q, d = queries.dense, documents.dense
        scores["dense"] = (q * d).sum(-1) if pairwise else q @ d.T
    if queries.sparse is not None and documents.sparse is not None:
        scores["sparse"] = lexical_scores(queries.sparse, documents.sparse, pairwise=pairwise)
    if queries.colbert is not None and documents.colbert is not None:
        score = maxsim_pairwise if pairwise else maxsim
        scores["colbert"] = score(queries.colbert, documents.colbert, length_normalize=True)
    return scores


def lexical_scores(queries: Tensor, documents: Tensor, *, pairwise: bool = False) -> Tensor:
    """Lexical matching scores of sparse (texts, vocabulary) tensors: a sparse matrix product, never dense rows."""
    if pairwise:
        return torch.sparse.sum(queries.coalesce() * documents.coalesce(), dim=1).to_dense()
    return torch.sparse.mm(queries.coalesce(), documents.coalesce().t()).to_dense()


def _reorder_sparse(matrix: Tensor, index: Tensor) -> Tensor:
    """Rows `index` of a sparse COO matrix, in that order."""
    return torch.index_select(matrix.coalesce(), 0, index).coalesce()
