"""The pipeline of `st-bge data synth`: training pairs from a bare corpus.

passages (`passages`) -> a query writer (`generators`: ICT or an LLM, run and resumed by `journal`) -> filters
(`filters`: length, copies, duplicates, round trip) -> `synth_output_dir`:

    train.jsonl          anchor, positive: train on it with dataset_name_or_path
    synthetic_eval/      a BEIR folder of the held-out passages' queries: eval_dataset_name_or_path
    synth_report.json/md what each stage kept and dropped, with samples (local only: it quotes the corpus)
    generations.jsonl    the journal of answers (resumable), synth_settings.json its settings

The held-out split is by passage and made before the round-trip filter, which is not applied to it: the base
model does not choose the queries it is then evaluated on.
"""

from __future__ import annotations

import json
import logging
import random
import shutil
from collections import Counter
from dataclasses import dataclass, replace
from pathlib import Path

from st_bge.config import Recipe, SynthArguments
from st_bge.errors import ConfigError
from st_bge.markdown import markdown_table
from st_bge.storage import write_text_atomically
from st_bge.synthesis.filters import FILTERS, Candidate, FilterLog, round_trip, text_filters
from st_bge.synthesis.generators import GENERATORS, Generation, build_generator
from st_bge.synthesis.journal import JOURNAL, SETTINGS, GenerationRun, Journal, run_generator
from st_bge.synthesis.passages import Corpus, Passage, load_corpus
from st_bge.synthesis.prompts import build_prompt_template, render_examples

logger = logging.getLogger(__name__)

TRAIN_FILE = "train.jsonl"
EVAL_FOLDER = "synthetic_eval"  # its name is the eval set's name in every results table
REPORT = "synth_report"  # .json, .md
# What a rerun of the same settings may find in synth_output_dir (and rewrites), besides the journal.
OUTPUT_FILES = frozenset({TRAIN_FILE, EVAL_FOLDER, f"{REPORT}.json", f"{REPORT}.md", JOURNAL, SETTINGS})


@dataclass
class SynthResult:
    """What `synth` wrote, and the report it wrote it with."""

    output_dir: Path
    train_file: Path
    eval_dir: Path | None
    report: dict[str, object]

    def to_markdown(self) -> str:
        return report_markdown(self.report)


def synth(recipe: Recipe) -> SynthResult:
    """Write queries for the passages of `synth_corpus`, filter them and save a training file and a held-out set.

    Raises:
        ConfigError: a bad setting, or `synth_output_dir` holds other files (or generations of other settings)
            and --overwrite_output_dir is not given.
        DataError: the corpus cannot be read.
        SynthError: the endpoint refuses the key or the model, or more than `synth_max_failures` passages failed.
    """
    args = recipe.synth
    output_dir = Path(args.synth_output_dir)
    overwrite = recipe.training.overwrite_output_dir
    if output_dir.is_file():
        raise ConfigError(f"synth_output_dir '{output_dir}' is a file")
    foreign = sorted(p.name for p in output_dir.iterdir() if p.name not in OUTPUT_FILES) if output_dir.is_dir() else []
    if foreign and not overwrite:
        raise ConfigError(
            f"synth_output_dir '{output_dir}' holds files st-bge data synth did not write ({', '.join(foreign[:3])}); "
            "choose another synth_output_dir or pass --overwrite_output_dir true"
        )
    corpus = load_corpus(args.synth_corpus, args.synth_corpus_split)
    passages = corpus.sample(args.synth_max_passages, args.synth_seed).passages
    language = corpus.language() if args.synth_language == "auto" else args.synth_language
    template = None
    if GENERATORS[args.synth_generator].prompted:
        examples = render_examples(args.synth_few_shot_file, language)
        template = build_prompt_template(
            args.synth_prompt_template, language=language, domain=args.synth_domain, examples=examples
        )
    generator = build_generator(args, template)
    retriever, cross_encoder = _load_filter_models(recipe) if args.synth_round_trip else (None, None)
    journal = Journal(output_dir, generator.settings())
    run = run_generator(generator, passages, journal, overwrite=overwrite, max_failures=args.synth_max_failures)

    by_id = {passage.id: passage for passage in passages}
    log = FilterLog()
    candidates = text_filters(_candidates(passages, run.answers), by_id, args, log)
    train, held_out = _split_by_passage(candidates, args)
    if retriever is not None:
        train = round_trip(train, corpus.passages, retriever, args, log, cross_encoder)
    report = _report(recipe, corpus, passages, language, run, log, train, held_out)
    train_file = _write_train(output_dir, train)
    eval_dir = _write_eval(output_dir, corpus.passages, held_out) if held_out else None
    if eval_dir is None and (output_dir / EVAL_FOLDER).is_dir():
        shutil.rmtree(output_dir / EVAL_FOLDER)  # an earlier run's held-out set, not this run's
    _write_report(output_dir, report)
    return SynthResult(output_dir, train_file, eval_dir, report)


