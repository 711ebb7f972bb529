"""What a model card says about a BGE-M3: its modes, the heads it lacks or got new, and which ones this run
trained."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sentence_transformers import SentenceTransformer

from st_bge.bge import HEAD_FILES
from st_bge.m3.model import BGEM3Model


def card_details(model: SentenceTransformer | None) -> dict[str, Any]:
    """What the card template says about BGE-M3's modes (`m3_modes` None for a model without heads)."""
    if not isinstance(model, BGEM3Model) or model.m3_heads is None:
        return {"m3_modes": None}
    return {"m3_modes": model.modes, "m3_colbert_dim": model.colbert_dim, "m3_hidden_size": model.get_hidden_size()}


def heads_notes(model: BGEM3Model, *, trained: Sequence[str] = (), added: Sequence[str] = ()) -> list[str]:
    """What a model card should say about the heads: missing ones, new ones, and which this run trained."""
    notes = [
        f"The base model has no `{name}`: this model has no {mode} mode (it was not given a random, untrained head)."
        for mode, name in HEAD_FILES.items()
        if name in model.missing_head_files
    ]
    if added:
        notes.append(
            f"The base model had no {' or '.join(added)} head: st-bge added new ones (randomly initialised, "
            f"`{'`, `'.join(HEAD_FILES[mode] for mode in added)}`) and trained them in this run."
        )
    untrained = [mode for mode in (model.m3_heads.modes if model.m3_heads is not None else []) if mode not in trained]
    if untrained:
        heads = " and ".join(f"{mode} (`{HEAD_FILES[mode]}`)" for mode in untrained)
        notes.append(
            f"BGE-M3's {heads} head{'s were' if len(untrained) > 1 else ' was'} not trained by this "
            "run's loss: saved unchanged from the base model. The encoder they read was fine-tuned, so the "
            "per-mode results show what this fine-tune did to those modes."
        )
    return notes
