"""The per-endpoint request limit: every stack that talks to one server shares its slots.

A sweep's salesperson, customer and probe are separate stacks, often over one server; the server was
sized for some number of requests at once, and together they must not send more. `ConcurrencyLimit`
takes one slot of its endpoint's `EndpointSlots` around each request:
- a call that is one request (`generate`, streamed or not) holds a slot for the whole call, in the
  calling thread;
- a `score` or `top_tokens` call of a backend that `fans_out` sends many requests at once from the
  backend's event loop: the limit hands itself down (base.handing_down), and each request takes a slot
  of its own there, so the fan-out runs as wide as the endpoint allows and no wider.

Slots are therefore taken from threads and from event loops alike, which neither `threading.Semaphore`
(it would block the loop) nor `asyncio.Semaphore` (bound to one loop) can serve; `EndpointSlots` is a
small semaphore that hands a freed slot straight to the longest waiter of either kind.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
from collections import deque
from collections.abc import Awaitable, Callable
from typing import TypeVar

from emotion_probe.errors import ConfigError
from emotion_probe.models.base import ModelBackend, handing_down
from emotion_probe.models.wrappers.core import BackendWrapper

log = logging.getLogger(__name__)
T = TypeVar("T")


class EndpointSlots:
    """At most `size` holders at once, acquired from threads (`acquire`) or coroutines (`acquire_async`), first come first served."""

    def __init__(self, size: int):
        if size < 1:
            raise ConfigError(f"model.max_concurrency must be >= 1, got {size}")
        self.size = size
        self._lock = threading.Lock()
        self._held = 0
        #: Each waiter's wake-up; a freed slot passes to the first one directly, so `_held` stays as it is.
        self._waiting: deque[Callable[[], None]] = deque()

    def _take_or_queue(self, wake: Callable[[], None]) -> bool:
        """Take a free slot (True) or queue `wake` for the next freed one (False); callers hold `_lock`."""
        if self._held < self.size and not self._waiting:
            self._held += 1
            return True
        self._waiting.append(wake)
        return False

    def _abandon(self, wake: Callable[[], None]) -> None:
        """A waiter gave up (Ctrl-C, a cancelled request): out of the queue, or, if its slot came meanwhile, free it."""
        with self._lock:
            try:
                self._waiting.remove(wake)
                return
            except ValueError:
                pass  # already woken: the slot is ours
        self.release()

    def acquire(self) -> None:
        granted = threading.Event()
        with self._lock:
            if self._take_or_queue(granted.set):
                return
        try:
            granted.wait()
        except BaseException:
            self._abandon(granted.set)
            raise

    async def acquire_async(self) -> None:
        loop = asyncio.get_running_loop()
        granted: asyncio.Future[None] = loop.create_future()

        def wake() -> None:  # called from whichever thread releases the slot
            loop.call_soon_threadsafe(lambda: granted.done() or granted.set_result(None))

        with self._lock:
            if self._take_or_queue(wake):
                return
        try:
            await granted
        except BaseException:
            self._abandon(wake)
            raise

    def release(self) -> None:
        with self._lock:
            if not self._waiting:
                self._held -= 1
                return
            wake = self._waiting.popleft()
        wake()


_slots: dict[str, EndpointSlots] = {}
_slots_pid: int | None = None
_slots_lock = threading.Lock()


def endpoint_slots(endpoint: str, size: int) -> EndpointSlots:
    """The slots every stack in this process that talks to `endpoint` shares; the first stack's size sets them."""
    global _slots_pid
    with _slots_lock:
        if _slots_pid != os.getpid():  # a forked child: the parent's holders are not ours
            _slots.clear()
            _slots_pid = os.getpid()
        if endpoint not in _slots:
            _slots[endpoint] = EndpointSlots(size)
        slots = _slots[endpoint]
    if slots.size != size:
        log.warning("%s: max_concurrency %d ignored; backends sharing this endpoint already use %d",
                    endpoint, size, slots.size)
    return slots


class ConcurrencyLimit(BackendWrapper):
    """Holds one of the endpoint's shared slots around each request the inner backend sends.

    Placed by stack.wrap_backend inside the retry layer, so a request waiting to be retried gives its
    slot back while it waits.
    """

    def __init__(self, inner: ModelBackend, slots: EndpointSlots):
        super().__init__(inner)
        self.slots = slots

    async def around_request(self, send: Callable[[], Awaitable[T]]) -> T:
        await self.slots.acquire_async()
        try:
            return await send()
        finally:
            self.slots.release()

    def _held(self, call: Callable[[], T]) -> T:
        self.slots.acquire()
        try:
            return call()
        finally:
            self.slots.release()

    def _per_request(self, call: Callable[[], T]) -> T:
        if self.inner.fans_out:
            with handing_down(self):
                return call()
        return self._held(call)

    def generate(self, messages, config=None, on_token=None):
        return self._held(lambda: self.inner.generate(messages, config, on_token))

    def _generate_batch(self, conversations, config=None, on_tokens=None):
        # A backend that does not batch natively sends the rows one after another: one slot covers them.
        return self._held(lambda: self.inner.generate_batch(conversations, config, on_tokens))

    def score(self, prompts, continuations, *, word_boundary=False):
        return self._per_request(lambda: self.inner.score(prompts, continuations, word_boundary=word_boundary))

    def top_tokens(self, prompts, k):
        return self._per_request(lambda: self.inner.top_tokens(prompts, k))

    def ranked_tokens(self, prompts, k):
        return self._per_request(lambda: self.inner.ranked_tokens(prompts, k))
