"""`st-bge serve`: the FastAPI app and its uvicorn server.

Endpoints:
- `POST /v1/embeddings`: OpenAI's embeddings API with st-bge's extensions (`st_bge.serving.protocol`);
- `GET /v1/models`: the names `model` may take;
- `GET /health`: 200 once the model is loaded, 503 before (the server listens while it loads, so an orchestrator
  sees it start and knows when to route to it);
- `GET /metrics`: Prometheus text (`st_bge.serving.metrics`).

A request's texts are looked up in the LRU cache by (text, side, extras) first (a text twice in one request is
embedded once); the rest go to the `DynamicBatcher`. On SIGTERM or SIGINT uvicorn stops accepting connections and
lets the requests in flight finish (`graceful_shutdown_s`) before the batcher stops.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response

from st_bge.config import ServeArguments
from st_bge.errors import ConfigError
from st_bge.modeling import resolve_model_path
from st_bge.serving.batching import DynamicBatcher, LRUCache
from st_bge.serving.metrics import CONTENT_TYPE, ServerMetrics
from st_bge.serving.model import Embedding, ServedModel, load_served_model
from st_bge.serving.protocol import (
    EmbeddingRequest,
    Limits,
    RequestError,
    check_lengths,
    embedding_response,
    parse_request,
    served_model_names,
)

logger = logging.getLogger(__name__)

EMBEDDINGS = "/v1/embeddings"


class ServerState:
    """The model once loaded, its batcher and cache, and the metrics."""

    def __init__(self, args: ServeArguments) -> None:
        self.args = args
        self.metrics = ServerMetrics()
        self.cache = LRUCache(args.cache_size)
        self.served: ServedModel | None = None
        self.batcher: DynamicBatcher | None = None
        self.limits: Limits | None = None
        self.load_error: str | None = None

    def ready(self, served: ServedModel) -> None:
        args = self.args
        self.served = served
        self.limits = Limits(
            max_inputs=args.max_inputs_per_request,
            max_input_tokens=args.max_input_tokens or served.max_seq_length,
            default_side=args.default_input_type,
            truncatable=args.truncatable,
        )
        self.batcher = DynamicBatcher(
            served.embed,
            max_batch_size=args.max_batch_size or default_max_batch_size(served),
            max_batch_tokens=args.max_batch_tokens,
            wait_s=args.batch_wait_ms / 1000,
            batching=args.batching,
            on_batch=self.metrics.on_batch,
        )
        self.metrics.ready.set(1)
        self.metrics.queued.set_function(lambda: self.batcher.queued)

    def require_ready(self) -> ServedModel:
        if self.served is None:
            status = f"failed to load: {self.load_error}" if self.load_error else "loading"
            raise RequestError(f"the model is not ready ({status})", status=503, code="model_not_ready")
        return self.served

    async def embed(self, request: EmbeddingRequest, token_counts: list[int]) -> list[Embedding]:
        """Each text's embedding: from the cache where it is there, else from the batcher (each distinct text once).

        `token_counts` are what the model reads of each text (truncated at max_seq_length)."""
        keys = [(text, request.side, request.extras) for text in request.texts]
        found = {key: self.cache.get(key) for key in keys}
        self.metrics.cache_hits.inc(sum(found[key] is not None for key in keys))
        missing = [key for key, value in found.items() if value is None]
        if missing:
            self.metrics.cache_misses.inc(len(missing))
            tokens = dict(zip(keys, token_counts, strict=True))
            texts = [text for text, _, _ in missing]
            embedded = await self.batcher.embed(texts, [tokens[key] for key in missing], request.side, request.extras)
            for key, embedding in zip(missing, embedded, strict=True):
                found[key] = embedding
                self.cache.put(key, embedding)
        return [found[key] for key in keys]


def default_max_batch_size(served: ServedModel) -> int:
    """Texts per forward pass when the user sets none. On 2 CPU cores, 16 clients sending 8 texts per request
    (benchmarks/serve_load.py) got 102 texts/s with passes of at most 8, 95 with 16, 61 with 64, and 72 with one
    pass per request: a CPU's forward pass costs the same per text at any batch size, and larger passes only add
    waiting. A GPU's is far cheaper per text in large batches (not measured here)."""
    return 256 if served.model.device.type == "cuda" else 8


