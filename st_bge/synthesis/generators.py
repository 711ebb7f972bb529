"""What writes the queries: the inverse cloze task (no model) or an LLM behind an OpenAI-compatible chat endpoint.

`GENERATORS` is the one list of them, by the name `synth_generator` gives (a test keeps the recipe field's choices
equal to it). Each answers one passage at a time with a `Generation`; `st_bge.synthesis.journal` runs them over a
corpus, keeps what they answered and resumes. The LLM generator retries what a busy or flaky server does (429, 5xx,
timeouts, dropped connections) with exponential backoff and counts every retry by kind; a reply it cannot use is an
answer too (counted, journaled, not asked again); a request that runs out of retries is a failure (not journaled: a
rerun asks again).
"""

from __future__ import annotations

import json
import logging
import os
import random
import re
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import ClassVar, Protocol

from st_bge.config import SynthArguments
from st_bge.errors import ConfigError, StBgeError
from st_bge.synthesis.passages import Passage
from st_bge.synthesis.prompts import PromptTemplate, parse_reply

logger = logging.getLogger(__name__)

MAX_RETRY_DELAY_S = 60.0
# A sentence ends at . ! ? followed by space, at Chinese end punctuation, or at a line break (code, lists).
_SENTENCE_BOUNDARY = re.compile(r"(?<=[.!?])\s+|(?<=[。！？；])\s*|\s*\n\s*")


class SynthError(StBgeError):
    """Generation cannot go on (the endpoint refuses the key or the model, or too many passages failed)."""


@dataclass
class Generation:
    """One passage's answer: its queries and, for ICT, each query's training positive (the passage without the
    sentence); `unusable` says why there are no queries; `failed` that there is no answer yet (retry later)."""

    passage_id: str
    queries: list[str] = field(default_factory=list)
    positives: list[str] | None = None
    unusable: str | None = None
    failed: str | None = None

    def to_json(self) -> dict[str, object]:
        record: dict[str, object] = {"passage_id": self.passage_id, "queries": self.queries}
        if self.positives is not None:
            record["positives"] = self.positives
        if self.unusable is not None:
            record["unusable"] = self.unusable
        return record

    @classmethod
    def from_json(cls, record: dict) -> Generation:
        return cls(record["passage_id"], list(record["queries"]), record.get("positives"), record.get("unusable"))


class Generator(Protocol):
    """What the journal runs: `concurrency` passages at a time through `generate`, retries counted by kind."""

    name: ClassVar[str]
    # Whether it writes from a prompt (`synth_prompt_template`, few-shot examples): the pipeline builds one only then.
    prompted: ClassVar[bool]
    concurrency: int
    retries: Counter

    def settings(self) -> dict[str, object]: ...

    def generate(self, passage: Passage) -> Generation: ...


class ICTGenerator:
    """The inverse cloze task (Lee et al., 2019): a sentence of the passage is the query, and the passage without
    it is the positive (with probability `keep_sentence` the sentence stays, so that word overlap is learnt too).
    Every choice is seeded by the passage id, so a passage gets the same queries in every run."""

    name = "ict"
    prompted = False
    concurrency = 1
    retries: Counter

    def __init__(self, args: SynthArguments) -> None:
        self.n = args.synth_queries_per_passage
        self.keep_sentence = args.synth_ict_keep_sentence
        self.seed = args.synth_seed
        self.retries = Counter()

    def settings(self) -> dict[str, object]:
        """What decides the output: a journal written with other settings is not resumed."""
        return {"generator": self.name, "n": self.n, "keep_sentence": self.keep_sentence, "seed": self.seed}

    def generate(self, passage: Passage) -> Generation:
        spans = sentence_spans(passage.text)
        if len(spans) < 2:
            return Generation(passage.id, unusable="fewer than 2 sentences")
        rng = random.Random(f"{self.seed}:{passage.id}")
        chosen = sorted(rng.sample(range(len(spans)), min(self.n, len(spans))))
        queries, positives = [], []
        for index in chosen:
            start, end = spans[index]
            queries.append(passage.text[start:end].strip())
            keep = rng.random() < self.keep_sentence
            positives.append(passage.text if keep else _without_sentence(passage.text, spans, index))
        return Generation(passage.id, queries, positives)


def sentence_spans(text: str) -> list[tuple[int, int]]:
    """(start, end) of each non-empty sentence or line of `text`."""
    spans, start = [], 0
    for match in _SENTENCE_BOUNDARY.finditer(text):
        if match.start() > start:
            spans.append((start, match.start()))
        start = max(start, match.end())
    if start < len(text):
        spans.append((start, len(text)))
    return [(a, b) for a, b in spans if text[a:b].strip()]


def _without_sentence(text: str, spans: list[tuple[int, int]], index: int) -> str:
    """The text with sentence `index` and the separator after it (before it, for the last one) cut out."""
    if index + 1 < len(spans):
        return text[: spans[index][0]] + text[spans[index + 1][0] :]
    return text[: spans[index - 1][1]]


