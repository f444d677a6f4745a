"""The event loop that a synchronous provider runs its asynchronous client on (OpenAIBackend).

The public model interface is synchronous, but a server provider sends its requests with an async
client: every request runs on one asyncio event loop in a background thread, shared by all backends
of the process, and a fan-out keeps a bounded number of them in flight (`map_concurrently`).
"""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import Awaitable, Callable, Sequence
from concurrent.futures import Future
from typing import Any, TypeVar

T = TypeVar("T")
Item = TypeVar("Item")


class LoopThread:
    """One asyncio event loop running in a daemon thread."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="emolab-openai-loop", daemon=True)
        self.thread.start()

    def submit(self, coroutine: Awaitable[T]) -> Future[T]:
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop)

    def run(self, coroutine: Awaitable[T]) -> T:
        """Run `coroutine` on the loop and wait for it in the calling thread."""
        future = self.submit(coroutine)
        try:
            return future.result()
        except BaseException:
            future.cancel()  # e.g. Ctrl-C in the caller: stop the requests too
            raise


_loop_thread: LoopThread | None = None
_loop_pid: int | None = None
_loop_lock = threading.Lock()


def event_loop() -> LoopThread:
    """The process's loop thread, started on first use (a forked child starts its own: threads do not survive fork)."""
    global _loop_thread, _loop_pid
    with _loop_lock:
        if _loop_thread is None or _loop_pid != os.getpid():
            _loop_thread, _loop_pid = LoopThread(), os.getpid()
        return _loop_thread


async def gather_all(awaitables: Sequence[Awaitable[T]]) -> list[T]:
    """asyncio.gather that cancels the rest as soon as one fails (what TaskGroup does on 3.11+)."""
    tasks = [asyncio.ensure_future(a) for a in awaitables]
    try:
        return list(await asyncio.gather(*tasks))
    except BaseException:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        raise


async def map_concurrently(call: Callable[[Item], Awaitable[T]], items: Sequence[Item], workers: int) -> list[T]:
    """[await call(item) for item in items], at most `workers` at a time, results in order.

    A fixed set of workers pulls from one iterator, so a million pairs cost a handful of tasks,
    not a million pending coroutines.
    """
    results: list[Any] = [None] * len(items)
    pending = iter(enumerate(items))

    async def worker() -> None:
        for index, item in pending:  # one shared iterator: each item is taken once
            results[index] = await call(item)

    await gather_all([worker() for _ in range(min(workers, len(items)))])
    return results
