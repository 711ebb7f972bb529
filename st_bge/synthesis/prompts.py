"""The prompt an LLM gets per passage, and reading its reply back into queries.

The default asks for a JSON list of strings and nothing else: a format that is easy to check, so a reply that is
not usable (empty, prose, a list of something else) is recognised, counted and skipped, never trained on.
"""

from __future__ import annotations

import json
import re
import string
from dataclasses import dataclass
from pathlib import Path

from st_bge.data.sources import read_records
from st_bge.errors import ConfigError, DataError

TEMPLATE_FIELDS = ("passage", "n", "domain", "language", "examples")

DEFAULT_TEMPLATES = {
    "en": (
        "You write search queries for a retrieval system{domain}.\n\n"
        "Passage:\n<passage>\n{passage}\n</passage>\n\n"
        "Write {n} different queries, in {language}, that a user could type into a search box and that this "
        "passage answers. Each query must make sense without seeing the passage; do not copy sentences from it."
        "{examples}\n\n"
        "Reply with a JSON list of {n} strings and nothing else."
    ),
    "zh": (
        "你为一个检索系统编写搜索查询{domain}。\n\n"
        "段落：\n<passage>\n{passage}\n</passage>\n\n"
        "请用{language}写出 {n} 个不同的查询：用户会在搜索框中输入、并且这个段落能够回答的问题。每个查询在不看段落的"
        "情况下也要能读懂；不要照抄段落中的句子。{examples}\n\n"
        "只回复一个包含 {n} 个字符串的 JSON 列表，不要写其他内容。"
    ),
}
LANGUAGE_NAMES = {"en": {"en": "English", "zh": "Chinese"}, "zh": {"en": "英文", "zh": "中文"}}
DOMAIN_CLAUSES = {"en": " about {domain}", "zh": "（领域：{domain}）"}
EXAMPLES_HEADERS = {"en": "\n\nExamples of a passage and a good query:", "zh": "\n\n段落与好查询的示例："}

_FENCE = re.compile(r"^```[\w-]*\s*|\s*```$")
_THINKING = re.compile(r"<think>.*?</think>", re.DOTALL)
_JSON_LIST = re.compile(r"\[.*\]", re.DOTALL)


def check_template(template: str) -> None:
    """Refuse a template with a field st-bge does not fill, or without `{passage}`, before any request is sent.

    Raises:
        ConfigError: naming the field.
    """
    try:
        names = {name for _, name, _, _ in string.Formatter().parse(template) if name is not None}
    except ValueError as error:
        raise ConfigError(
            f"synth_prompt_template: not a valid template ({error}); write literal braces as {{{{ }}}}"
        ) from None
    unknown = sorted(names - set(TEMPLATE_FIELDS))
    if unknown:
        raise ConfigError(f"synth_prompt_template: unknown field(s) {unknown}; the fields are {list(TEMPLATE_FIELDS)}")
    if "passage" not in names:
        raise ConfigError("synth_prompt_template: it must contain {passage}, where the passage goes")


def render_examples(path: str | None, language: str) -> str:
    """The few-shot block of the prompt, from a jsonl of `{passage, query}` lines ('' without a file).

    Raises:
        DataError: a line without a passage or a query, naming the line.
    """
    if path is None:
        return ""
    records = read_records(path)
    lines = [EXAMPLES_HEADERS[language]]
    for record in records.rows:
        for key in ("passage", "query"):
            if not isinstance(record.values.get(key), str) or not record.values[key].strip():
                raise DataError(Path(path), "missing or empty text", line=record.line, field=key)
        lines.append(
            f"\n<passage>\n{record.values['passage'].strip()}\n</passage>\n{json.dumps([record.values['query'].strip()], ensure_ascii=False)}"
        )
    return "".join(lines)


@dataclass(frozen=True)
class PromptTemplate:
    """A checked template and the values of its fixed fields; `render` fills in the passage and the count."""

    template: str
    fixed: dict[str, str]

    def render(self, passage: str, n: int) -> str:
        return self.template.format(passage=passage, n=n, **self.fixed)


def build_prompt_template(template: str | None, *, language: str, domain: str | None, examples: str) -> PromptTemplate:
    """The recipe's template (or the default of `language`), checked, with its domain, language and examples."""
    prompt_language = "zh" if template is None and language == "zh" else "en"
    template = template or DEFAULT_TEMPLATES[language]
    check_template(template)
    fixed = {
        "domain": DOMAIN_CLAUSES[language].format(domain=domain) if domain else "",
        "language": LANGUAGE_NAMES[prompt_language][language],
        "examples": examples,
    }
    return PromptTemplate(template, fixed)


def parse_reply(content: str | None, n: int) -> tuple[list[str], str | None]:
    """The queries in a reply, at most `n`, and why it is not usable (None if it is).

    Accepted: a JSON list of strings, possibly inside a code fence, after a reasoning model's `<think>` block or
    with prose around it, or an object whose `queries` is such a list. Anything else is 'malformed'; a reply
    with no text, or only empty strings, is 'empty'.
    """
    text = _THINKING.sub("", content or "").strip()
    if not text:
        return [], "empty"
    text = _FENCE.sub("", text).strip()
    value = _load_json(text)
    if value is None and (match := _JSON_LIST.search(text)):
        value = _load_json(match.group(0))
    if isinstance(value, dict):
        value = value.get("queries")
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        return [], "malformed"
    queries = [item.strip() for item in value if item.strip()][:n]
    return (queries, None) if queries else ([], "empty")


def _load_json(text: str) -> object:
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return None
