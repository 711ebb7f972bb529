"""`st-bge check-endpoint`: does an OpenAI-compatible endpoint give the local model's vectors?

Point it at whatever serves the model (`st-bge serve`, text-embeddings-inference, vLLM, a hosted copy): it embeds
the same queries and documents there and locally (as `st-bge serve` would, `st_bge.serving.model`) and reports the
cosine of each pair. A wrong pooling, a lost query prompt, a half-precision engine or an int8 file shows as a
cosine below 1, and a cosine under `min_cosine` (0.999) fails the check.

The key, if the endpoint needs one, is read from the environment (`api_key_env`) and only sent to the endpoint.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass

import numpy as np

from st_bge.config import EndpointCheckArguments, ServeArguments
from st_bge.data import load_retrieval_set
from st_bge.errors import ConfigError
from st_bge.serving.model import SIDES, load_served_model

# Texts to compare when no dataset is given: short and long, English, Chinese and code.
SAMPLE_TEXTS = {
    "query": [
        "how do I reverse a list in python?",
        "What is the capital of Australia?",
        "高血压患者可以吃鸡蛋吗？",
        "difference between a process and a thread",
    ],
    "document": [
        "def reverse(xs):\n    return xs[::-1]",
        "Canberra is the capital city of Australia, chosen in 1908 as a compromise between Sydney and Melbourne.",
        "高血压患者可以适量吃鸡蛋，每天一个为宜，同时注意控制胆固醇的摄入。",
        "A process has its own address space; threads of one process share memory and are cheaper to switch.",
    ],
}


@dataclass(frozen=True)
class EndpointCheck:
    """How close the endpoint's vectors of one side are to the local model's."""

    side: str
    texts: int
    cosine_min: float
    cosine_mean: float
    max_abs_diff: float
    passed: bool

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


def check_endpoint(args: EndpointCheckArguments) -> list[EndpointCheck]:
    """Embed each side's texts at the endpoint and locally; one `EndpointCheck` per side.

    Raises:
        ConfigError: the endpoint cannot be reached, lists no model, or answers with another dimension.
    """
    import openai

    served = load_served_model(ServeArguments(model=args.model, device="cpu"))
    texts = _texts(args)
    client = openai.OpenAI(base_url=args.base_url, api_key=os.environ.get(args.api_key_env) or "not-needed")
    try:
        endpoint_model = args.endpoint_model or client.models.list().data[0].id
        checks = []
        for side in SIDES:
            local = np.stack([embedding.dense for embedding in served.embed(texts[side], side)])
            remote = _remote(client, endpoint_model, texts[side], side, served.prompts[side], args)
            if remote.shape != local.shape:
                raise ConfigError(
                    f"{args.base_url} gives {remote.shape[1]}-dimensional vectors for model {endpoint_model!r}; "
                    f"{args.model} gives {local.shape[1]}: is it serving this model?"
                )
            cosine = (local * remote).sum(1) / (np.linalg.norm(local, axis=1) * np.linalg.norm(remote, axis=1))
            checks.append(
                EndpointCheck(
                    side=side,
                    texts=len(texts[side]),
                    cosine_min=float(cosine.min()),
                    cosine_mean=float(cosine.mean()),
                    max_abs_diff=float(np.abs(local - remote).max()),
                    passed=bool(cosine.min() >= args.min_cosine),
                )
            )
    except (openai.APIConnectionError, openai.APIStatusError, IndexError) as error:
        raise ConfigError(f"{args.base_url}: {error or 'the endpoint lists no model'}") from None
    return checks


def _texts(args: EndpointCheckArguments) -> dict[str, list[str]]:
    if args.check_dataset is None:
        return SAMPLE_TEXTS
    retrieval = load_retrieval_set(args.check_dataset)
    return {
        "query": list(retrieval.queries.values())[: args.max_texts],
        "document": list(retrieval.corpus.values())[: args.max_texts],
    }


def _remote(client, model: str, texts: list[str], side: str, prompt: str, args: EndpointCheckArguments) -> np.ndarray:
    """The endpoint's vectors of `texts`, requested `batch_size` at a time, in float."""
    vectors = []
    for start in range(0, len(texts), args.batch_size):
        batch = texts[start : start + args.batch_size]
        if args.prompts == "client":
            request = {"input": [prompt + text for text in batch]}
        else:
            request = {"input": batch, "extra_body": {"input_type": side}}
        response = client.embeddings.create(model=model, encoding_format="float", **request)
        vectors += [item.embedding for item in sorted(response.data, key=lambda item: item.index)]
    return np.asarray(vectors, dtype=np.float32)
