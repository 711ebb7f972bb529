"""Build st-bge's general-domain guard sets (BEIR layout) from their upstream files.

    python data/general/build.py squad_dev_en PATH/TO/dev-v1.1.json
    python data/general/build.py cmrc2018_dev_zh PATH/TO/cmrc2018_dev.json

Each set is question -> the paragraph it was asked on: the documents are the upstream file's paragraphs (a seeded
sample of them where there are too many to encode in well under a minute with all-MiniLM-L6-v2 on 2 CPU cores),
the queries a seeded sample of the questions asked on them; paragraphs without a sampled question stay, as
distractors. The upstream file is checked by its SHA-256
first, so the set is rebuilt from exactly the file its SOURCE.md names. Written: `<set>/corpus.jsonl`,
`<set>/queries.jsonl`, `<set>/qrels/test.tsv`.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).parent
SEED = 0
MAX_QUERIES = 1000


@dataclass(frozen=True)
class Paragraph:
    id: str
    title: str
    text: str
    questions: list[tuple[str, str]]  # (question id, question)


def squad_paragraphs(data: dict) -> Iterator[Paragraph]:
    """SQuAD-format articles; questions marked `is_impossible` (SQuAD 2.0) have no answer in their paragraph and
    are left out."""
    for article_number, article in enumerate(data["data"]):
        for paragraph_number, paragraph in enumerate(article["paragraphs"]):
            questions = [(qa["id"], qa["question"]) for qa in paragraph["qas"] if not qa.get("is_impossible")]
            yield Paragraph(
                f"squad-{article_number}-{paragraph_number}",
                article["title"].replace("_", " "),
                paragraph["context"],
                questions,
            )


def cmrc_paragraphs(data: list) -> Iterator[Paragraph]:
    for context in data:
        questions = [(qa["query_id"], qa["query_text"]) for qa in context["qas"]]
        yield Paragraph(context["context_id"], context["title"], context["context_text"], questions)


@dataclass(frozen=True)
class Upstream:
    sha256: str
    paragraphs: Callable[[object], Iterator[Paragraph]]  # reads the upstream JSON
    max_documents: int | None = None


SETS = {
    # github:VinACE/san_mrc @ 74f10c582d3fb1249ef9559967dc9cb6c989acbe, dev-v1.1.json (SQuAD 2.0 dev, 5 articles)
    "squad_dev_en": Upstream("db71d0a19c3f656b1ebefafce642b828cfab269f0d906312dfb0efdc7173b31a", squad_paragraphs),
    # github:ymcui/cmrc2018 @ c0eb1b6ba219847457e6af3180da722bbeb656af, data/cmrc2018_dev.json
    # (848 paragraphs of about 500 characters: 400 of them keep the encoding under half a minute)
    "cmrc2018_dev_zh": Upstream(
        "5cfe4414c28a8ecbb51670f78c0dc7d1049f286c2d5769b52f1f94bcc0752cf1", cmrc_paragraphs, max_documents=400
    ),
}


def build(name: str, upstream_file: Path, output: Path) -> dict[str, int]:
    raw = upstream_file.read_bytes()
    digest = hashlib.sha256(raw).hexdigest()
    upstream = SETS[name]
    if digest != upstream.sha256:
        raise SystemExit(f"{upstream_file}: SHA-256 {digest}, expected {upstream.sha256} (the file SOURCE.md names)")
    rng = random.Random(SEED)
    paragraphs = list(upstream.paragraphs(json.loads(raw)))
    if upstream.max_documents is not None and len(paragraphs) > upstream.max_documents:
        kept = set(rng.sample(range(len(paragraphs)), upstream.max_documents))
        paragraphs = [paragraph for index, paragraph in enumerate(paragraphs) if index in kept]
    questions = [
        (question_id, " ".join(question.split()), paragraph.id)
        for paragraph in paragraphs
        for question_id, question in paragraph.questions
        if question.strip()
    ]
    chosen = sorted(rng.sample(range(len(questions)), min(MAX_QUERIES, len(questions))))
    queries = [questions[index] for index in chosen]

    (output / "qrels").mkdir(parents=True, exist_ok=True)
    with open(output / "corpus.jsonl", "w", encoding="utf-8") as file:
        for paragraph in paragraphs:
            record = {"_id": paragraph.id, "title": paragraph.title, "text": paragraph.text.strip()}
            file.write(json.dumps(record, ensure_ascii=False) + "\n")
    with open(output / "queries.jsonl", "w", encoding="utf-8") as file:
        for question_id, question, _ in queries:
            file.write(json.dumps({"_id": question_id, "text": question}, ensure_ascii=False) + "\n")
    with open(output / "qrels" / "test.tsv", "w", encoding="utf-8") as file:
        file.write("query-id\tcorpus-id\tscore\n")
        file.writelines(f"{question_id}\t{paragraph_id}\t1\n" for question_id, _, paragraph_id in queries)
    asked = {paragraph_id for _, _, paragraph_id in queries}
    return {
        "documents": len(paragraphs),
        "documents_asked": len(asked),
        "questions": len(questions),
        "queries": len(queries),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("name", choices=sorted(SETS))
    parser.add_argument("upstream_file", type=Path)
    parser.add_argument("--output", type=Path, help="default: data/general/<name>")
    args = parser.parse_args()
    counts = build(args.name, args.upstream_file, args.output or HERE / args.name)
    print(f"{args.name}: {counts}")


if __name__ == "__main__":
    main()
