"""OpenAI's embeddings API as `st-bge serve` speaks it: the request checked field by field, the response shaped.

`POST /v1/embeddings` takes OpenAI's fields (`input`: a text or a list of texts, `model`, `encoding_format`
float | base64, `dimensions`, `user`), so the official `openai` client and the OpenAI-compatible embedding classes
of LangChain and LlamaIndex work unchanged, plus st-bge's extensions:

- `input_type`: "query" or "document", the side whose prompt is applied (a BGE v1.5 query instruction, a
  fine-tune's query prompt); a `model` of `NAME:query` or `NAME:document` says the same, for clients that send
  nothing but `model` (LlamaIndex's OpenAIEmbedding takes a query and a text model name).
- `truncate`: embed the first max_seq_length tokens of a text that is longer, instead of refusing it.
- `return_sparse`, `return_colbert_vecs` (FlagEmbedding's argument names), for a model with BGE-M3 heads: each
  item then also carries `lexical_weights` (`{token id: weight}`) and `colbert_vecs` (one vector per token).

A request that cannot be served gets one `RequestError` that names the field (or the input, by index) and the way
forward, in OpenAI's error shape, never a 500.
"""

from __future__ import annotations

import base64
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from st_bge.errors import did_you_mean
from st_bge.serving.model import SIDES, Embedding, ServedModel

OPENAI_FIELDS = ("input", "model", "encoding_format", "dimensions", "user")
EXTENSION_FIELDS = ("input_type", "truncate", "return_sparse", "return_colbert_vecs")
# Request flag -> the extra it asks for (st_bge.serving.model.EXTRAS).
EXTRA_FLAGS = {"return_sparse": "lexical_weights", "return_colbert_vecs": "colbert_vecs"}
ENCODING_FORMATS = ("float", "base64")


class RequestError(Exception):
    """A request the server refuses: HTTP `status` with OpenAI's error body."""

    def __init__(self, message: str, *, param: str | None = None, status: int = 400, code: str = "invalid_request"):
        super().__init__(message)
        self.message = message
        self.param = param
        self.status = status
        self.code = code

    def body(self) -> dict[str, Any]:
        return {
            "error": {"message": self.message, "type": "invalid_request_error", "param": self.param, "code": self.code}
        }


@dataclass(frozen=True)
class Limits:
    """What one request may ask for."""

    max_inputs: int
    max_input_tokens: int
    default_side: str
    truncatable: bool


@dataclass(frozen=True)
class EmbeddingRequest:
    """A checked request: the texts, their side, and how to answer."""

    texts: list[str]
    side: str
    model: str
    encoding_format: str
    dimensions: int | None
    truncate: bool
    extras: tuple[str, ...]


def parse_request(body: Any, served: ServedModel, limits: Limits) -> EmbeddingRequest:
    """`body` (the decoded JSON) as an `EmbeddingRequest`, or the `RequestError` of its first problem.

    Raises:
        RequestError: an unknown field, a missing or ill-typed one, a model not served, an empty text, too many
            texts, `dimensions` the model was not trained for, extras it has no head for.
    """
    if not isinstance(body, dict):
        raise RequestError("the request body must be a JSON object")
    known = (*OPENAI_FIELDS, *EXTENSION_FIELDS)
    for name in body:
        if name not in known:
            raise RequestError(
                f"unknown field '{name}'{did_you_mean(name, known)}; fields: {', '.join(known)}", param=name
            )
    for name in ("input", "model"):
        if name not in body:
            raise RequestError(f"'{name}' is required", param=name)
    model_side = _model_side(body["model"], served.name)
    side = _side(body.get("input_type"), model_side, limits.default_side)
    texts = _texts(body["input"], limits.max_inputs)
    encoding_format = body.get("encoding_format") or "float"
    if encoding_format not in ENCODING_FORMATS:
        raise RequestError(
            f"'encoding_format' must be one of {', '.join(ENCODING_FORMATS)}, not {encoding_format!r}",
            param="encoding_format",
        )
    return EmbeddingRequest(
        texts=texts,
        side=side,
        model=body["model"],
        encoding_format=encoding_format,
        dimensions=_dimensions(body.get("dimensions"), served, limits.truncatable),
        truncate=_boolean(body, "truncate"),
        extras=_extras(body, served),
    )


def check_lengths(request: EmbeddingRequest, token_counts: Sequence[int], limits: Limits, max_seq_length: int) -> None:
    """Refuse a text over the token limit, unless the request asked to truncate.

    Raises:
        RequestError: naming the first text that is too long, its length and both ways forward.
    """
    if request.truncate:
        return
    for index, count in enumerate(token_counts):
        if count > limits.max_input_tokens:
            raise RequestError(
                f"input[{index}] has {count} tokens (prompt and special tokens included); the limit is "
                f'{limits.max_input_tokens} (--max_input_tokens): shorten it, or set "truncate": true to embed '
                f"its first {max_seq_length} tokens",
                param=f"input[{index}]",
                code="input_too_long",
            )


