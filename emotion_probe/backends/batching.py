"""Gather concurrent `generate` calls into one batched `generate_batch`.

Concurrent negotiation trials each call `generate` from their own thread. On an in-process
model, one batch of 16 sequences costs little more than one sequence, so a single worker
thread collects whatever requests are waiting (up to `max_batch`), runs them through the
backend's `generate_batch` together, and hands each caller its own reply (streaming included).
"""

from __future__ import annotations

import queue
from collections import Counter
import threading
from collections.abc import Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

from emotion_probe.backends.base import (
    ChatMessage,
    GenerateConfig,
    Generation,
    TokenCallback,
    as_messages,
)
from emotion_probe.backends.wrappers import BackendWrapper


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
        #: Sizes of the batches run so far (for tests, benchmarks and the manifest).
        self.batch_sizes: list[int] = []
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
            try:
                results = self._run(batch)
            except BaseException as err:  # hand the failure to every caller
                for request in batch:
                    request.future.set_exception(err)
                continue
            for request, result in zip(batch, results):
                request.future.set_result(result)

    def _run(self, group: list[_Request]) -> list[Generation]:
        with self._lock:
            self.batch_sizes.append(len(group))
        return self.inner.generate_batch([r.messages for r in group], [r.config for r in group],
                                         [r.on_token for r in group])

    def usage(self) -> dict[str, Any]:
        """How many generation batches of each size ran, for the run manifest ({size: count})."""
        with self._lock:
            return {"generation_batch_sizes": {str(size): count for size, count in sorted(Counter(self.batch_sizes).items())}}
