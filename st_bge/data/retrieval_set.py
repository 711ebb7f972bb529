"""Retrieval sets (queries + corpus + graded qrels), read from BEIR folders or LlamaIndex files, split by query,
turned into pairs.

A BEIR folder is `corpus.jsonl` (`_id`, `title`, `text`), `queries.jsonl` (`_id`, `text`) and
`qrels/<split>.tsv` (`query-id`, `corpus-id`, `score` with a header line). A LlamaIndex
`EmbeddingQAFinetuneDataset` file is one JSON object `{"queries": {id: text}, "corpus": {id: text},
"relevant_docs": {query id: [doc id, ...]}}`. Both are the usual evaluation formats and also training sources:
each (query, relevant document) pair is one training row.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from datasets import Dataset

from st_bge.data.sources import Records, read_records, read_text_lines
from st_bge.data.text import normalise
from st_bge.errors import DataError

QRELS_HEADER = ("query-id", "corpus-id", "score")


@dataclass
class RetrievalSet:
    """Queries and documents by id, and graded relevance judgements `qrels[query_id][doc_id] = grade`."""

    queries: dict[str, str]
    corpus: dict[str, str]
    qrels: dict[str, dict[str, int]]
    name: str = "retrieval"

    def summary(self) -> dict[str, object]:
        """Name and sizes (no text), for logs, results files and public cards."""
        return {
            "name": self.name,
            "queries": len(self.queries),
            "corpus": len(self.corpus),
            "judgements": sum(len(docs) for docs in self.qrels.values()),
        }

    def relevant_pairs(self) -> Iterable[tuple[str, str]]:
        """(query text, document text) for every judgement with a positive grade, in a stable order."""
        for query_id in sorted(self.qrels):
            for doc_id, grade in sorted(self.qrels[query_id].items()):
                if grade > 0:
                    yield self.queries[query_id], self.corpus[doc_id]

    def to_training_dataset(self) -> Dataset:
        """One (anchor, positive) row per relevant (query, document) pair."""
        pairs = list(self.relevant_pairs())
        return Dataset.from_dict({"anchor": [q for q, _ in pairs], "positive": [d for _, d in pairs]})

    def subset(self, query_ids: Iterable[str], name: str | None = None) -> RetrievalSet:
        """The given queries with their judgements, searching the same full corpus."""
        query_ids = list(query_ids)
        return RetrievalSet(
            queries={qid: self.queries[qid] for qid in query_ids},
            corpus=self.corpus,
            qrels={qid: self.qrels[qid] for qid in query_ids},
            name=name or self.name,
        )

    def split(self, eval_size: float, seed: int) -> tuple[RetrievalSet, RetrievalSet]:
        """Split by query into (train, eval), leakage-free; both keep the full corpus.

        Queries that are the same text (after `normalise`) or share a relevant document (by text, so copies under
        two ids count) are one group and stay on one side: otherwise MBPP's problems with one prompt or one
        solution, or two questions answered by one passage, would be trained on and evaluated on. Groups are ordered by their smallest query id before the seeded
        shuffle, so the split depends only on the data and the seed; eval gets whole groups until it holds
        round(eval_size x queries) queries or just more.
        """
        groups = self._leakage_groups()
        random.Random(seed).shuffle(groups)
        target = round(len(self.qrels) * eval_size)
        eval_ids: list[str] = []
        for group in groups:
            if len(eval_ids) >= target:
                break
            eval_ids += group
        if not 0 < len(eval_ids) < len(self.qrels):
            raise DataError(
                self.name, f"eval_split_size={eval_size} leaves no queries on one side of {len(self.qrels)} queries"
            )
        held_out = set(eval_ids)
        return self.subset(qid for qid in sorted(self.qrels) if qid not in held_out), self.subset(sorted(eval_ids))

    def _leakage_groups(self) -> list[list[str]]:
        """Query ids joined (union-find) by identical normalised text or a relevant document of identical text."""
        parent = {qid: qid for qid in self.qrels}

        def root(qid: str) -> str:
            while parent[qid] != qid:
                parent[qid] = parent[parent[qid]]
                qid = parent[qid]
            return qid

        doc_text: dict[str, str] = {}  # a relevant document by its normalised text: copies under two ids join too
        first_with: dict[tuple[str, str], str] = {}
        for qid in sorted(self.qrels):
            keys = [("query", normalise(self.queries[qid]))]
            for doc_id, grade in self.qrels[qid].items():
                if grade > 0:
                    keys.append(("doc", doc_text.setdefault(doc_id, normalise(self.corpus[doc_id]))))
            for key in keys:
                other = first_with.setdefault(key, qid)
                parent[root(qid)] = root(other)
        groups: dict[str, list[str]] = {}
        for qid in sorted(self.qrels):
            groups.setdefault(root(qid), []).append(qid)
        return sorted(groups.values())

    @classmethod
    def from_training_dataset(cls, dataset: Dataset, name: str) -> RetrievalSet:
        """A retrieval set from training rows: each distinct anchor is a query whose positives are relevant;
        every positive and negative text is in the corpus."""
        texts: dict[str, str] = {}
        queries: dict[str, str] = {}
        qrels: dict[str, dict[str, int]] = {}

        def doc_id(text: str) -> str:
            return texts.setdefault(text, f"d{len(texts)}")

        negative_columns = [c for c in dataset.column_names if c not in ("anchor", "positive")]
        for row in dataset:
            query_id = queries.setdefault(row["anchor"], f"q{len(queries)}")
            qrels.setdefault(query_id, {})[doc_id(row["positive"])] = 1
            for column in negative_columns:
                doc_id(row[column])
        return cls(
            queries={qid: text for text, qid in queries.items()},
            corpus={did: text for text, did in texts.items()},
            qrels=qrels,
            name=name,
        )

    @classmethod
    def merge(cls, sets: dict[str, RetrievalSet], name: str) -> RetrievalSet:
        """One set from several (e.g. one per language), ids prefixed with the set's key so that none collide."""
        queries, corpus, qrels = {}, {}, {}
        for key, part in sets.items():
            queries.update({f"{key}/{qid}": text for qid, text in part.queries.items()})
            corpus.update({f"{key}/{did}": text for did, text in part.corpus.items()})
            for qid, docs in part.qrels.items():
                qrels[f"{key}/{qid}"] = {f"{key}/{did}": grade for did, grade in docs.items()}
        return cls(queries=queries, corpus=corpus, qrels=qrels, name=name)


