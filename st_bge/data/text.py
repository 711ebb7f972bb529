"""The one normal form in which st-bge compares texts (duplicates, leakage, false negatives, splits), and the
script a text is written in (the data check's language findings, the language of a corpus)."""

from __future__ import annotations

import functools
import re
import unicodedata
from collections import Counter
from collections.abc import Iterable

NO_LETTERS = "no letters"
# Unicode character names start with their script ('LATIN SMALL LETTER A', 'CYRILLIC ...'), except these.
SCRIPT_ALIASES = {"CJK": "Han", "HIRAGANA": "Kana", "KATAKANA": "Kana", "HANGUL": "Hangul"}
_ASCII_LETTER = re.compile("[a-z]")


class _PunctuationTable(dict):
    """A `str.translate` table deleting Unicode punctuation (categories P*), filled in per character seen."""

    def __missing__(self, code: int) -> int | None:
        value = None if unicodedata.category(chr(code)).startswith("P") else code
        self[code] = value
        return value


_PUNCTUATION = _PunctuationTable()


def normalise(text: str) -> str:
    """NFKC, casefold, Unicode punctuation removed (not replaced: 'N/A' -> 'na', 'e-mail' -> 'email'), whitespace
    collapsed: the form in which texts are compared."""
    return " ".join(unicodedata.normalize("NFKC", text).casefold().translate(_PUNCTUATION).split())


def dominant_script(text: str) -> str:
    """The script most of the letters of a normalised text are in ('Latin', 'Han', 'Cyrillic', ...)."""
    if text.isascii():  # the common case, without a look at each character
        return "Latin" if _ASCII_LETTER.search(text) else NO_LETTERS
    scripts: Counter[str] = Counter()
    for char, n in Counter(text).items():
        script = _script(char)
        if script is not None:
            scripts[script] += n
    return scripts.most_common(1)[0][0] if scripts else NO_LETTERS


def main_script(texts: Iterable[str]) -> str:
    """The dominant script of most of `texts` (their letters only; `NO_LETTERS` if none has any)."""
    counts = Counter(dominant_script(normalise(text)) for text in texts)
    counts.pop(NO_LETTERS, None)
    return counts.most_common(1)[0][0] if counts else NO_LETTERS


@functools.cache
def _script(char: str) -> str | None:
    if not char.isalpha():
        return None
    word = unicodedata.name(char, "OTHER").split()[0]
    return SCRIPT_ALIASES.get(word, word.title())
