"""The forgetting check: which general-domain retrieval set a run is also evaluated on, base against fine-tuned.

A fine-tune can win on its domain and lose everywhere else; the only way to see it is to evaluate outside the
domain as well. st-bge ships one general set per language it knows (`GENERAL_SETS`, built from Wikipedia reading
comprehension data by `data/general/build.py`, each with its SOURCE.md); `forgetting_dataset: auto` picks the one in
the recipe's language.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from pathlib import Path

from st_bge.data.text import main_script

logger = logging.getLogger(__name__)

AUTO, OFF = "auto", "none"
# Language code -> the shipped set's folder name, and the script its texts are written in.
GENERAL_SETS = {"en": "squad_dev_en", "zh": "cmrc2018_dev_zh"}
SCRIPT_LANGUAGES = {"Latin": "en", "Han": "zh"}


def general_sets_dir() -> Path:
    """The shipped sets: inside the installed package (wheel), else the repository's `data/general/`."""
    package = Path(__file__).parents[1] / "general_sets"
    return package if package.is_dir() else Path(__file__).parents[2] / "data" / "general"


def general_set(language: str) -> Path:
    """The shipped general set for `language` (a key of `GENERAL_SETS`)."""
    return general_sets_dir() / GENERAL_SETS[language]


def forgetting_source(value: str | None, *, languages: list[str] | None, texts: Iterable[str]) -> str | None:
    """The retrieval set `forgetting_dataset` names: a path or Hub id as given, none for 'none', and for 'auto' the
    shipped set of the first of `languages` that has one or, without `languages`, of the script most `texts` (the
    domain's queries) are written in. None, with a warning that says what to set, where no shipped set fits."""
    if value is None or value.lower() == OFF:
        return None
    if value != AUTO:
        return value
    if languages:
        language = next((code for code in languages if code in GENERAL_SETS), None)
        why = f"language {languages}"
    else:
        script = main_script(texts)
        language = SCRIPT_LANGUAGES.get(script)
        why = f"the evaluation queries are mostly in {script} script"
    if language is None:
        logger.warning(
            "forgetting_dataset auto: no shipped general set for %s (there are %s); no forgetting check. Set "
            "forgetting_dataset to a general retrieval set in your language (BEIR folder or Hub id), or none",
            why,
            ", ".join(f"{code}: {name}" for code, name in GENERAL_SETS.items()),
        )
        return None
    path = general_set(language)
    logger.info("Forgetting check on %s (forgetting_dataset auto, %s)", path.name, why)
    return str(path)