LLAMAINDEX_KEYS = ("queries", "corpus", "relevant_docs")


def is_llamaindex_file(path: str | Path) -> bool:
    """A `.json` file that names LlamaIndex's `queries`, `corpus` and `relevant_docs` keys."""
    path = Path(path)
    if not (path.is_file() and path.suffix.lower() == ".json"):
        return False
    text = "\n".join(read_text_lines(path))
    return all(f'"{key}"' in text for key in LLAMAINDEX_KEYS)


def load_llamaindex(path: str | Path) -> RetrievalSet:
    """Read a LlamaIndex `EmbeddingQAFinetuneDataset` JSON file (as `generate_qa_embedding_pairs` saves it).

    Raises:
        DataError: malformed JSON, a missing key, an empty text, or `relevant_docs` naming unknown ids.
    """
    path = Path(path)
    text = "\n".join(read_text_lines(path))
    try:
        data = json.loads(text)
    except json.JSONDecodeError as error:
        raise DataError(path, f"malformed JSON: {error.msg} (column {error.colno})", line=error.lineno) from None
    for key in LLAMAINDEX_KEYS:
        if not isinstance(data.get(key), dict):
            raise DataError(path, "missing, or not an object of id -> value", field=key)
    queries = _id_texts(path, "queries", data["queries"])
    corpus = _id_texts(path, "corpus", data["corpus"])
    qrels: dict[str, dict[str, int]] = {}
    for query_id, doc_ids in data["relevant_docs"].items():
        where = f"relevant_docs.{query_id}"
        if query_id not in queries:
            raise DataError(path, f"unknown query id '{query_id}' (not in queries)", field=where)
        if not isinstance(doc_ids, list) or not doc_ids:
            raise DataError(path, "expected a non-empty list of document ids", field=where)
        for doc_id in doc_ids:
            if doc_id not in corpus:
                raise DataError(path, f"unknown document id '{doc_id}' (not in corpus)", field=where)
        qrels[query_id] = dict.fromkeys(doc_ids, 1)
    if not qrels:
        raise DataError(path, "no relevant documents", field="relevant_docs")
    return RetrievalSet(queries={qid: queries[qid] for qid in qrels}, corpus=corpus, qrels=qrels, name=path.stem)


def _id_texts(path: Path, key: str, values: dict[str, object]) -> dict[str, str]:
    for item_id, text in values.items():
        if not isinstance(text, str):
            raise DataError(path, f"expected text, got {type(text).__name__}", field=f"{key}.{item_id}")
        if not text.strip():
            raise DataError(path, "empty text", field=f"{key}.{item_id}")
    return dict(values)


def is_beir_folder(path: str | Path) -> bool:
    path = Path(path)
    return path.is_dir() and (path / "corpus.jsonl").is_file() and (path / "queries.jsonl").is_file()


