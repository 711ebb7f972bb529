"""Dynamic batching for `st-bge serve`: the texts of concurrent requests share forward passes, under a token budget.

A GPU runs one forward pass of 32 texts in far less time than 32 passes of one (larger matmuls); on a CPU the
pass costs about the same per text at any size, but each request's own pass still queues behind the others (16
clients of one text each got 1.8x the requests/s with shared passes, benchmarks/HISTORY.md). Requests put
their texts in one queue; a single worker takes the oldest text's group (side and extras: one pass applies one
prompt and computes one set of outputs) and as many queued texts of that group as fit `max_batch_size` and
`max_batch_tokens` (texts x longest text, the padded size of the batch), runs the pass in a worker thread (the event
loop keeps answering), and hands each request its results. Texts that arrive during a pass join the next one, so a
busy server batches without waiting; `wait_s` makes a pass wait for more first.

With `batching=False` each request's texts go through the same worker thread on their own (chunks of
`max_batch_size`), one request per pass: the baseline of benchmarks/RESULTS.md.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import OrderedDict, deque
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

logger = logging.getLogger(__name__)

# run(texts, side, extras) -> one result per text, in order; called in the worker thread.
Run = Callable[[list[str], str, tuple[str, ...]], list[Any]]
# on_batch(texts, padded_tokens) after every forward pass (metrics).
OnBatch = Callable[[int, int], None]


@dataclass
class _Queued:
    text: str
    tokens: int
    group: tuple[str, tuple[str, ...]]
    future: asyncio.Future = field(repr=False)


class DynamicBatcher:
    """Embeds texts in shared forward passes (see the module docstring).

    Args:
        run: What a forward pass is (`ServedModel.embed`).
        max_batch_size: Most texts per pass.
        max_batch_tokens: Most padded tokens per pass (a single longer text still runs, alone).
        wait_s: How long a pass waits for more texts once one is queued.
        batching: False: one pass per request (no sharing).
        on_batch: Called with (texts, padded tokens) after each pass.
    """

    def __init__(
        self,
        run: Run,
        *,
        max_batch_size: int,
        max_batch_tokens: int,
        wait_s: float = 0.0,
        batching: bool = True,
        on_batch: OnBatch | None = None,
    ) -> None:
        self.run = run
        self.max_batch_size = max_batch_size
        self.max_batch_tokens = max_batch_tokens
        self.wait_s = wait_s
        self.batching = batching
        self.on_batch = on_batch
        self._queue: deque[_Queued] = deque()
        self._queued = asyncio.Event()
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="st-bge-forward")
        self._worker: asyncio.Task | None = None

    @property
    def queued(self) -> int:
        return len(self._queue)

    async def embed(
        self, texts: Sequence[str], tokens: Sequence[int], side: str, extras: tuple[str, ...]
    ) -> list[Any]:
        """The results of `texts` (with their token counts), in order."""
        if not self.batching:
            results = []
            for start in range(0, len(texts), self.max_batch_size):
                chunk = list(texts[start : start + self.max_batch_size])
                results += await self._forward(chunk, side, extras, max(tokens[start : start + len(chunk)]))
            return results
        if self._worker is None:
            self._worker = asyncio.get_running_loop().create_task(self._work())
        loop = asyncio.get_running_loop()
        items = [
            _Queued(text, count, (side, extras), loop.create_future())
            for text, count in zip(texts, tokens, strict=True)
        ]
        self._queue.extend(items)
        self._queued.set()
        return list(await asyncio.gather(*(item.future for item in items)))

    async def close(self) -> None:
        """Stop the worker once nothing is queued, and the worker thread."""
        while self._queue:
            await asyncio.sleep(0.01)
        if self._worker is not None:
            self._worker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._worker
        self._executor.shutdown(wait=True)

    async def _work(self) -> None:
        while True:
            await self._queued.wait()
            if self.wait_s and len(self._queue) < self.max_batch_size:
                await asyncio.sleep(self.wait_s)
            batch = self._take()
            if not self._queue:
                self._queued.clear()
            if not batch:
                continue
            side, extras = batch[0].group
            try:
                results = await self._forward(
                    [item.text for item in batch], side, extras, max(i.tokens for i in batch)
                )
            except Exception as error:  # the requests of this pass fail; the server goes on
                logger.exception("Forward pass of %d texts failed", len(batch))
                for item in batch:
                    if not item.future.done():
                        item.future.set_exception(error)
                continue
            for item, result in zip(batch, results, strict=True):
                if not item.future.done():  # a request whose client went away
                    item.future.set_result(result)

    def _take(self) -> list[_Queued]:
        """The next pass: the oldest text's group, in queue order, as many as fit; the rest stays queued."""
        if not self._queue:
            return []
        group = self._queue[0].group
        batch: list[_Queued] = []
        kept: deque[_Queued] = deque()
        longest = 0
        for item in self._queue:
            padded = max(longest, item.tokens) * (len(batch) + 1)
            fits = item.group == group and len(batch) < self.max_batch_size
            if fits and (not batch or padded <= self.max_batch_tokens):
                batch.append(item)
                longest = max(longest, item.tokens)
            else:
                kept.append(item)
        self._queue = kept
        return batch

    async def _forward(self, texts: list[str], side: str, extras: tuple[str, ...], longest: int) -> list[Any]:
        results = await asyncio.get_running_loop().run_in_executor(self._executor, self.run, texts, side, extras)
        if self.on_batch is not None:
            self.on_batch(len(texts), len(texts) * longest)
        return results


class LRUCache:
    """The last `size` results by key; `size` 0 keeps nothing."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._entries: OrderedDict[Any, Any] = OrderedDict()

    def get(self, key: Any) -> Any | None:
        value = self._entries.get(key)
        if value is not None:
            self._entries.move_to_end(key)
        return value

    def put(self, key: Any, value: Any) -> None:
        if not self.size:
            return
        self._entries[key] = value
        self._entries.move_to_end(key)
        while len(self._entries) > self.size:
            self._entries.popitem(last=False)