def _load_filter_models(recipe: Recipe):
    """The round-trip retriever (the recipe's model, loaded as training would load it, or `synth_filter_model`)
    and the optional cross-encoder."""
    from st_bge.modeling import load_cross_encoder, load_model

    args = recipe.synth
    model_args = recipe.model
    if args.synth_filter_model:
        model_args = replace(model_args, model_name_or_path=args.synth_filter_model)
    retriever = load_model(model_args)
    cross_encoder = None
    if args.synth_filter_cross_encoder:
        cross_encoder = load_cross_encoder(args.synth_filter_cross_encoder, "synth_filter_cross_encoder")
    return retriever, cross_encoder


def _candidates(passages: list[Passage], answers: dict[str, Generation]) -> list[Candidate]:
    """Every generated query in passage order (so the output does not depend on the order answers arrived in)."""
    candidates = []
    for passage in passages:
        answer = answers.get(passage.id)
        if answer is None:
            continue
        positives = answer.positives or [passage.text] * len(answer.queries)
        candidates += [Candidate(passage.id, q, p) for q, p in zip(answer.queries, positives, strict=True)]
    return candidates


def _split_by_passage(candidates: list[Candidate], args: SynthArguments) -> tuple[list[Candidate], list[Candidate]]:
    """(train, held out): the queries of a seeded `synth_eval_split_size` share of the passages are held out."""
    passage_ids = sorted({c.passage_id for c in candidates})
    size = round(len(passage_ids) * args.synth_eval_split_size)
    if args.synth_eval_split_size > 0 and len(passage_ids) >= 2:
        size = min(max(size, 1), len(passage_ids) - 1)
    held = set(random.Random(args.synth_seed).sample(passage_ids, size))
    return [c for c in candidates if c.passage_id not in held], [c for c in candidates if c.passage_id in held]


def _report(
    recipe: Recipe,
    corpus: Corpus,
    passages: list[Passage],
    language: str,
    run: GenerationRun,
    log: FilterLog,
    train: list[Candidate],
    held_out: list[Candidate],
) -> dict[str, object]:
    args = recipe.synth
    unusable = Counter(answer.unusable for answer in run.answers.values() if answer.unusable is not None)
    generated = sum(len(answer.queries) for answer in run.answers.values())
    filter_model = (args.synth_filter_model or recipe.model.model_name_or_path) if args.synth_round_trip else None
    return {
        "corpus": {
            "source": corpus.source,
            "records": corpus.read,
            "duplicates_dropped": corpus.duplicates,
            "passages": len(corpus.passages),
            "passages_used": len(passages),
            "language": language,
        },
        "generation": {
            "generator": args.synth_generator,
            "model": args.synth_model if args.synth_generator == "openai" else None,
            "answered": len(run.answers),
            "resumed": run.resumed,
            "asked_this_run": run.asked,
            "failed_this_run": run.failed,
            "retries_this_run": dict(run.retries),
            "unusable": dict(unusable),
            "queries_generated": generated,
        },
        "filters": {
            "dropped": log.dropped,
            "round_trip": {
                "model": filter_model,
                "cross_encoder": args.synth_filter_cross_encoder,
                "top_k": args.synth_filter_top_k,
            }
            if args.synth_round_trip
            else None,
        },
        "output": {
            "train_pairs": len(train),
            "train_passages": len({c.passage_id for c in train}),
            "eval_queries": len(held_out),
            "eval_passages": len({c.passage_id for c in held_out}),
        },
        "samples": {"dropped": log.samples, "failures": run.failures[:5]},
        "notes": _notes(args, run),
    }


