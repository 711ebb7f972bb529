"""# Push and # Export: publishing an output folder to the Hub, and exporting a model to ONNX."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from st_bge.config.parser import Argv, parse_section


@dataclass
class PushArguments:
    """# Push: publish a training output folder to the Hub (`st-bge push`; a recipe's `push_to_hub` uses the
    Trainer's `hub_model_id`, `hub_private_repo` and `hub_revision` with these defaults)."""

    model_dir: str = field(
        metadata={"help": "The folder `st-bge train` wrote (adapter or full model).", "aliases": ["--model"]}
    )
    repo_id: str = field(metadata={"help": "Hub repository, 'user/name' or 'org/name'; created if missing."})
    variant: Literal["adapter", "merged", "both"] = field(
        default="adapter",
        metadata={
            "help": "'adapter': the LoRA adapter with the Sentence Transformers config (loads the base model from "
            "the Hub, needs peft); 'merged': the base model with the adapter merged in (no peft needed); 'both': "
            "the adapter on `revision` and the merged model on `merged_revision`."
        },
    )
    private: bool = field(default=False, metadata={"help": "Create the repository as private."})
    revision: str | None = field(
        default=None, metadata={"help": "Branch to push to (created from main if missing); default: main."}
    )
    merged_revision: str = field(default="merged", metadata={"help": "Branch of the merged model with variant both."})
    create_pr: bool = field(
        default=False, metadata={"help": "Open a pull request instead of committing to the branch."}
    )
    overwrite: bool = field(
        default=False,
        metadata={
            "help": "Replace a model already on the branch (its files are deleted in the same commit); without it, "
            "pushing onto a model is refused: use another --revision or --create_pr."
        },
    )
    base_model: str | None = field(
        default=None,
        metadata={
            "help": "Hub id of the base model, written into adapter_config.json in place of a local path; default: "
            "the one the training recipe named."
        },
    )
    commit_message: str | None = field(default=None, metadata={"help": "Commit message; default: a summary."})
    onnx: bool = field(
        default=False,
        metadata={"help": "Also export the merged model to ONNX (onnx/model.onnx) and int8 (onnx/model_qint8.onnx)."},
    )


@dataclass
class ExportArguments:
    """# Export: ONNX and int8 ONNX files of a model, checked against PyTorch (`st-bge export`)."""

    model_dir: str = field(
        metadata={"help": "A model folder (an adapter is merged into its base model first).", "aliases": ["--model"]}
    )
    output_dir: str = field(metadata={"help": "Where model.onnx, model_qint8.onnx and onnx_check.json go."})
    quantize: bool = field(default=True, metadata={"help": "Also write the dynamic int8 quantisation."})
    check_dataset: str | None = field(
        default=None,
        metadata={
            "help": "Texts to check the export on (a BEIR folder's corpus, or pairs/FlagEmbedding documents): cosine "
            "agreement with PyTorch and encoding speed of each file."
        },
    )
    batch_size: int = field(default=32, metadata={"help": "Encoding batch size of the check."})
    overwrite_output_dir: bool = field(default=False, metadata={"help": "Allow a non-empty output_dir."})


def parse_push_arguments(argv: Argv = None, *, prog: str | None = None, usage: str | None = None) -> PushArguments:
    """Parse `st-bge push` flags (or a YAML of them)."""
    return parse_section(PushArguments, argv, prog, usage)


def parse_export_arguments(argv: Argv = None, *, prog: str | None = None, usage: str | None = None) -> ExportArguments:
    """Parse `st-bge export` flags (or a YAML of them)."""
    return parse_section(ExportArguments, argv, prog, usage)
