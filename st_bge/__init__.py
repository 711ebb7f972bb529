"""st-bge: fine-tune BGE embedding models for a retrieval domain, the sentence-transformers way.

The stages: `config` (recipes) -> `data` (`synthesis`: pairs for a corpus without queries) -> `modeling`
(+ LoRA; `m3`: BGE-M3, one package) -> `losses` -> `training` (SentenceTransformerTrainer) -> `evaluation` (ranx)
-> `model_card` -> `merging` (back toward the base) -> `publish` -> `serving`; `commands` (and `cli`, which
gathers them) sit on top and run them.

The public API is what the `st-bge` command calls, one function per subcommand, each taking the parsed recipe
(or arguments) dataclass:

    from st_bge import parse_recipe, check_data, mine, score, train
    recipe = parse_recipe(["--config", "recipes/quickstart.yaml", "--num_train_epochs", "1"])
    check_data(recipe)   # st-bge data check: PreparedData (the rows, a quality report per source)
    mine(recipe)         # st-bge data mine:  MinedData (trainable files + reports in mine_output_dir)
    score(recipe)        # st-bge data score: ScoredData (teacher scores for kd_loss in score_output_dir)

    from st_bge import synth, parse_synth_recipe            # st-bge data synth: SynthResult (pairs from a bare corpus)
    train(recipe)        # st-bge train:      TrainResult (model, trainer, base vs fine-tuned comparison)

    from st_bge import evaluate, parse_eval_recipe          # st-bge eval: one SetResult per retrieval set
    from st_bge import merge, parse_merge_arguments         # st-bge merge: base + w * (fine-tuned - base), its folder
    from st_bge import push, parse_push_arguments           # st-bge push: one PushResult per variant
    from st_bge import export, parse_export_arguments       # st-bge export: ONNX + int8, one OnnxCheck per file
    from st_bge import serve, parse_serve_arguments         # st-bge serve: OpenAI-compatible /v1/embeddings
    from st_bge import check_endpoint, parse_endpoint_check_arguments  # st-bge check-endpoint: one EndpointCheck per side
    from st_bge import BGEM3Model, M3Embeddings             # BGE-M3's three modes in sentence-transformers terms

Each is imported on first use, so that `import st_bge` and `st-bge --help` stay fast.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0.dev0"

# Public name -> (module, attribute).
_PUBLIC = {
    "parse_recipe": ("st_bge.config", "parse_recipe"),
    "parse_data_recipe": ("st_bge.config", "parse_data_recipe"),
    "parse_synth_recipe": ("st_bge.config", "parse_synth_recipe"),
    "parse_eval_recipe": ("st_bge.config", "parse_eval_recipe"),
    "parse_merge_arguments": ("st_bge.config", "parse_merge_arguments"),
    "parse_push_arguments": ("st_bge.config", "parse_push_arguments"),
    "parse_export_arguments": ("st_bge.config", "parse_export_arguments"),
    "parse_serve_arguments": ("st_bge.config", "parse_serve_arguments"),
    "parse_endpoint_check_arguments": ("st_bge.config", "parse_endpoint_check_arguments"),
    "check_data": ("st_bge.data.preparation", "check_data"),
    "mine": ("st_bge.data.preparation", "mine"),
    "score": ("st_bge.data.scoring", "score"),
    "synth": ("st_bge.synthesis.pipeline", "synth"),
    "train": ("st_bge.training", "train"),
    "evaluate": ("st_bge.evaluation.evaluate", "evaluate_models"),
    "merge": ("st_bge.merging", "merge"),
    "push": ("st_bge.publish", "push"),
    "export": ("st_bge.onnx_export", "export_model"),
    "serve": ("st_bge.serving.app", "serve"),
    "check_endpoint": ("st_bge.serving.check", "check_endpoint"),
    "BGEM3Model": ("st_bge.m3", "BGEM3Model"),
    "M3Embeddings": ("st_bge.m3", "M3Embeddings"),
}
__all__ = ["__version__", *_PUBLIC]


def __getattr__(name: str) -> Any:
    if name in _PUBLIC:
        module, attribute = _PUBLIC[name]
        return getattr(importlib.import_module(module), attribute)
    raise AttributeError(f"module 'st_bge' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)
