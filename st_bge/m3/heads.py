"""BGE-M3's sparse and ColBERT heads: the modules, their files beside the weights (BAAI's layout, read by
FlagEmbedding and vLLM alike), and fresh ones for an encoder that has none. docs/bge-m3.md has the formulas."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from st_bge.bge import HEAD_FILES
from st_bge.errors import ConfigError


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
