"""Publish a training output folder to the Hub so that anyone loads it with `SentenceTransformer("user/repo")`.

What goes up is built in a staging folder, never in the user's folder:
- the adapter variant: the model saved again with its card rendered for the repo id, and `adapter_config.json`
  naming the base model's Hub id (a local path there would make the repo unloadable for everyone else);
- the merged variant: the base model with the LoRA update merged into its weights (peft's `merge_and_unload`),
  loadable without peft; optionally with an ONNX export and its int8 quantisation;
- the run's public results (ranx tables, plots, training log); never the data reports, which quote training text.

Each variant is ONE commit (`upload_folder`), so a failed upload leaves the branch as it was; a repository or
branch created for the push is removed again if the commit fails. The token is never passed around or written:
`huggingface_hub` reads it from `HF_TOKEN` or the user's login.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from huggingface_hub import CommitInfo, HfApi, get_token
from huggingface_hub.errors import HfHubHTTPError, RevisionNotFoundError

from st_bge.config import PushArguments
from st_bge.errors import ConfigError, HubError
from st_bge.m3 import BGEM3Model
from st_bge.model_card import attach_card_data, card_data_from_folder, recorded_base_model
from st_bge.modeling import (
    PYPI_MODELS,
    adapter_base,
    is_adapter_dir,
    load_saved_model,
    merge_adapter,
    require_model_dir,
    resolve_model_path,
)
from st_bge.onnx_export import export_onnx
from st_bge.storage import ADAPTER_CONFIG, CARD_INPUTS, PUBLIC_FILES, point_adapter_at

logger = logging.getLogger(__name__)

# Files that make a branch "hold a model": pushing onto them needs --overwrite.
MODEL_FILES = ("modules.json", "config.json", ADAPTER_CONFIG, "model.safetensors", "adapter_model.safetensors")


@dataclass
class PushResult:
    """Where each variant went."""

    variant: str
    revision: str
    commit: CommitInfo


def push(args: PushArguments) -> list[PushResult]:
    """Push `args.model_dir` as the adapter, the merged model, or both (each on its own revision).

    Raises:
        ConfigError: no token, a folder not written by `st-bge train`, a base model with no Hub id, or a branch
            that already holds a model (without `overwrite` or `create_pr`).
    """
    model_dir = require_model_dir(args.model_dir)
    if get_token() is None:
        raise ConfigError("no Hub token: set the HF_TOKEN environment variable or run `hf auth login`")
    is_adapter = is_adapter_dir(model_dir)
    if args.variant != "adapter" and not is_adapter:
        raise ConfigError(f"{model_dir} holds a full model, not an adapter: there is nothing to merge")
    if args.variant == "adapter" and not is_adapter:
        plan = [("model", args.revision)]
    else:
        plan = {
            "adapter": [("adapter", args.revision)],
            "merged": [("merged", args.revision)],
            "both": [("adapter", args.revision), ("merged", args.merged_revision)],
        }[args.variant]
    api = HfApi()
    results = []
    with tempfile.TemporaryDirectory(prefix="st-bge-push-") as tmp:
        # Stage every variant before the first request, so that a local problem never leaves a half push.
        staged = {}
        for variant, _ in plan:
            staged[variant] = stage(
                model_dir, Path(tmp) / variant, variant=variant, repo_id=args.repo_id, base_model=args.base_model
            )
            if args.onnx and variant in ("merged", "model"):
                export_onnx(load_saved_model(staged[variant], device="cpu"), staged[variant] / "onnx")
        for variant, revision in plan:
            try:
                commit = _upload(api, staged[variant], args, revision or "main", variant)
            except HfHubHTTPError as error:  # creating the repo or branch, or reading it
                raise HubError(f"{args.repo_id}: {_first_line(error)}") from None
            results.append(PushResult(variant, revision or "main", commit))
    return results


def stage(
    model_dir: Path, staging: Path, *, variant: str, repo_id: str | None = None, base_model: str | None = None
) -> Path:
    """Build in `staging` what one variant uploads ('adapter', 'merged', or 'model' for a full fine-tune).

    Raises:
        ConfigError: the adapter's base model has no known Hub id.
    """
    base_id = base_model or _base_model_id(model_dir)
    if variant == "adapter" and base_id is None:
        raise ConfigError(
            f"{model_dir / ADAPTER_CONFIG} names a local base model, which nobody else can load: pass "
            "--base_model <Hub id of that model>"
        )
    model = load_saved_model(model_dir, local_files_only=True)
    if variant == "merged":
        merge_adapter(model, model_dir)
    if variant != "adapter" and isinstance(model, BGEM3Model):
        _log_m3_consumers(model)
    if (model_dir / CARD_INPUTS).is_file():
        card_data = card_data_from_folder(model_dir, adapter=variant == "adapter", model_id=repo_id)
        attach_card_data(model, card_data, base_model=base_id)
    model.save(str(staging))
    if variant == "adapter":
        point_adapter_at(staging, base_id)
    for name in PUBLIC_FILES:
        if (model_dir / name).is_file():
            shutil.copy2(model_dir / name, staging / name)
    _refuse_local_paths(staging, model_dir)
    return staging


def _base_model_id(model_dir: Path) -> str | None:
    """The base model's Hub id, if known: the adapter's own (if not a local path), the one the training recipe
    named (card inputs), or the id of a PyPI-shipped model's folder."""
    recorded = adapter_base(model_dir)
    if recorded and not Path(recorded).exists():
        return recorded  # already a Hub id
    base = recorded_base_model(model_dir)
    if base:
        return base
    return next(
        (
            hub_id
            for hub_id in PYPI_MODELS
            if recorded and Path(resolve_model_path(hub_id)).resolve() == Path(recorded).resolve()
        ),
        None,
    )


