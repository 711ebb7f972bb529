"""Load test of `st-bge serve` on loopback: dynamic batching vs one forward pass per request, in one run.

    python benchmarks/serve_load.py [--clients 16] [--requests 480] [--texts_per_request 1]

Each server is a real `st-bge serve` process (the bundled all-MiniLM-L6-v2, cache off so every text is embedded),
started in turn on the same machine: `batching` (the default: concurrent requests share forward passes) and
`per-request` (`--batching false`: each request is its own forward pass). `clients` threads send `requests`
requests in all, each of `texts_per_request` MBPP queries (each text distinct), as fast as the answers come;
after 2 warm-up requests per client the run is timed. Reported per server: requests/s, texts/s, latency p50 / p99,
mean texts per forward pass and the server's peak resident memory (from its /metrics). The clients share the
machine's cores with the server, equally for both.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import numpy as np
import tables

from st_bge.data import load_beir

REPO = Path(__file__).resolve().parents[1]
MODEL = "sentence-transformers/all-MiniLM-L6-v2"
SERVERS = {"batching": [], "per-request": ["--batching", "false"]}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start(model: str, flags: list[str]) -> tuple[subprocess.Popen, str]:
    port = free_port()
    command = [sys.executable, "-m", "st_bge.cli", "serve", model, "--port", str(port), "--cache_size", "0", *flags]
    quiet = {"stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL}
    process = subprocess.Popen(command, **quiet, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 300
    while True:
        try:
            if httpx.get(f"{url}/health").status_code == 200:
                return process, url
        except httpx.TransportError:
            pass
        if process.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"st-bge serve {model} did not start")
        time.sleep(0.2)


def metric(text: str, name: str) -> float:
    return float(re.search(rf"^{re.escape(name)} (\S+)$", text, re.MULTILINE).group(1))


def load(url: str, model: str, batches: list[list[str]], clients: int, warmup: int) -> dict[str, float]:
    """Send `batches` (one request each) from `clients` threads; latencies of all but each client's first `warmup`."""
    latencies: list[float] = []
    lock = threading.Lock()
    start_line = threading.Barrier(clients + 1)
    per_client = [batches[i::clients] for i in range(clients)]

    def client(mine: list[list[str]]) -> None:
        with httpx.Client(timeout=120) as http:
            for texts in mine[:warmup]:
                http.post(f"{url}/v1/embeddings", json={"input": texts, "model": model}).raise_for_status()
            start_line.wait()
            for texts in mine[warmup:]:
                begin = time.perf_counter()
                http.post(f"{url}/v1/embeddings", json={"input": texts, "model": model}).raise_for_status()
                with lock:
                    latencies.append(time.perf_counter() - begin)

    threads = [threading.Thread(target=client, args=(mine,)) for mine in per_client]
    for thread in threads:
        thread.start()
    start_line.wait()
    begin = time.perf_counter()
    for thread in threads:
        thread.join()
    seconds = time.perf_counter() - begin
    timed = len(latencies)
    texts = timed * len(batches[0])
    return {
        "requests": timed,
        "seconds": seconds,
        "requests_per_s": timed / seconds,
        "texts_per_s": texts / seconds,
        "p50_ms": 1000 * float(np.percentile(latencies, 50)),
        "p99_ms": 1000 * float(np.percentile(latencies, 99)),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=MODEL)
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--requests", type=int, default=480, help="timed requests in all")
    parser.add_argument("--texts_per_request", type=int, default=1)
    parser.add_argument("--warmup", type=int, default=2, help="untimed requests per client first")
    args = parser.parse_args()

    queries = list(load_beir(REPO / "data" / "mbpp_sanitized", "all").queries.values())
    total = args.requests + args.clients * args.warmup
    texts = [f"{queries[i % len(queries)]} ({i})" for i in range(total * args.texts_per_request)]  # all distinct
    batches = [texts[i : i + args.texts_per_request] for i in range(0, len(texts), args.texts_per_request)]
    records = []
    for name, flags in SERVERS.items():
        process, url = start(args.model, flags)
        try:
            result = load(url, args.model, batches, args.clients, args.warmup)
            text = httpx.get(f"{url}/metrics").text
            result["texts_per_pass"] = metric(text, "st_bge_batch_texts_sum") / metric(
                text, "st_bge_batch_texts_count"
            )
            result["peak_rss_mib"] = metric(text, "st_bge_peak_resident_memory_bytes") / 2**20
        finally:
            process.terminate()
            process.wait(timeout=60)
        config = {"clients": args.clients, "requests": args.requests, "texts_per_request": args.texts_per_request}
        records.append({"bench": "serve", "server": name, **config, **{k: round(v, 2) for k, v in result.items()}})
        print(json.dumps(records[-1]), flush=True)
    print(f"\n{tables.serve(records)}")


if __name__ == "__main__":
    main()