class OpenAIGenerator:
    """Queries from an LLM behind any OpenAI-compatible chat endpoint, through the official `openai` client.

    The client's own retries are off (`max_retries=0`) so that every retry is counted here by kind; the key is read
    from the environment and handed to the client only, never to a log, a file or an error message.
    """

    name = "openai"
    prompted = True

    def __init__(self, args: SynthArguments, template: PromptTemplate) -> None:
        try:
            import openai
        except ImportError:
            raise ConfigError(
                f"synth_generator '{self.name}' needs the openai client: pip install 'st-bge[synth]'"
            ) from None

        self.args = args
        self.template = template
        self.concurrency = args.synth_concurrency
        self.retries: Counter = Counter()
        self._lock = threading.Lock()
        key = os.environ.get(args.synth_api_key_env)
        if not key:
            if args.synth_base_url is None:
                raise ConfigError(
                    f"OpenAI's API needs a key: set the {args.synth_api_key_env} environment variable "
                    "(or name another one with synth_api_key_env), or give synth_base_url for a local server"
                )
            logger.info("No key in $%s: sending 'EMPTY' (what vLLM and local servers accept)", args.synth_api_key_env)
            key = "EMPTY"
        self.client = openai.OpenAI(
            base_url=args.synth_base_url, api_key=key, max_retries=0, timeout=args.synth_timeout
        )

    def settings(self) -> dict[str, object]:
        """What decides the output: a journal written with other settings is not resumed."""
        args = self.args
        return {
            "generator": self.name,
            "base_url": args.synth_base_url,
            "model": args.synth_model,
            "template": self.template.template,
            **self.template.fixed,
            "n": args.synth_queries_per_passage,
            "temperature": args.synth_temperature,
            "max_tokens": args.synth_max_tokens,
        }

    def generate(self, passage: Passage) -> Generation:
        import openai

        n = self.args.synth_queries_per_passage
        prompt = self.template.render(passage.text, n)
        for attempt in range(self.args.synth_max_retries + 1):
            try:
                response = self.client.chat.completions.create(
                    model=self.args.synth_model,
                    messages=[{"role": "user", "content": prompt}],
                    temperature=self.args.synth_temperature,
                    max_tokens=self.args.synth_max_tokens,
                )
            except (openai.AuthenticationError, openai.PermissionDeniedError) as error:
                raise SynthError(
                    f"{self._where()} refused the key ({error.status_code}): check ${self.args.synth_api_key_env}"
                ) from None
            except openai.NotFoundError:
                raise SynthError(
                    f"{self._where()} has no chat model '{self.args.synth_model}' (404): check synth_model and "
                    "synth_base_url (an OpenAI base URL ends in /v1)"
                ) from None
            except openai.APIStatusError as error:
                kind = _retryable_status(error.status_code)
                if kind is None:  # another 4xx: this request will not succeed as it is
                    return Generation(passage.id, failed=f"{error.status_code}: {_message(error)}")
                delay = _retry_after(error)
            except openai.APITimeoutError:
                kind, delay = "timeout", None
            except openai.APIConnectionError:
                kind, delay = "connection", None
            except (openai.APIError, json.JSONDecodeError):  # a 200 whose body is not a chat completion
                kind, delay = "bad_response", None
            else:
                content = response.choices[0].message.content if response.choices else None
                queries, unusable = parse_reply(content, n)
                return Generation(passage.id, queries, unusable=unusable)
            with self._lock:
                self.retries[kind] += 1
            if attempt < self.args.synth_max_retries:
                time.sleep(self._backoff(attempt, delay))
        return Generation(passage.id, failed=f"no answer after {self.args.synth_max_retries} retries (last: {kind})")

    def _backoff(self, attempt: int, retry_after: float | None) -> float:
        if retry_after is not None:
            return min(retry_after, MAX_RETRY_DELAY_S)
        delay = min(self.args.synth_retry_delay * 2**attempt, MAX_RETRY_DELAY_S)
        return delay * random.uniform(0.5, 1.0)  # jitter, so that concurrent retries do not arrive together

    def _where(self) -> str:
        return f"synth_base_url {self.args.synth_base_url}" if self.args.synth_base_url else "OpenAI's API"


def _retryable_status(status: int) -> str | None:
    if status == 429:
        return "rate_limited"
    if status >= 500:
        return "server_error"
    if status in (408, 409):
        return "timeout" if status == 408 else "conflict"
    return None


def _retry_after(error: object) -> float | None:
    """The server's Retry-After in seconds, if it sent one as a number."""
    value = error.response.headers.get("retry-after")
    try:
        return max(float(value), 0.0) if value is not None else None
    except ValueError:
        return None


def _message(error: object) -> str:
    return str(getattr(error, "message", error))[:200]


GENERATORS: dict[str, type[Generator]] = {generator.name: generator for generator in (ICTGenerator, OpenAIGenerator)}


def build_generator(args: SynthArguments, template: PromptTemplate | None) -> Generator:
    """The recipe's generator (`template`: the prompt, for a `prompted` one)."""
    generator = GENERATORS[args.synth_generator]
    return generator(args, template) if generator.prompted else generator(args)