def create_app(
    args: ServeArguments,
    load: Callable[[], ServedModel] | None = None,
    on_load_failure: Callable[[BaseException], None] | None = None,
) -> FastAPI:
    """The server's app; `load` (default: `load_served_model(args)`) runs in a thread at start-up."""
    state = ServerState(args)
    load = load or (lambda: load_served_model(args))

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        loading = asyncio.get_running_loop().run_in_executor(None, load)

        def loaded(future: asyncio.Future) -> None:
            if future.cancelled():
                return
            error = future.exception()
            if error is None:
                state.ready(future.result())
                logger.info("Model ready: %s", state.served.name)
                return
            state.load_error = str(error)
            logger.error("Could not load the model: %s", error)
            if on_load_failure is not None:
                on_load_failure(error)

        loading.add_done_callback(loaded)
        yield
        if state.batcher is not None:
            await state.batcher.close()

    app = FastAPI(title="st-bge", summary="OpenAI-compatible embeddings of a fine-tuned BGE model", lifespan=lifespan)
    app.state.server = state

    @app.post(EMBEDDINGS)
    async def embeddings(request: Request) -> Response:
        start = time.perf_counter()
        status = 200
        try:
            served = state.require_ready()
            try:
                body = await request.json()
            except (json.JSONDecodeError, UnicodeDecodeError) as error:
                raise RequestError(f"the request body is not valid JSON ({error})") from None
            parsed = parse_request(body, served, state.limits)
            token_counts = served.token_counts(parsed.texts, parsed.side)
            check_lengths(parsed, token_counts, state.limits, served.max_seq_length)
            read = [min(count, served.max_seq_length) for count in token_counts]  # what the model reads
            results = await state.embed(parsed, read)
            state.metrics.texts.inc(len(results))
            state.metrics.tokens.inc(sum(read))
            return JSONResponse(embedding_response(parsed, results, served, sum(read)))
        except RequestError as error:
            status = error.status
            return JSONResponse(error.body(), status_code=error.status)
        except Exception:
            status = 500
            logger.exception("Embedding request failed")
            body = RequestError("internal error: the forward pass failed (see the server log)", status=500).body()
            body["error"]["type"] = "server_error"
            return JSONResponse(body, status_code=500)
        finally:
            state.metrics.requests.labels(EMBEDDINGS, str(status)).inc()
            state.metrics.latency.labels(EMBEDDINGS).observe(time.perf_counter() - start)

    @app.get("/v1/models")
    async def models() -> Response:
        served = state.served
        names = served_model_names(served) if served is not None else []
        return JSONResponse(
            {"object": "list", "data": [{"id": name, "object": "model", "owned_by": "st-bge"} for name in names]}
        )

    @app.get("/health")
    async def health() -> Response:
        if state.served is None:
            status = "failed" if state.load_error else "loading"
            return JSONResponse({"status": status, "error": state.load_error}, status_code=503)
        served = state.served
        return JSONResponse(
            {
                "status": "ok",
                "model": served.name,
                "dimensions": served.dimension,
                "backend": served.backend,
                "extras": served.extras,
                "max_input_tokens": state.limits.max_input_tokens,
            }
        )

    @app.get("/metrics")
    async def metrics() -> Response:
        return Response(state.metrics.exposition(), media_type=CONTENT_TYPE)

    return app


def serve(args: ServeArguments) -> None:
    """`st-bge serve`: run the server until SIGTERM or SIGINT.

    Raises:
        ConfigError: the model is not a folder st-bge can serve, or could not be loaded.
    """
    import uvicorn

    resolve_model_path(args.model, field="model")  # a missing folder or an unreachable Hub: before binding a port
    failure: list[BaseException] = []
    server: uvicorn.Server | None = None

    def stop(error: BaseException) -> None:
        failure.append(error)
        server.should_exit = True

    app = create_app(args, on_load_failure=stop)
    config = uvicorn.Config(
        app, host=args.host, port=args.port, timeout_graceful_shutdown=args.graceful_shutdown_s, log_level="info"
    )
    server = uvicorn.Server(config)
    server.run()
    if failure:
        error = failure[0]
        if isinstance(error, ConfigError):
            raise error
        raise ConfigError(f"could not load {args.model}: {error}") from error
