"""The one normal form in which st-bge compares texts (duplicates, leakage, false negatives, splits)."""

from __future__ import annotations

import unicodedata


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
