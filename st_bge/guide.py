"""The GIST guide's embeddings, computed once per distinct training text instead of at every step.

The guide is frozen, so its embedding of a given input never changes during training; sentence-transformers' GIST
losses still run it on every anchor, positive and negative of every step of every epoch (a third of cached GIST's
forward passes). `precompute_guide` runs it once per distinct input before training (inference mode, length-sorted
batches, cached on disk like the corpus embeddings) and returns a `PrecomputedGuide`, which the loss calls in place
of the guide and which answers from that table.

The table is keyed by what the guide is called with, not by the text: the tokens of one row (prompt included,
truncated as training truncates) plus the batch's non-tensor features (prompt length, modality). The keys are made
from the Trainer's own data collator over the training rows, so every prompt, truncation and dataset-name rule of
sentence-transformers applies as it does in training, and a step can only ever look up what the guide would have
been given. An input not in the table (a data collator or retokenization that changed upstream) is not guessed:
the guide itself embeds that batch, and `misses` counts it (tests/test_guide.py fails on any miss).
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from datasets import Dataset, DatasetDict
from sentence_transformers import SentenceTransformer
from sentence_transformers.util import batch_to_device
from torch import Tensor, nn
from tqdm.auto import tqdm

from st_bge.storage import cache_dir, model_fingerprint, save_atomically

logger = logging.getLogger(__name__)

# Rows collated at a time while collecting the guide's inputs (tokenization only).
COLLATE_BATCH = 256


class PrecomputedGuide(nn.Module):
    """A frozen guide that answers from a table of its own embeddings, keyed by its inputs (`input_key`).

    It stands where the GIST losses expect their guide (`loss.guide`): called with a batch of features, it returns
    them with `sentence_embedding` set, like a Sentence Transformer; the attributes the losses read from a guide
    (tokenizer, max length, `preprocess`, device) are the guide's own.
    """

    def __init__(self, guide: SentenceTransformer, keys: list[bytes], embeddings: Tensor) -> None:
        super().__init__()
        if len(keys) != len(embeddings):
            raise ValueError(f"{len(keys)} keys for {len(embeddings)} guide embeddings")
        self.guide = guide
        self.register_buffer("embeddings", embeddings, persistent=False)
        self._rows = {key: row for row, key in enumerate(keys)}
        self.hits = 0
        self.misses = 0

    def forward(self, features: dict[str, Any]) -> dict[str, Any]:
        rows = [self._rows.get(key) for key in input_keys(features)]
        if None in rows:
            missing = rows.count(None)
            if not self.misses:
                logger.warning(
                    "GIST guide: %d input(s) of a batch are not in the precomputed table; the guide embeds the batch "
                    "itself (counted in `misses`)",
                    missing,
                )
            self.misses += missing
            return self.guide(features)
        self.hits += len(rows)
        device = features["input_ids"].device
        features["sentence_embedding"] = self.embeddings[torch.tensor(rows, device=self.embeddings.device)].to(device)
        return features

    @property
    def tokenizer(self):
        return self.guide.tokenizer

    @property
    def max_seq_length(self) -> int:
        return self.guide.max_seq_length

    @property
    def device(self) -> torch.device:
        return self.guide.device

    def preprocess(self, *args, **kwargs) -> dict[str, Any]:
        return self.guide.preprocess(*args, **kwargs)

    def __repr__(self) -> str:
        # Model cards list a loss's guide by its repr: it is the guide's.
        return repr(self.guide)


def input_keys(features: Mapping[str, Any]) -> list[bytes]:
    """One key per row of a batch: its unpadded tokens plus the batch's non-tensor features (prompt length,
    modality), which also change what the guide computes."""
    shared = repr(sorted((name, value) for name, value in features.items() if not isinstance(value, Tensor)))
    ids = features["input_ids"].cpu().numpy().astype(np.int64)
    mask = features["attention_mask"].cpu().numpy().astype(bool)
    return [shared.encode() + row[row_mask].tobytes() for row, row_mask in zip(ids, mask, strict=True)]


def guide_features(loss: nn.Module, guide: SentenceTransformer, features: dict[str, Any]) -> dict[str, Any]:
    """What a GIST `loss` gives its guide for a batch of the model's features: a copy of them (the guide writes its
    outputs into what it is given), or, when the guide reads other tokens (`must_retokenize`), the model's tokens
    decoded and tokenized by the guide, as sentence-transformers' GIST losses do."""
    if not loss.must_retokenize:
        return dict(features)
    texts = loss.tokenizer.batch_decode(features["input_ids"], skip_special_tokens=True)
    return batch_to_device(guide.preprocess(texts), features["input_ids"].device)


