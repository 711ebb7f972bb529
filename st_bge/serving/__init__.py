"""`st-bge serve`: an OpenAI-compatible embeddings server for what st-bge trains (extra `st-bge[serve]`).

`model` loads the model and embeds as `encode_query` / `encode_document` do, `protocol` speaks OpenAI's embeddings
API (and st-bge's extensions), `batching` shares forward passes between concurrent requests, `metrics` counts for
Prometheus, `app` puts them behind FastAPI and uvicorn, and `check` compares any OpenAI-compatible endpoint
(st-bge's, text-embeddings-inference, vLLM) with the local model. docs/serving.md is the user's guide.
"""
