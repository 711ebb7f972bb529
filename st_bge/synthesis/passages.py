"""The passages that synthetic queries are written for, read from whatever a user with no queries has.

A BEIR folder (its `corpus.jsonl`), a LlamaIndex file (its corpus), a corpus file (records with a `text` field and
optionally `_id` or `id` and `title`) or training-style data (pairs, FlagEmbedding, RAG logs, a Hub dataset: its
positives are the passages). Passages that are the same text after `normalise` are kept once, so that a query's
own passage is one passage when the round-trip filter ranks it.
"""

from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass
from pathlib import Path

from st_bge.data.formats import detect_format, records_to_dataset
from st_bge.data.retrieval_set import is_beir_folder, is_llamaindex_file, load_llamaindex, read_corpus
from st_bge.data.sources import Records, read_records
from st_bge.data.text import main_script, normalise
from st_bge.errors import DataError

CORPUS_ID_FIELDS = ("_id", "id")
# Columns that make a record a training row (a query and its documents) rather than a passage of a corpus.
QUERY_FIELDS = ("anchor", "query", "question")


@dataclass(frozen=True)
class Passage:
    """One passage and its id (the corpus's own id, or a digest of the text where the source has none)."""

    id: str
    text: str


@dataclass
class Corpus:
    """The distinct passages of a source, in source order, and how many records were read and kept."""

    source: str
    passages: list[Passage]
    read: int
    duplicates: int

    def sample(self, size: int | None, seed: int) -> Corpus:
        """A seeded sample of `size` passages, still in source order (all of them if `size` is None or larger)."""
        if size is None or size >= len(self.passages):
            return self
        keep = set(random.Random(seed).sample(range(len(self.passages)), size))
        passages = [passage for index, passage in enumerate(self.passages) if index in keep]
        return Corpus(self.source, passages, self.read, self.duplicates)

    def language(self) -> str:
        """'zh' if most passages are mostly Chinese characters, else 'en' (the default prompt's language)."""
        return "zh" if main_script(passage.text for passage in self.passages) == "Han" else "en"


def load_corpus(source: str, split: str = "train") -> Corpus:
    """The passages of `source` (see the module docstring).

    Raises:
        DataError: the source cannot be read, a passage is empty or not text, or nothing is left.
    """
    if is_beir_folder(source):
        texts = list(read_corpus(read_records(str(Path(source) / "corpus.jsonl"))).items())
    elif is_llamaindex_file(source):
        texts = list(load_llamaindex(source).corpus.items())
    else:
        records = read_records(source, split=split)
        texts = _corpus_records(records) if _is_corpus_file(records) else _positives(records)
    kept: dict[str, Passage] = {}
    for passage_id, text in texts:
        kept.setdefault(normalise(text), Passage(passage_id, text))
    if not kept:
        raise DataError(source, "holds no passages")
    return Corpus(source, list(kept.values()), read=len(texts), duplicates=len(texts) - len(kept))


def _is_corpus_file(records: Records) -> bool:
    columns = set(records.columns)
    return "text" in columns and not columns & set(QUERY_FIELDS)


def _corpus_records(records: Records) -> list[tuple[str, str]]:
    """(id, text) of corpus records, read as a BEIR corpus is; a record without `_id` or `id` gets a digest id."""
    return list(read_corpus(records, id_fields=CORPUS_ID_FIELDS, missing_id=_text_id).items())


def _positives(records: Records) -> list[tuple[str, str]]:
    """The positives of training-style records, each under the digest of its text."""
    rows = records_to_dataset(records, detect_format(records))
    return [(_text_id(text), text) for text in rows["positive"]]


def _text_id(text: str) -> str:
    """A stable id for a passage without one: the same text gets the same id in every run (resuming needs that)."""
    return "p" + hashlib.blake2b(text.encode(), digest_size=8).hexdigest()