def precompute_guide(
    loss: nn.Module,
    data_collator,
    train_dataset: Dataset | DatasetDict,
    *,
    batch_size: int = 64,
    use_cache: bool = True,
    cache_folder: str | Path | None = None,
) -> PrecomputedGuide:
    """The guide of a GIST `loss`, precomputed over every input the loss will give it while training on
    `train_dataset` (as collated by `data_collator`, the Trainer's).

    The cache file is named by the guide's weights and settings (`model_fingerprint`) and by the set of inputs, so
    another guide or other data (rows, prompts, max length, mined negatives) is a new entry, never a stale hit.
    """
    guide = loss.guide.guide if isinstance(loss.guide, PrecomputedGuide) else loss.guide
    inputs = _guide_inputs(loss, guide, data_collator, train_dataset)
    keys = sorted(inputs)
    path = Path(cache_folder or cache_dir("guide")) / f"{model_fingerprint(guide)}-{_keys_fingerprint(keys)}.pt"
    if use_cache and path.is_file():
        logger.info("GIST guide embeddings of %d inputs from cache: %s", len(keys), path)
        return PrecomputedGuide(guide, keys, torch.load(path, weights_only=True)["embeddings"].to(guide.device))
    embeddings = _embed(guide, [inputs[key] for key in keys], batch_size)
    if use_cache:
        save_atomically({"embeddings": embeddings.cpu()}, path)
        logger.info("GIST guide embeddings of %d inputs cached: %s", len(keys), path)
    return PrecomputedGuide(guide, keys, embeddings)


def _guide_inputs(
    loss: nn.Module, guide: SentenceTransformer, data_collator, train_dataset: Dataset | DatasetDict
) -> dict[bytes, dict[str, Any]]:
    """Every distinct input of the guide, by key: one row's unpadded tensors plus the batch's shared features."""
    inputs: dict[bytes, dict[str, Any]] = {}
    for features in _column_batches(data_collator, train_dataset):
        features = guide_features(loss, guide, features)
        for row, key in enumerate(input_keys(features)):
            if key not in inputs:
                inputs[key] = _row(features, row)
    return inputs


def _column_batches(data_collator, train_dataset: Dataset | DatasetDict) -> Iterator[dict[str, Any]]:
    """The features of each text column of the training rows, `COLLATE_BATCH` rows at a time, as the Trainer's
    collator makes them for the loss (`<column>_input_ids`, ...)."""
    datasets = train_dataset.values() if isinstance(train_dataset, DatasetDict) else [train_dataset]
    for dataset in datasets:
        for start in range(0, len(dataset), COLLATE_BATCH):
            columns = dataset[start : start + COLLATE_BATCH]
            rows = [dict(zip(columns, values, strict=True)) for values in zip(*columns.values(), strict=True)]
            batch = data_collator(rows)
            for column in columns:
                prefix = f"{column}_"
                features = {name[len(prefix) :]: value for name, value in batch.items() if name.startswith(prefix)}
                if "input_ids" in features:
                    yield features


def _row(features: Mapping[str, Any], row: int) -> dict[str, Any]:
    """Row `row` of a batch without its padding: its token-aligned tensors as lists, the shared features as they
    are."""
    kept = features["attention_mask"][row].bool()
    width = features["input_ids"].shape
    return {
        name: value[row][kept].tolist() if isinstance(value, Tensor) else value
        for name, value in features.items()
        if not isinstance(value, Tensor) or value.shape == width
    }


@torch.inference_mode()
def _embed(guide: SentenceTransformer, inputs: list[dict[str, Any]], batch_size: int) -> Tensor:
    """The guide's embedding of each input, in length-sorted batches (less padding), in the inputs' order."""
    order = sorted(range(len(inputs)), key=lambda i: len(inputs[i]["input_ids"]))
    embeddings: list[Tensor | None] = [None] * len(inputs)
    progress = tqdm(total=len(order), desc="GIST guide embeddings", unit="input")
    for positions, features in _batches(guide, order, batch_size, inputs):
        output = guide(batch_to_device(features, guide.device))["sentence_embedding"]
        for position, embedding in zip(positions, output, strict=True):
            embeddings[position] = embedding
        progress.update(len(positions))
    progress.close()
    return torch.stack(embeddings) if embeddings else torch.empty(0)


def _batches(
    guide: SentenceTransformer, order: list[int], batch_size: int, inputs: list[dict[str, Any]]
) -> Iterator[tuple[list[int], dict[str, Any]]]:
    """Batches of inputs padded by the guide's tokenizer, each of inputs that share their non-tensor features (a
    batch carries one value of each)."""
    for start in range(0, len(order), batch_size):
        groups: dict[str, list[int]] = {}
        for position in order[start : start + batch_size]:
            groups.setdefault(repr(_shared(inputs[position])), []).append(position)
        for positions in groups.values():
            rows = [inputs[position] for position in positions]
            tensors = {name: [row[name] for row in rows] for name, value in rows[0].items() if isinstance(value, list)}
            yield positions, {**dict(_shared(rows[0])), **guide.tokenizer.pad(tensors, return_tensors="pt")}


def _shared(row: Mapping[str, Any]) -> list[tuple[str, Any]]:
    return sorted((name, value) for name, value in row.items() if not isinstance(value, list))


def _keys_fingerprint(keys: list[bytes]) -> str:
    digest = hashlib.blake2b(digest_size=16)
    for key in keys:
        digest.update(len(key).to_bytes(8, "little") + key)
    return digest.hexdigest()