def _log_m3_consumers(model: BGEM3Model) -> None:
    """Say which BGE-M3 consumers can read the staged full model (its layout is BAAI's)."""
    if model.colbert_dim is not None and model.colbert_dim != model.get_hidden_size():
        logger.warning(
            "The ColBERT head is %d wide and the encoder %d: vLLM's BgeM3EmbeddingModel assumes equal widths and "
            "cannot serve this model's ColBERT mode (FlagEmbedding and st-bge can)",
            model.colbert_dim,
            model.get_hidden_size(),
        )
    else:
        logger.info("BGE-M3 layout (modes %s): FlagEmbedding's BGEM3FlagModel and vLLM read it", model.modes)


def _refuse_local_paths(staging: Path, model_dir: Path) -> None:
    """No staged text file may name a local folder of this machine (the output or the base model's)."""
    local = {str(model_dir.resolve()), str(model_dir)}
    for path in staging.rglob("*"):
        if path.suffix in (".json", ".md", ".txt") and path.is_file():
            text = path.read_text(encoding="utf-8", errors="ignore")
            found = next((folder for folder in local if folder in text), None)
            if found:
                raise ConfigError(f"{path.name} would publish the local path '{found}'")


def _upload(api: HfApi, staging: Path, args: PushArguments, revision: str, variant: str) -> CommitInfo:
    created_repo = not api.repo_exists(args.repo_id)
    api.create_repo(args.repo_id, private=args.private, exist_ok=True)
    created_branch = False
    if revision != "main" and not _branch_exists(api, args.repo_id, revision):
        api.create_branch(args.repo_id, branch=revision)
        created_branch = True
    # A branch made for this push starts as a copy of main: replace what it copied rather than mix with it.
    replace = args.overwrite or created_branch
    if not (args.create_pr or replace) and _holds_model(api, args.repo_id, revision):
        raise ConfigError(
            f"{args.repo_id}@{revision} already holds a model: pass --overwrite to replace it, --revision <branch> "
            "to push beside it, or --create_pr to propose it"
        )
    message = args.commit_message or f"Upload {variant} fine-tuned with st-bge"
    try:
        commit = api.upload_folder(
            repo_id=args.repo_id,
            folder_path=staging,
            revision=revision,
            commit_message=message,
            create_pr=args.create_pr,
            delete_patterns="*" if replace else None,  # the branch ends up exactly the staged folder
        )
    except HfHubHTTPError as error:
        if created_repo:
            api.delete_repo(args.repo_id)
        elif created_branch:
            api.delete_branch(args.repo_id, branch=revision)
        raise HubError(
            f"uploading the {variant} to {args.repo_id}@{revision} failed and the Hub repository was left as it was: "
            f"{_first_line(error)}"
        ) from None
    logger.info("Pushed the %s to %s (%s)", variant, commit.commit_url, revision)
    return commit


def _branch_exists(api: HfApi, repo_id: str, revision: str) -> bool:
    try:
        api.repo_info(repo_id, revision=revision)
    except RevisionNotFoundError:
        return False
    return True


def _holds_model(api: HfApi, repo_id: str, revision: str) -> bool:
    return any(name in MODEL_FILES for name in api.list_repo_files(repo_id, revision=revision))


def _first_line(error: Exception) -> str:
    """The Hub's own message, without the request ids and URLs that follow it."""
    return str(error).strip().splitlines()[0]
