"""Running a generator over a corpus so that a killed run loses at most the requests in flight.

Every answer is appended to `generations.jsonl` (one line per passage, flushed as it arrives) beside
`synth_settings.json`, the settings it was written with. A run finds the answers already there and asks only for
the rest; a journal written with other settings is refused rather than mixed in. Only a torn last line (the run
was killed while writing it) is skipped on reading; any other bad line is an error naming it.
"""

from __future__ import annotations

import json
import logging
from collections import Counter
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path

from tqdm.auto import tqdm

from st_bge.data.sources import read_text_lines
from st_bge.errors import ConfigError, DataError
from st_bge.storage import write_text_atomically
from st_bge.synthesis.generators import Generation, Generator, SynthError
from st_bge.synthesis.passages import Passage

logger = logging.getLogger(__name__)

JOURNAL = "generations.jsonl"
SETTINGS = "synth_settings.json"


@dataclass
class GenerationRun:
    """The answers for every passage asked so far (this run and earlier ones), and what this run went through."""

    answers: dict[str, Generation]
    resumed: int
    asked: int = 0
    retries: Counter = field(default_factory=Counter)
    failures: list[str] = field(default_factory=list)  # "<passage id>: <why>", one per passage that got no answer

    @property
    def failed(self) -> int:
        return len(self.failures)


class Journal:
    """`generations.jsonl` + `synth_settings.json` in an output folder."""

    def __init__(self, folder: Path, settings: dict[str, object]) -> None:
        self.path = folder / JOURNAL
        self.settings_path = folder / SETTINGS
        self.settings = settings

    def open(self, *, overwrite: bool) -> dict[str, Generation]:
        """The answers already journaled (none if `overwrite`: the journal starts again).

        Raises:
            ConfigError: the journal was written with other settings and `overwrite` is false.
        """
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if overwrite or not self.settings_path.is_file():
            self.path.unlink(missing_ok=True)
            self.settings_path.write_text(
                json.dumps(self.settings, indent=2, ensure_ascii=False) + "\n", encoding="utf-8"
            )
            return {}
        saved = json.loads(self.settings_path.read_text(encoding="utf-8"))
        changed = sorted(key for key in {*saved, *self.settings} if saved.get(key) != self.settings.get(key))
        if changed:
            raise ConfigError(
                f"{self.path.parent}: its generations were written with other settings ({', '.join(changed)} "
                "differ), so they cannot be resumed; choose another synth_output_dir, or pass "
                "--overwrite_output_dir true to generate again from scratch"
            )
        return self._read()

    def _read(self) -> dict[str, Generation]:
        if not self.path.is_file():
            return {}
        lines = read_text_lines(self.path)
        answers = {}
        for number, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            try:
                generation = Generation.from_json(json.loads(line))
            except (json.JSONDecodeError, KeyError, TypeError) as error:
                if number == len(lines):  # torn by a kill mid-write: that passage is asked again
                    logger.info(
                        "%s: the last line is incomplete (a killed run); its passage is asked again", self.path
                    )
                    self._drop_torn_line(lines[: number - 1])
                    break
                raise DataError(
                    self.path, f"not a journal record ({error}); delete the file to start again", line=number
                ) from None
            answers[generation.passage_id] = generation
        return answers

    def _drop_torn_line(self, good_lines: list[str]) -> None:
        """Rewrite the journal without its torn last line, so that the next answer starts a line of its own."""
        write_text_atomically("".join(line + "\n" for line in good_lines), self.path)

    def append(self, generation: Generation) -> None:
        """One line per answer, written whole and flushed at once (the runner calls this from one thread)."""
        line = json.dumps(generation.to_json(), ensure_ascii=False) + "\n"
        with self.path.open("a", encoding="utf-8") as file:
            file.write(line)


def run_generator(
    generator: Generator,
    passages: list[Passage],
    journal: Journal,
    *,
    overwrite: bool,
    max_failures: int,
) -> GenerationRun:
    """Answer every passage not yet in the journal, `generator.concurrency` at a time, journaling each answer.

    Raises:
        SynthError: more than `max_failures` passages failed (the journal keeps every answer so far).
    """
    answers = journal.open(overwrite=overwrite)
    known = {passage.id for passage in passages}
    answers = {pid: answer for pid, answer in answers.items() if pid in known}
    pending = [passage for passage in passages if passage.id not in answers]
    run = GenerationRun(answers, resumed=len(answers))
    if run.resumed:
        logger.info("Resuming: %d of %d passages already answered in %s", run.resumed, len(passages), journal.path)
    bar = tqdm(total=len(passages), initial=run.resumed, desc="Writing queries", unit="passage")

    def record(generation: Generation) -> None:
        run.asked += 1
        bar.update()
        if generation.failed is not None:
            run.failures.append(f"{generation.passage_id}: {generation.failed}")
            if run.failed > max_failures:
                raise SynthError(
                    f"{run.failed} passages got no answer (last: {generation.failed}); the {len(run.answers)} answers "
                    f"so far are kept in {journal.path}: fix the endpoint and run again to resume"
                )
            return
        journal.append(generation)
        run.answers[generation.passage_id] = generation
        if generator.retries:
            bar.set_postfix(dict(generator.retries))

    try:
        if generator.concurrency == 1:
            for passage in pending:
                record(generator.generate(passage))
        else:
            _run_concurrently(generator, pending, record)
    finally:
        bar.close()
        run.retries = Counter(generator.retries)
    return run


def _run_concurrently(generator: Generator, pending: list[Passage], record: Callable[[Generation], None]) -> None:
    """At most `concurrency` requests in flight, submitted as others finish (so a kill loses no more than those)."""
    queue = iter(pending)
    with ThreadPoolExecutor(max_workers=generator.concurrency, thread_name_prefix="synth") as pool:
        in_flight: set[Future] = set()
        try:
            while True:
                while len(in_flight) < generator.concurrency and (passage := next(queue, None)) is not None:
                    in_flight.add(pool.submit(generator.generate, passage))
                if not in_flight:
                    return
                done, in_flight = wait(in_flight, return_when=FIRST_COMPLETED)
                for future in done:
                    record(future.result())
        except BaseException:
            for future in in_flight:
                future.cancel()
            raise