def embedding_response(
    request: EmbeddingRequest, embeddings: Sequence[Embedding], served: ServedModel, prompt_tokens: int
) -> dict[str, Any]:
    """OpenAI's response body (`object: list` of `object: embedding`, `usage`), with the extras asked for."""
    data = []
    for index, embedding in enumerate(embeddings):
        vector = _truncated(embedding.dense, request.dimensions, served.normalized)
        item: dict[str, Any] = {"object": "embedding", "index": index, "embedding": _encoded(vector, request)}
        if "lexical_weights" in request.extras:
            item["lexical_weights"] = embedding.lexical_weights
        if "colbert_vecs" in request.extras:
            item["colbert_vecs"] = embedding.colbert_vecs.tolist()
        data.append(item)
    return {
        "object": "list",
        "data": data,
        "model": request.model,
        "usage": {"prompt_tokens": prompt_tokens, "total_tokens": prompt_tokens},
    }


def served_model_names(served: ServedModel) -> list[str]:
    """The names `model` may take: the model's, and one per side."""
    return [served.name, *(f"{served.name}:{side}" for side in SIDES)]


def _model_side(model: Any, name: str) -> str | None:
    if isinstance(model, str):
        base, _, side = model.rpartition(":") if model.endswith(tuple(f":{s}" for s in SIDES)) else (model, "", "")
        if base == name:
            return side or None
    raise RequestError(
        f"model {model!r} is not served here; this server serves '{name}' (and '{name}:query', '{name}:document' "
        "for one side)",
        param="model",
        status=404,
        code="model_not_found",
    )


def _side(input_type: Any, model_side: str | None, default: str) -> str:
    if input_type is None:
        return model_side or default
    if input_type not in SIDES:
        raise RequestError(f"'input_type' must be 'query' or 'document', not {input_type!r}", param="input_type")
    if model_side is not None and model_side != input_type:
        raise RequestError(
            f"'input_type' {input_type!r} contradicts the model's side ({model_side!r}): give one of them",
            param="input_type",
        )
    return input_type


def _texts(value: Any, max_inputs: int) -> list[str]:
    texts = [value] if isinstance(value, str) else value
    if not isinstance(texts, list):
        raise RequestError(f"'input' must be a string or a list of strings, not {type(value).__name__}", param="input")
    if not texts:
        raise RequestError("'input' is an empty list", param="input")
    if len(texts) > max_inputs:
        raise RequestError(
            f"'input' has {len(texts)} texts; this server takes at most {max_inputs} per request "
            "(--max_inputs_per_request): send them in several requests",
            param="input",
        )
    for index, text in enumerate(texts):
        if isinstance(text, int) or (isinstance(text, list) and all(isinstance(t, int) for t in text)):
            raise RequestError(
                "'input' holds token ids; this server embeds text (LangChain's OpenAIEmbeddings sends token ids "
                "unless check_embedding_ctx_length=False)",
                param=f"input[{index}]",
            )
        if not isinstance(text, str):
            raise RequestError(f"input[{index}] is a {type(text).__name__}, not a string", param=f"input[{index}]")
        if not text.strip():
            raise RequestError(f"input[{index}] is empty (or only whitespace)", param=f"input[{index}]")
    return texts


def _dimensions(value: Any, served: ServedModel, truncatable: bool) -> int | None:
    if value is None or value == served.dimension:
        return None
    if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= served.dimension:
        raise RequestError(
            f"'dimensions' must be an integer from 1 to {served.dimension}, not {value!r}", param="dimensions"
        )
    if not truncatable:
        raise RequestError(
            f"'dimensions' {value}: this model gives {served.dimension} and is not served as trained for truncated "
            "embeddings; start the server with --truncatable true if it was (Matryoshka)",
            param="dimensions",
        )
    return value


def _boolean(body: dict[str, Any], name: str) -> bool:
    value = body.get(name, False)
    if not isinstance(value, bool):
        raise RequestError(f"'{name}' must be true or false, not {value!r}", param=name)
    return value


def _extras(body: dict[str, Any], served: ServedModel) -> tuple[str, ...]:
    extras = []
    for flag, extra in EXTRA_FLAGS.items():
        if not _boolean(body, flag):
            continue
        if extra not in served.extras:
            why = (
                "the onnx backend serves dense embeddings only"
                if served.backend == "onnx"
                else f"this model has no {'sparse' if extra == 'lexical_weights' else 'ColBERT'} head"
            )
            raise RequestError(f"'{flag}': {why}", param=flag)
        extras.append(extra)
    return tuple(extras)


def _truncated(vector: np.ndarray, dimensions: int | None, normalized: bool) -> np.ndarray:
    """The first `dimensions` of a vector, unit length again when the model's are (dot product = cosine)."""
    if dimensions is None:
        return vector
    vector = vector[:dimensions]
    return vector / np.linalg.norm(vector) if normalized else vector


def _encoded(vector: np.ndarray, request: EmbeddingRequest) -> list[float] | str:
    if request.encoding_format == "base64":
        return base64.b64encode(vector.astype("<f4").tobytes()).decode("ascii")
    return vector.astype(np.float32).tolist()
