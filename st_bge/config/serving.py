"""# Serve and # Check endpoint: the embeddings server and the comparison of an endpoint with the local model."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from st_bge.config.parser import Argv, parse_section


@dataclass
class ServeArguments:
    """# Serve: an OpenAI-compatible embeddings server for a trained model (`st-bge serve`, extra `st-bge[serve]`)."""

    model: str = field(
        metadata={
            "help": "What `st-bge train` wrote (adapter or full model, merged on load), a model folder or a Hub id.",
            "aliases": ["--model_dir"],
        }
    )
    host: str = field(default="127.0.0.1", metadata={"help": "Address to listen on (0.0.0.0: every interface)."})
    port: int = field(default=8000, metadata={"help": "Port to listen on."})
    served_model_name: str | None = field(
        default=None,
        metadata={
            "help": "The `model` requests name (default: the folder's name or the Hub id); NAME:query and "
            "NAME:document pick a side."
        },
    )
    backend: Literal["torch", "onnx"] = field(
        default="torch", metadata={"help": "torch, or onnx: the int8 file `st-bge export` writes (dense only)."}
    )
    onnx_file: str | None = field(
        default=None, metadata={"help": "The ONNX file of --backend onnx (default: <model>/onnx/model_qint8.onnx)."}
    )
    device: str | None = field(default=None, metadata={"help": "torch device (default: CUDA if there is one)."})
    default_input_type: Literal["query", "document"] = field(
        default="document",
        metadata={"help": "The side of a request that names none (`input_type`): its prompt is applied."},
    )
    truncatable: bool = field(
        default=False,
        metadata={"help": "The model was trained for truncated embeddings (Matryoshka): accept `dimensions`."},
    )
    max_inputs_per_request: int = field(default=2048, metadata={"help": "Most texts one request may carry."})
    max_input_tokens: int | None = field(
        default=None,
        metadata={
            "help": "Most tokens (prompt included) per text; longer ones are refused unless the request sets "
            "`truncate` (default: the model's max_seq_length)."
        },
    )
    batching: bool = field(
        default=True,
        metadata={
            "help": "Merge the texts of concurrent requests into shared forward passes (false: one forward "
            "pass per request)."
        },
    )
    max_batch_tokens: int = field(
        default=16384, metadata={"help": "Token budget of one forward pass: texts x longest text (padding included)."}
    )
    max_batch_size: int | None = field(
        default=None,
        metadata={
            "help": "Most texts in one forward pass (default: 8 on CPU, where larger passes were slower "
            "(benchmarks/HISTORY.md), 256 on a GPU)."
        },
    )
    batch_wait_ms: float = field(
        default=0.0,
        metadata={
            "help": "How long a forward pass waits for more texts once one is queued (0: run with what is "
            "queued; texts that arrive meanwhile join the next pass)."
        },
    )
    cache_size: int = field(
        default=10_000, metadata={"help": "Embeddings kept in the LRU cache, by (text, side, outputs); 0: none."}
    )
    graceful_shutdown_s: float = field(
        default=30.0, metadata={"help": "On SIGTERM/SIGINT, how long requests in flight may take to finish."}
    )


@dataclass
class EndpointCheckArguments:
    """# Endpoint check: does an OpenAI-compatible embeddings endpoint give the local model's vectors
    (`st-bge check-endpoint`)?"""

    base_url: str = field(metadata={"help": "The endpoint's OpenAI base URL, e.g. http://127.0.0.1:8000/v1."})
    model: str = field(
        metadata={
            "help": "The local model it should match: an st-bge output folder or a Hub id.",
            "aliases": ["--model_dir"],
        }
    )
    endpoint_model: str | None = field(
        default=None, metadata={"help": "The `model` to request (default: the first the endpoint lists)."}
    )
    check_dataset: str | None = field(
        default=None,
        metadata={
            "help": "Texts to compare (a BEIR folder, pairs or FlagEmbedding data: its queries and documents; "
            "default: a built-in sample in English, Chinese and Python)."
        },
    )
    max_texts: int = field(default=256, metadata={"help": "Most texts compared per side."})
    prompts: Literal["client", "server"] = field(
        default="client",
        metadata={
            "help": "client: send each text with its side's prompt prepended (what an endpoint that applies "
            "none needs: text-embeddings-inference, vLLM); server: send st-bge's `input_type`."
        },
    )
    api_key_env: str = field(
        default="OPENAI_API_KEY",
        metadata={"help": "Environment variable holding the endpoint's key, if it needs one."},
    )
    min_cosine: float = field(
        default=0.999, metadata={"help": "Lowest cosine to the local vector that passes (exit code 1 below it)."}
    )
    batch_size: int = field(default=32, metadata={"help": "Texts per request."})


def parse_serve_arguments(argv: Argv = None, *, prog: str | None = None, usage: str | None = None) -> ServeArguments:
    """Parse `st-bge serve` flags (or a YAML of them)."""
    return parse_section(ServeArguments, argv, prog, usage)


def parse_endpoint_check_arguments(
    argv: Argv = None, *, prog: str | None = None, usage: str | None = None
) -> EndpointCheckArguments:
    """Parse `st-bge check-endpoint` flags (or a YAML of them)."""
    return parse_section(EndpointCheckArguments, argv, prog, usage)
