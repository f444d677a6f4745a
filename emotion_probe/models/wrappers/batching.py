"""Gather concurrent `generate` calls into one batched `generate_batch`.

Concurrent negotiation trials each call `generate` from their own thread. On an in-process
model, one batch of 16 sequences costs little more than one sequence, so a single worker
thread collects whatever requests are waiting (up to `max_batch`), runs them through the
backend's `generate_batch` together, and hands each caller its own reply (streaming included).
On a backend that decodes continuously (TransformersBackend), a caller gets its reply as soon as
its row is done, and requests that arrive meanwhile join the running batch between steps, so a
trial whose turn was short does not wait for the longest turn of the batch.
"""

from __future__ import annotations

import queue
import threading
from collections import Counter
from collections.abc import Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

from emotion_probe.models.base import (
    ChatMessage,
    GenerateConfig,
    Generation,
    TokenCallback,
    as_messages,
)
from emotion_probe.models.wrappers.core import BackendWrapper


@dataclass
class _Request:
    messages: list[ChatMessage]
    config: GenerateConfig
    on_token: TokenCallback | None
    future: Future = field(default_factory=Future)


class BatchingBackend(BackendWrapper):
    """Wraps a backend with `generate_batch` (TransformersBackend) so concurrent generate() calls share batches."""

    def __init__(self, inner, max_batch: int = 16, wait_s: float = 0.1):
        super().__init__(inner)
        self.max_batch = max_batch
        # How long the first request of a batch waits for company. A generation takes seconds, and
        # trials leave their probe step at slightly different times: at 0.02 s, 4 concurrent trials
        # ran a third of their batches at sizes 1 to 3.
        self.wait_s = wait_s
        self._queue: queue.Queue[_Request] = queue.Queue()
        # How many decoding steps ran with each number of rows (calls, for a backend that batches call by call).
        self._sizes: Counter[int] = Counter()
        self._lock = threading.Lock()
        self._worker = threading.Thread(target=self._serve, name="emolab-batcher", daemon=True)
        self._worker.start()

    def generate(
        self,
        messages: Sequence[ChatMessage | dict],
        config: GenerateConfig | None = None,
        on_token: TokenCallback | None = None,
    ) -> Generation:
        request = _Request(as_messages(messages), config or GenerateConfig(), on_token)
        self._queue.put(request)
        return request.future.result()

    def _serve(self) -> None:
        while True:
            first = self._queue.get()
            batch = [first]
            try:
                while len(batch) < self.max_batch:
                    batch.append(self._queue.get(timeout=self.wait_s))
            except queue.Empty:
                pass
            # One batch whatever each request's seed, schema or budget: the backend decodes every
            # row on its own terms (TransformersBackend._decode), so trials need not agree on settings.
            feed = _Feed(self, batch) if getattr(self.inner, "continuous_batching", False) else None
            try:
                results = self.inner.generate_batch([r.messages for r in batch], [r.config for r in batch],
                                                    [r.on_token for r in batch],
                                                    **({"feed": feed} if feed is not None else {}))
            except BaseException as err:  # hand the failure to every caller still waiting
                for request in (feed.requests if feed is not None else batch):
                    if not request.future.done():
                        request.future.set_exception(err)
                continue
            if feed is None:
                self._count(len(batch))
                for request, result in zip(batch, results):
                    request.future.set_result(result)

    def _count(self, size: int) -> None:
        with self._lock:
            self._sizes[size] += 1

    @property
    def batch_sizes(self) -> list[int]:
        """The size of every step (or call) so far, smallest first (for tests and benchmarks)."""
        with self._lock:
            return sorted(self._sizes.elements())

    def usage(self) -> dict[str, Any]:
        """For the run manifest: {rows: decoding steps run with that many rows} ({size: calls} for a
        backend that batches call by call)."""
        with self._lock:
            return {"generation_batch_sizes": {str(size): count for size, count in sorted(self._sizes.items())}}


class _Feed:
    """Continuous batching: requests that arrive while a batch decodes join it between steps, and each
    caller gets its reply the moment its row finishes (emotion_probe.models.base.BatchFeed)."""

    def __init__(self, batcher: BatchingBackend, first: list[_Request]):
        self.batcher = batcher
        self.requests = list(first)  # in the order their rows joined: the backend's row indices

    def admit(self, running: int) -> list[tuple[list[ChatMessage], GenerateConfig, TokenCallback | None]]:
        joining = []
        while running + len(joining) < self.batcher.max_batch:
            try:
                request = self.batcher._queue.get_nowait()
            except queue.Empty:
                break
            self.requests.append(request)
            joining.append((request.messages, request.config, request.on_token))
        return joining

    def finished(self, index: int, generation: Generation) -> None:
        self.requests[index].future.set_result(generation)

    def stepped(self, rows: int) -> None:
        self.batcher._count(rows)