def _notes(args: SynthArguments, run: GenerationRun) -> list[str]:
    notes = [
        "The eval set is synthetic: its queries were written from the passages, not by users. It compares models on "
        "this corpus; real queries, when there are some, are the test that counts.",
    ]
    if args.synth_generator == "ict":
        notes.append(
            "ICT queries are sentences of their own passages, which the eval corpus still holds: the eval set "
            "rewards word overlap and is easier than real queries."
        )
    if args.synth_round_trip:
        notes.append("The round-trip filter was applied to the training queries only, not to the eval queries.")
    if run.failed:
        notes.append(f"{run.failed} passages got no answer this run: run the same command again to ask them again.")
    return notes


def _write_jsonl(path: Path, records: list[dict[str, object]]) -> None:
    write_text_atomically("".join(json.dumps(record, ensure_ascii=False) + "\n" for record in records), path)


def _write_train(output_dir: Path, train: list[Candidate]) -> Path:
    path = output_dir / TRAIN_FILE
    _write_jsonl(path, [{"anchor": c.query, "positive": c.positive} for c in train])
    return path


def _write_eval(output_dir: Path, corpus: list[Passage], held_out: list[Candidate]) -> Path:
    """A BEIR folder: the whole corpus, the held-out queries, and `qrels/test.tsv` pointing each at its passage."""
    folder = output_dir / EVAL_FOLDER
    _write_jsonl(folder / "corpus.jsonl", [{"_id": p.id, "title": "", "text": p.text} for p in corpus])
    query_ids = [f"q{number}" for number in range(len(held_out))]
    _write_jsonl(
        folder / "queries.jsonl", [{"_id": qid, "text": c.query} for qid, c in zip(query_ids, held_out, strict=True)]
    )
    lines = [
        "query-id\tcorpus-id\tscore",
        *(f"{qid}\t{c.passage_id}\t1" for qid, c in zip(query_ids, held_out, strict=True)),
    ]
    write_text_atomically("\n".join(lines) + "\n", folder / "qrels" / "test.tsv")
    return folder


def _write_report(output_dir: Path, report: dict[str, object]) -> None:
    (output_dir / f"{REPORT}.json").write_text(
        json.dumps(report, indent=2, ensure_ascii=False) + "\n", encoding="utf-8"
    )
    (output_dir / f"{REPORT}.md").write_text(report_markdown(report), encoding="utf-8")


def report_rows(report: dict[str, object]) -> list[list[object]]:
    """The counts of every stage, as (stage, count) rows: the report's table, and what a benchmark quotes of it."""
    corpus, generation, filters, output = (report[key] for key in ("corpus", "generation", "filters", "output"))
    return [
        ["passages read", corpus["records"]],
        ["duplicate passages dropped", corpus["duplicates_dropped"]],
        ["passages used", corpus["passages_used"]],
        [f"answered ({generation['generator']})", generation["answered"]],
        ["resumed from the journal", generation["resumed"]],
        ["failed this run (asked again next run)", generation["failed_this_run"]],
        *([f"retries: {kind}", count] for kind, count in sorted(generation["retries_this_run"].items())),
        *([f"unusable reply: {kind}", count] for kind, count in sorted(generation["unusable"].items())),
        ["queries generated", generation["queries_generated"]],
        *([f"dropped: {name}", filters["dropped"][name]] for name in FILTERS),
        ["training pairs kept", output["train_pairs"]],
        ["held-out eval queries", output["eval_queries"]],
    ]


def report_markdown(report: dict[str, object]) -> str:
    """The report as Markdown: the counts of every stage, then the samples of what each filter dropped."""
    source = report["corpus"]["source"]
    lines = [f"# Synthetic queries for {source}", "", markdown_table(["Stage", "Count"], report_rows(report)), ""]
    lines += [f"- {note}" for note in report["notes"]]
    for name, samples in report["samples"]["dropped"].items():
        lines += ["", f"## Dropped by {name} (sample)", ""]
        lines += [f"- {json.dumps(sample, ensure_ascii=False)}" for sample in samples]
    return "\n".join(lines) + "\n"
