"""Prometheus metrics of `st-bge serve` (`GET /metrics`), in a registry of the server's own.

Names follow Prometheus' conventions (`st_bge_` prefix, `_total` counters, `_seconds` and `_bytes` units); the
server's own registry keeps two servers in one process (tests, benchmarks) apart.
"""

from __future__ import annotations

import resource
import sys

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest

CONTENT_TYPE = CONTENT_TYPE_LATEST
_POWERS_OF_TWO = tuple(float(2**i) for i in range(13))


def peak_rss_bytes() -> int:
    """This process's peak resident memory (Linux reports kilobytes, macOS bytes)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024


class ServerMetrics:
    """The counters, histograms and gauges the server updates."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        registry = self.registry
        self.requests = Counter(
            "st_bge_requests", "Requests by endpoint and HTTP status", ["endpoint", "status"], registry=registry
        )
        self.latency = Histogram(
            "st_bge_request_duration_seconds",
            "Time from request to response",
            ["endpoint"],
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0),
            registry=registry,
        )
        self.texts = Counter("st_bge_texts", "Texts embedded (cache hits included)", registry=registry)
        self.tokens = Counter(
            "st_bge_prompt_tokens", "Tokens of the texts embedded, as usage reports", registry=registry
        )
        self.cache_hits = Counter("st_bge_cache_hits", "Texts answered from the LRU cache", registry=registry)
        self.cache_misses = Counter("st_bge_cache_misses", "Texts the model embedded", registry=registry)
        self.batch_texts = Histogram(
            "st_bge_batch_texts", "Texts per forward pass", buckets=_POWERS_OF_TWO, registry=registry
        )
        self.batch_tokens = Histogram(
            "st_bge_batch_padded_tokens",
            "Padded tokens (texts x longest) per forward pass",
            buckets=tuple(float(2**i) for i in range(4, 18)),
            registry=registry,
        )
        self.queued = Gauge("st_bge_queued_texts", "Texts waiting for a forward pass", registry=registry)
        self.ready = Gauge("st_bge_model_ready", "1 once the model is loaded", registry=registry)
        Gauge(
            "st_bge_peak_resident_memory_bytes", "Peak resident memory of the process", registry=registry
        ).set_function(peak_rss_bytes)

    def on_batch(self, texts: int, padded_tokens: int) -> None:
        self.batch_texts.observe(texts)
        self.batch_tokens.observe(padded_tokens)

    def exposition(self) -> bytes:
        return generate_latest(self.registry)
