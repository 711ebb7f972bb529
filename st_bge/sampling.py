"""Length-aware batching under a token budget, as BGE-M3 was trained: long documents get smaller batches.

A batch costs about (rows x longest text) tokens of activation memory and compute, and every text shorter than
the longest is padding. Grouping rows of similar length and sizing each group's batches to `max_tokens` keeps
the cost per step flat and the padding low, instead of sizing every batch for the longest document.

Rows are grouped by their longest text (token count, capped at max_seq_length) into power-of-two length ranges;
a range whose longest row has L tokens gets batches of min(batch_size, max_tokens // L) rows. Each epoch
shuffles the rows inside every range and the order of all batches (seeded), so the number of batches is the same
every epoch, as the Trainer expects. Unlike the `no_duplicates` sampler it does not keep repeated texts apart:
deduplicate first (`st-bge data check` counts duplicates).
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import torch
from datasets import Dataset
from sentence_transformers.base.sampler import DefaultBatchSampler

TOKENIZER_BATCH = 1024


def row_token_lengths(dataset: Dataset, tokenizer, max_length: int | None) -> dict[str, list[int]]:
    """Token count (special tokens included, capped at `max_length`) of every text, per text column."""
    lengths = {}
    for column in dataset.column_names:
        texts = dataset[column]
        if not texts or not isinstance(texts[0], str):
            continue
        counts = []
        for start in range(0, len(texts), TOKENIZER_BATCH):
            encoded = tokenizer(texts[start : start + TOKENIZER_BATCH], add_special_tokens=True)["input_ids"]
            counts += [min(len(ids), max_length) if max_length else len(ids) for ids in encoded]
        lengths[column] = counts
    return lengths


class TokenBudgetBatchSampler(DefaultBatchSampler):
    """Batches of rows of similar length, each with at most `max_tokens` (rows x longest row) tokens.

    Args:
        dataset: The training rows.
        batch_size: The most rows a batch may have (the batch size of the shortest texts).
        drop_last: Drop each length range's last, smaller batch.
        tokenizer: The model's tokenizer, to count tokens.
        max_tokens: Token budget per batch.
        max_length: The model's max_seq_length (longer texts are truncated, so they cost this much).
        lengths_cache: Token lengths by dataset fingerprint, shared between the samplers one factory makes, so that
            the start-up padding report and the Trainer's sampler tokenize the data once.
    """

    def __init__(
        self,
        dataset: Dataset,
        batch_size: int,
        drop_last: bool,
        valid_label_columns: list[str] | None = None,
        generator: torch.Generator | None = None,
        seed: int = 0,
        *,
        tokenizer,
        max_tokens: int,
        max_length: int | None = None,
        lengths_cache: dict[str, dict[str, list[int]]] | None = None,
    ) -> None:
        super().__init__(dataset, batch_size, drop_last, valid_label_columns, generator, seed)
        cache = {} if lengths_cache is None else lengths_cache
        key = dataset._fingerprint
        if key not in cache:
            cache[key] = row_token_lengths(dataset, tokenizer, max_length)
        self.column_lengths = cache[key]
        self.row_lengths = [max(row) for row in zip(*self.column_lengths.values(), strict=True)]
        self.max_tokens = max_tokens
        self.groups = _length_groups(self.row_lengths)
        self.group_batch_sizes = [
            max(1, min(batch_size, max_tokens // max(self.row_lengths[i] for i in group))) for group in self.groups
        ]

    def __iter__(self) -> Iterator[list[int]]:
        generator = torch.Generator().manual_seed(self.seed + self.epoch)
        batches = []
        for group, size in zip(self.groups, self.group_batch_sizes, strict=True):
            order = [group[i] for i in torch.randperm(len(group), generator=generator).tolist()]
            batches += _chunks(order, size, self.drop_last)
        for i in torch.randperm(len(batches), generator=generator).tolist():
            yield batches[i]

    def __len__(self) -> int:
        return sum(
            len(group) // size if self.drop_last else math.ceil(len(group) / size)
            for group, size in zip(self.groups, self.group_batch_sizes, strict=True)
        )

    def batches(self) -> list[list[int]]:
        """One epoch's batches (for reports)."""
        return list(iter(self))


def _length_groups(lengths: Sequence[int]) -> list[list[int]]:
    """Row indices grouped by power-of-two length range (1-16, 17-32, 33-64, ...), shortest range first."""
    groups: dict[int, list[int]] = {}
    for index, length in enumerate(lengths):
        groups.setdefault(max(4, math.ceil(math.log2(max(length, 1)))), []).append(index)
    return [groups[key] for key in sorted(groups)]


def _chunks(indices: list[int], size: int, drop_last: bool) -> list[list[int]]:
    chunks = [indices[start : start + size] for start in range(0, len(indices), size)]
    return chunks[:-1] if drop_last and chunks and len(chunks[-1]) < size else chunks


@dataclass
class PaddingReport:
    """Share of padding tokens (each text column is padded to its longest text in the batch)."""

    real_tokens: int
    padded_tokens: int
    batches: int

    @property
    def waste(self) -> float:
        return 1.0 - self.real_tokens / self.padded_tokens if self.padded_tokens else 0.0


def padding_report(column_lengths: dict[str, list[int]], batches: Sequence[Sequence[int]]) -> PaddingReport:
    """Real and padded token counts of `batches` (row indices) under dynamic padding."""
    real = padded = 0
    for batch in batches:
        for lengths in column_lengths.values():
            in_batch = [lengths[i] for i in batch]
            real += sum(in_batch)
            padded += len(in_batch) * max(in_batch)
    return PaddingReport(real, padded, len(batches))


def random_batches(rows: int, batch_size: int, seed: int) -> list[list[int]]:
    """The batches of a plain shuffled sampler, to compare padding with."""
    order = torch.randperm(rows, generator=torch.Generator().manual_seed(seed)).tolist()
    return _chunks(order, batch_size, drop_last=False)
