"""A fine-tune merged with its base model, or several fine-tunes of one base merged together (`st-bge merge`).

The merged weights are `base + sum_i w_i * (fine-tuned_i - base)`: one fine-tune at weight w is the dial between
the base (w = 0) and the fine-tune as trained (w = 1), which trades the domain gain against what the fine-tune
cost elsewhere (the forgetting check measures both); several fine-tunes are task arithmetic, as LM-Cocktail and
LoRA-hub combine them. BGE-M3's sparse and ColBERT heads are merged like every other weight; a head the base does
not have (`m3_add_heads`) has no base to go back to and is kept as trained (with several fine-tunes, their
weighted mean).

Two ways, one formula:
- one LoRA fine-tune: its adapter with every `lora_B` scaled by w (`WeightDial`, which training uses too). The
  adapted weight `W + s * B @ A` becomes `W + w * s * B @ A`, the interpolation exactly, and the output stays a
  small adapter;
- anything else (full fine-tunes, several fine-tunes): each fine-tune as full weights (an adapter merged into its
  base), interpolated tensor by tensor in float32. Every fine-tune and the base are held in memory at once.

Why not `SentenceTransformer.merge` (sentence-transformers 6.3, through mergekit): it refuses models with PEFT
adapters (st-bge's default is LoRA), it merges only what `state_dict` holds of models it loads itself, so it cannot
keep a head the base lacks, and it needs mergekit, which st-bge does not otherwise depend on. For full fine-tunes
of a dense model its `task_arithmetic` method computes the same weights: the tests use it as the oracle.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from sentence_transformers import SentenceTransformer
from torch import Tensor

from st_bge.config import MergeArguments
from st_bge.errors import ConfigError
from st_bge.model_card import attach_card_data, card_data_from_folder, recorded_base_model
from st_bge.modeling import (
    adapter_base,
    is_adapter_dir,
    load_full_model,
    load_saved_model,
    require_model_dir,
    resolve_model_path,
)
from st_bge.storage import ADAPTER_CONFIG, CARD_INPUTS, check_output_dir

logger = logging.getLogger(__name__)

MERGE_FILE = "merge.json"  # what was merged, with which weights, in the merged folder


@dataclass
class MergeResult:
    """What `merge` wrote: the folder, the base model as it was loaded (Hub id or path), and `merge.json`'s record."""

    output_dir: Path
    base_model: str
    record: dict


@dataclass
class MergeSource:
    """One fine-tune to merge: its folder, its weight, and the base model it started from."""

    model_dir: Path
    weight: float
    base_model: str | None

    @property
    def adapter(self) -> bool:
        return is_adapter_dir(self.model_dir)


def merge(args: MergeArguments) -> MergeResult:
    """Merge `args.model_dirs` with their base into `args.output_dir`.

    Everything is checked (folders, one common base, the output folder) before the first model is loaded.

    Raises:
        ConfigError: a folder is not an st-bge output, the fine-tunes name different bases or none, the output
            folder is not empty (without `overwrite_output_dir`), or the weights of a fine-tune do not match its base.
    """
    sources = [
        # The base a training output started from: its adapter's, else the Hub id its card inputs record.
        MergeSource(require_model_dir(path), weight, adapter_base(path) or recorded_base_model(path))
        for path, weight in zip(args.model_dirs, args.weights, strict=True)
    ]
    base_model = args.base_model or _common_base(sources)
    output_dir = Path(args.output_dir)
    if any(output_dir.resolve() == source.model_dir.resolve() for source in sources):
        raise ConfigError(f"output_dir {output_dir} is one of the model_dirs: merge into a new folder")
    check_output_dir(output_dir, overwrite=args.overwrite_output_dir)

    model = merge_models(sources, base_model)
    record = merge_record(
        base_model, [(s.model_dir.name, s.weight, s.adapter) for s in sources], made_by="`st-bge merge`"
    )
    first = sources[0].model_dir
    card_data = None
    if (first / CARD_INPUTS).is_file():
        # The first fine-tune's card, with the merge in place of its results: they were the fine-tune's, not these.
        card_data = card_data_from_folder(first, adapter=sources[0].adapter and len(sources) == 1, comparison=None)
        card_data.merge = record
        attach_card_data(model, card_data, base_model=base_model)
    else:
        model._model_card_text = None  # not the README of the folder it was loaded from, which describes that model
    model.save(str(output_dir))
    if card_data is not None:
        card_data.save_inputs(output_dir)  # `st-bge push` renders the card again from these
    (output_dir / MERGE_FILE).write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    logger.info("Merged %s into %s", ", ".join(f"{m['name']} x {m['weight']:g}" for m in record["models"]), output_dir)
    return MergeResult(output_dir, base_model, record)


def merge_models(sources: Sequence[MergeSource], base_model: str) -> SentenceTransformer:
    """The merged model in memory (see the module docstring for the two ways)."""
    base = load_saved_model(resolve_model_path(base_model, field="base_model"), local_files_only=True)
    if len(sources) == 1 and sources[0].adapter and _scalable(sources[0].model_dir):
        (source,) = sources
        model = load_saved_model(source.model_dir, local_files_only=True)
        WeightDial(model, base_state(base, adapter=True), name=str(source.model_dir)).set(source.weight)
        return model
    models = [load_full_model(source.model_dir, local_files_only=True) for source in sources]
    weights = [source.weight for source in sources]
    names = [str(source.model_dir) for source in sources]
    models[0].load_state_dict(interpolate(base.state_dict(), [m.state_dict() for m in models], weights, names=names))
    return models[0]