def load_beir(folder: str | Path, split: str = "test") -> RetrievalSet:
    """Read a BEIR folder; `split` is a qrels file name, comma-separated names, or 'all' (every qrels/*.tsv).

    Raises:
        DataError: a missing file, a malformed line, an empty text, or qrels naming unknown ids.
    """
    folder = Path(folder)
    if not is_beir_folder(folder):
        raise DataError(folder, "not a BEIR folder: it needs corpus.jsonl, queries.jsonl and qrels/<split>.tsv")
    corpus = read_corpus(read_records(str(folder / "corpus.jsonl")))
    queries = _read_texts(read_records(str(folder / "queries.jsonl")), with_title=False)
    qrels: dict[str, dict[str, int]] = {}
    for path in _qrels_files(folder, split):
        _read_qrels(path, queries, corpus, qrels)
    return RetrievalSet(queries={qid: queries[qid] for qid in qrels}, corpus=corpus, qrels=qrels, name=folder.name)


def read_corpus(
    records: Records, *, id_fields: Sequence[str] = ("_id",), missing_id: Callable[[str], str] | None = None
) -> dict[str, str]:
    """Document id -> text of BEIR-style corpus records (an id, optional `title`, `text`; the title precedes the
    text). The id is the first of `id_fields` a record gives; a record with none is an error unless `missing_id`
    makes one from the text.

    Raises:
        DataError: a missing field, a text or title that is not text, an empty text, or an id given twice with
            different texts, naming the line.
    """
    return _read_texts(records, with_title=True, id_fields=id_fields, missing_id=missing_id)


def _qrels_files(folder: Path, split: str) -> list[Path]:
    available = sorted(p.stem for p in (folder / "qrels").glob("*.tsv"))
    names = available if split == "all" else [name.strip() for name in split.split(",")]
    missing = [name for name in names if name not in available]
    if missing or not names:
        raise DataError(folder / "qrels", f"no qrels split {missing or split!r}; available: {available}")
    return [folder / "qrels" / f"{name}.tsv" for name in names]


def _read_texts(
    records: Records,
    *,
    with_title: bool,
    id_fields: Sequence[str] = ("_id",),
    missing_id: Callable[[str], str] | None = None,
) -> dict[str, str]:
    texts: dict[str, str] = {}
    first_line: dict[str, int] = {}
    for record in records.rows:
        values = record.values
        id_field = next((name for name in id_fields if values.get(name) not in (None, "")), None)
        if id_field is None and missing_id is None:
            raise DataError(records.source, "missing field", line=record.line, field=id_fields[0])
        if "text" not in values:
            raise DataError(records.source, "missing field", line=record.line, field="text")
        text, title = values["text"], (values.get("title") or "") if with_title else ""
        for name, value in (("text", text), ("title", title)):
            if not isinstance(value, str):
                raise DataError(
                    records.source, f"expected text, got {type(value).__name__}", line=record.line, field=name
                )
        if not (text.strip() or title.strip()):
            raise DataError(records.source, "empty text", line=record.line, field="text")
        # BEIR's convention (as in its own dense retrieval code): the title, if any, precedes the text.
        full_text = f"{title} {text}".strip() if title.strip() else text
        item_id = str(values[id_field]) if id_field is not None else missing_id(full_text)
        if item_id in texts and texts[item_id] != full_text:  # an exact repeat is harmless and kept once
            raise DataError(
                records.source,
                f"id '{item_id}' appears again with a different text (first on line {first_line[item_id]})",
                line=record.line,
                field=id_field or "text",
            )
        texts[item_id] = full_text
        first_line.setdefault(item_id, record.line)
    return texts


def _read_qrels(path: Path, queries: dict[str, str], corpus: dict[str, str], qrels: dict[str, dict[str, int]]) -> None:
    lines = read_text_lines(path)
    for number, line in enumerate(lines, start=1):
        if not line.strip() or (number == 1 and line.split("\t")[:3] == list(QRELS_HEADER)):
            continue
        parts = line.split("\t")
        if len(parts) != 3:
            raise DataError(
                path, f"expected 3 tab-separated fields (query-id, corpus-id, score), got {len(parts)}", line=number
            )
        query_id, doc_id, score = parts
        if query_id not in queries:
            raise DataError(
                path, f"unknown query id '{query_id}' (not in queries.jsonl)", line=number, field="query-id"
            )
        if doc_id not in corpus:
            raise DataError(
                path, f"unknown document id '{doc_id}' (not in corpus.jsonl)", line=number, field="corpus-id"
            )
        try:
            grade = int(float(score))
        except ValueError:
            raise DataError(path, f"score {score!r} is not a number", line=number, field="score") from None
        qrels.setdefault(query_id, {})[doc_id] = grade