class WeightDial:
    """A fine-tuned model that can be set anywhere between its base (weight 0) and itself as trained (weight 1), in
    place and as often as asked: the trained tensors are kept aside, so every setting starts from them.

    With a LoRA adapter attached, only the adapter's B matrices and the tensors the base also has outside the
    encoder (the M3 heads) are dialled: a B matrix is zero at the base (peft initialises it so), so interpolating
    it scales the adapter's update exactly. A tensor the base lacks (a new head) stays as trained.

    Args:
        model: The fine-tuned model.
        base_state: The base model's tensors by `state_dict` key (`base_state` gives them before training).
        name: The fine-tune, in error messages.
    """

    def __init__(self, model: SentenceTransformer, base_state: Mapping[str, Tensor], *, name: str = "fine-tuned"):
        self.model, self.name = model, name
        current = model.state_dict()
        base = {key: value for key, value in base_state.items() if key in current}
        base |= {key: torch.zeros_like(value) for key, value in current.items() if ".lora_B." in key}
        self.base = base
        self.tuned = {key: current[key].detach().clone() for key in base}

    def set(self, weight: float) -> None:
        """Give the model the weights `base + weight * (fine-tuned - base)`."""
        merged = interpolate(self.base, [self.tuned], [weight], names=[self.name])
        self.model.load_state_dict(merged, strict=False)


def base_state(model: SentenceTransformer, *, adapter: bool) -> dict[str, Tensor]:
    """A copy of the tensors of `model` (before training) that a `WeightDial` needs: all of them for a full
    fine-tune; for a LoRA run only those outside the encoder (the heads), since LoRA leaves the encoder's own."""
    encoder = model[0].auto_model
    prefix = next(name for name, module in model.named_modules() if module is encoder) + "."
    return {
        key: value.detach().clone()
        for key, value in model.state_dict().items()
        if not adapter or not key.startswith(prefix)
    }


def interpolate(
    base: Mapping[str, Tensor],
    tuned: Sequence[Mapping[str, Tensor]],
    weights: Sequence[float],
    *,
    names: Sequence[str],
) -> dict[str, Tensor]:
    """`base + sum_i weights[i] * (tuned[i] - base)` for every floating-point tensor of the fine-tunes, in float32
    and cast back. A tensor the base lacks (a new head) is kept as trained, or with several fine-tunes their
    weighted mean; integer buffers (position ids) are the first fine-tune's.

    Raises:
        ConfigError: the fine-tunes hold different tensors, or one has a shape its base does not (names[i] is
            fine-tune i, in messages).
    """
    keys = set(tuned[0])
    for name, state in zip(names[1:], tuned[1:], strict=True):
        if set(state) != keys:
            different = sorted(keys.symmetric_difference(state))[0]
            raise ConfigError(
                f"{name} and {names[0]} hold different weights ({different}): not fine-tunes of one model"
            )
    merged = {}
    for key, first in tuned[0].items():
        if not first.is_floating_point():
            merged[key] = first
            continue
        for name, state in zip(names, tuned, strict=True):
            origin = base.get(key)
            if state[key].shape != first.shape or (origin is not None and origin.shape != first.shape):
                raise ConfigError(f"{name}: weight {key} has shape {tuple(state[key].shape)}, unlike its base")
        if key in base:
            origin = base[key].float()
            value = origin + sum(w * (state[key].float() - origin) for w, state in zip(weights, tuned, strict=True))
        elif len(tuned) == 1:
            value = first
        else:
            value = sum(w * state[key].float() for w, state in zip(weights, tuned, strict=True)) / _total(weights)
        merged[key] = value.to(first.dtype)
    return merged


def merge_record(base_model: str, models: Sequence[tuple[str, float, bool]], *, made_by: str) -> dict:
    """What `merge.json` and the card say about a merge: the base (a folder by its name, not its path), each
    fine-tune as (name, weight, whether it is an adapter), and what made it."""
    return {
        "base_model": Path(base_model).name if Path(base_model).exists() else base_model,
        "formula": "base + sum_i weight_i * (fine-tuned_i - base)",
        "models": [{"name": name, "weight": weight, "adapter": adapter} for name, weight, adapter in models],
        "made_by": made_by,
    }


def _common_base(sources: Sequence[MergeSource]) -> str:
    bases = {source.base_model for source in sources}
    if None in bases:
        unknown = next(source.model_dir for source in sources if source.base_model is None)
        raise ConfigError(f"{unknown}: which base model it was trained from is not recorded: pass --base_model")
    if len(bases) > 1:
        raise ConfigError(
            f"model_dirs start from different base models ({', '.join(sorted(bases))}): merge fine-tunes of one base "
            "model, or pass --base_model"
        )
    return bases.pop()


def _scalable(model_dir: Path) -> bool:
    """Whether scaling `B` scales the adapter's update: not for DoRA (its magnitude vector is not linear in B) nor
    for modules saved whole (`modules_to_save`)."""
    config = json.loads((model_dir / ADAPTER_CONFIG).read_text(encoding="utf-8"))
    return not config.get("use_dora") and not config.get("modules_to_save")


def _total(weights: Sequence[float]) -> float:
    total = sum(weights)
    if total == 0:
        raise ConfigError("weights sum to 0, and a head the base lacks has no weighted mean: give other weights")
    return total
