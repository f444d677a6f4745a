"""Behaviour layered around any backend: call accounting and retries (the response cache is in
`cache.py`, the per-endpoint request limit in `concurrency.py`, batching in `batching.py`).

Wrappers implement the same interface, so they nest freely:
    model = CountingBackend(RetryingBackend(OpenAIBackend(model="gpt-4o-mini"), RetryPolicy(3, 1.0, 30.0)))
`emotion_probe.models.wrappers.stack.wrap_backend` builds the standard stack, and `usage_of(model)`
reads the accounting of every layer for a run manifest.

RetryingBackend is the only retry layer: providers send each request once (OpenAIBackend builds its
client with `max_retries=0`). It retries a call that is one request whole; for a backend that fans one
call out into many requests (base.ModelBackend.fans_out) it hands itself down and retries each failed
request alone, under the same policy and the same counter.
"""

from __future__ import annotations

import asyncio
import email.utils
import logging
import random
import threading
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import timezone
from typing import Any, TypeVar

from emotion_probe.models.base import (GenerateConfig, Generation, ModelBackend, RankedToken, ScoreResult, TokenCallback,
                                       handing_down, record_retry_verdict, recorded_retry_verdict, transient_by_default)
from emotion_probe.errors import ConfigError

log = logging.getLogger(__name__)
T = TypeVar("T")


class BackendWrapper(ModelBackend):
    """Delegates everything to `inner`; subclasses override what they change."""

    #: The resolved model config this stack was built from, set by stack.wrap_backend; None = ask `inner`.
    pinned_identity: dict[str, Any] | None = None

    def __init__(self, inner: ModelBackend):
        self.inner = inner
        self.name = inner.name

    def generate(self, messages, config: GenerateConfig | None = None, on_token: TokenCallback | None = None) -> Generation:
        return self.inner.generate(messages, config, on_token)

    def score(self, prompts: Sequence[str], continuations: Sequence[str], *, word_boundary: bool = False) -> ScoreResult:
        return self.inner.score(prompts, continuations, word_boundary=word_boundary)

    def top_tokens(self, prompts: Sequence[str], k: int) -> list[dict[str, float]]:
        return self.inner.top_tokens(prompts, k)

    def ranked_tokens(self, prompts: Sequence[str], k: int) -> list[list[RankedToken]]:
        return self.inner.ranked_tokens(prompts, k)

    def should_retry(self, err: BaseException) -> bool:
        # The provider knows its own errors; a layer adds none.
        return self.inner.should_retry(err)

    @property
    def batches_natively(self) -> bool:  # type: ignore[override]
        return self.inner.batches_natively

    # What the provider underneath is, as base.ModelBackend describes these (class attributes there,
    # so __getattr__ would never reach through for them).
    @property
    def endpoint(self) -> str | None:  # type: ignore[override]
        return self.inner.endpoint

    @property
    def max_concurrency(self) -> int | None:  # type: ignore[override]
        return self.inner.max_concurrency

    @property
    def fans_out(self) -> bool:  # type: ignore[override]
        return self.inner.fans_out

    def generate_batch(
        self,
        conversations: Sequence[Sequence[Any]],
        config: GenerateConfig | Sequence[GenerateConfig] | None = None,
        on_tokens: Sequence[TokenCallback | None] | None = None,
    ) -> list[Generation]:
        """Through this layer (`_generate_batch`, which a wrapper overrides to cache, count or retry), to the inner backend."""
        return self._generate_batch(conversations, config, on_tokens)

    def _generate_batch(
        self,
        conversations: Sequence[Sequence[Any]],
        config: GenerateConfig | None = None,
        on_tokens: Sequence[TokenCallback | None] | None = None,
    ) -> list[Generation]:
        return self.inner.generate_batch(conversations, config, on_tokens)

    def num_parameters(self) -> int | None:
        return self.inner.num_parameters()

    def context_length(self) -> int | None:
        return self.inner.context_length()

    def describe(self) -> dict[str, object]:
        inner = self.inner.describe()
        return {**inner, "wrapped_by": [*inner.get("wrapped_by", []), type(self).__name__]}

    def identity(self) -> dict[str, Any]:
        return dict(self.pinned_identity) if self.pinned_identity is not None else self.inner.identity()

    def usage(self) -> dict[str, Any]:
        """This layer's own accounting (counters only); `usage_of` merges every layer's."""
        return {}

    def __getattr__(self, attribute: str):
        # Reach through to backend-specific attributes (e.g. `.model`, `.tokenizer`).
        if attribute == "inner":  # not yet set (half-built or unpickling): never recurse
            raise AttributeError(attribute)
        return getattr(self.inner, attribute)


class CountingBackend(BackendWrapper):
    """Counts calls per verb, prompts scored and tokens used: the numbers a sweep's cost report needs.

    Thread-safe: concurrent trials call one backend from several threads.
    """

    def __init__(self, inner: ModelBackend):
        super().__init__(inner)
        self._lock = threading.Lock()
        #: Calls per verb ("generate", "score", "top_tokens"), plus "scored_prompts" and "ranked_prompts".
        self.calls: Counter[str] = Counter()
        self.prompt_tokens = 0
        self.completion_tokens = 0
        #: Generations whose backend reported no token counts (e.g. a stream without usage): the
        #: token totals leave these out, so a manifest must say how many there were.
        self.generations_without_usage = 0

    def _count_generations(self, results: Sequence[Generation]) -> None:
        with self._lock:
            self.calls["generate"] += len(results)
            for result in results:
                self.prompt_tokens += result.prompt_tokens or 0
                self.completion_tokens += result.completion_tokens or 0
                if result.prompt_tokens is None and result.completion_tokens is None:
                    self.generations_without_usage += 1

    def generate(self, messages, config=None, on_token=None) -> Generation:
        result = self.inner.generate(messages, config, on_token)
        self._count_generations([result])
        return result

    def _generate_batch(self, conversations, config=None, on_tokens=None) -> list[Generation]:
        results = self.inner.generate_batch(conversations, config, on_tokens)
        self._count_generations(results)
        return results

    def score(self, prompts, continuations, *, word_boundary=False) -> ScoreResult:
        with self._lock:
            self.calls["score"] += 1
            self.calls["scored_prompts"] += len(prompts)
        return self.inner.score(prompts, continuations, word_boundary=word_boundary)

    def top_tokens(self, prompts, k) -> list[dict[str, float]]:
        self._count_ranking(prompts)
        return self.inner.top_tokens(prompts, k)

    def ranked_tokens(self, prompts, k) -> list[list[RankedToken]]:
        self._count_ranking(prompts)  # the same request as top_tokens, answered with ids
        return self.inner.ranked_tokens(prompts, k)

    def _count_ranking(self, prompts) -> None:
        with self._lock:
            self.calls["top_tokens"] += 1
            self.calls["ranked_prompts"] += len(prompts)

    def usage(self) -> dict[str, Any]:
        with self._lock:
            return {
                "calls": dict(self.calls),
                "prompt_tokens": self.prompt_tokens,
                "completion_tokens": self.completion_tokens,
                "generations_without_usage": self.generations_without_usage,
            }


# ------------------------------------------------------------------- retries
def is_transient(err: BaseException) -> bool:
    """Whether a failed model call may succeed if repeated, for code that holds the error but not the backend.

    The verdict of the backend that raised it (`ModelBackend.should_retry`), where the retry layer or the
    provider kept it on the error; else the default rule (a rate limit, a server error, a timeout, a
    dropped connection). Bad input (`EmolabError`) is never transient.
    """
    verdict = recorded_retry_verdict(err)
    return transient_by_default(err) if verdict is None else verdict


def _header(headers: Any, name: str) -> str | None:
    value = headers.get(name)  # case-insensitive on httpx headers
    if value is None and hasattr(headers, "items"):  # a plain dict: compare names case-insensitively
        value = next((v for k, v in headers.items() if str(k).lower() == name), None)
    return None if value is None else str(value)


def retry_after_seconds(err: BaseException, now: Callable[[], float] = time.time) -> float | None:
    """The wait a server asked for in `err.response.headers`: retry-after-ms, or Retry-After in seconds or as an HTTP date."""
    headers = getattr(getattr(err, "response", None), "headers", None)
    if headers is None or not hasattr(headers, "get"):
        return None
    milliseconds = _header(headers, "retry-after-ms")
    if milliseconds is not None:
        try:
            return max(0.0, float(milliseconds) / 1000)
        except ValueError:
            pass
    value = _header(headers, "retry-after")
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:  # an HTTP date is always GMT
        when = when.replace(tzinfo=timezone.utc)
    return max(0.0, when.timestamp() - now())


class _RepeatedStream:
    """The `on_token` of a call RetryingBackend may repeat, so that no consumer is shown a text twice.

    A stream that drops midway is a transient error: the call runs again from the start and streams its
    text again. A consumer that can take back what it showed (a callback with a `restart(reason)`
    method, as the negotiation's live events have: base.TokenCallback) is told before the repeat and
    then gets every piece of it. Any other consumer gets only the text past what it already has; a
    repeat that says the same (greedy, or seeded) thus reads as one unbroken stream.
    """

    def __init__(self, callback: TokenCallback):
        self.callback = callback
        self._restart = getattr(callback, "restart", None)
        self._lock = threading.Lock()
        self._shown = 0  # characters the consumer has, across attempts
        self._attempt = 0  # characters this attempt has streamed

    def __call__(self, piece: str) -> None:
        with self._lock:
            start, self._attempt = self._attempt, self._attempt + len(piece)
            if self._attempt <= self._shown:
                return  # a repeat, still inside what the consumer was shown
            new = piece[max(0, self._shown - start):]
            self._shown = self._attempt
        self.callback(new)

    def repeat(self, reason: str) -> None:
        """The call failed and runs again from the start."""
        with self._lock:
            if self._attempt == 0:
                return  # nothing reached the consumer: nothing to take back
            self._attempt = 0
            restart = self._restart
            if restart is not None:
                self._shown = 0
        if restart is not None:
            restart(reason)


@dataclass(frozen=True)
class RetryPolicy:
    """How RetryingBackend retries (`conf/retry`, validated by the experiments): attempts per request, the first
    included (1 = never retry), and the backoff's first delay and ceiling in seconds."""

    # No defaults: conf/retry/default.yaml holds them (experiments.app.config.RetrySettings.policy()).
    max_attempts: int
    initial_delay_s: float
    max_delay_s: float

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ConfigError(f"retry.max_attempts must be >= 1, got {self.max_attempts}")
        if self.initial_delay_s < 0 or self.max_delay_s < 0:
            raise ConfigError(f"retry delays must be >= 0, got initial {self.initial_delay_s}, max {self.max_delay_s}")


class RetryingBackend(BackendWrapper):
    """Retries what the backend it wraps calls transient (`should_retry`) with exponential backoff and jitter;
    the only retry layer.

    The delay before retry n is drawn from [d/2, d] with d = min(max_delay, initial_delay * 2**(n-1)),
    so parallel jobs that failed together spread out. A server's Retry-After (or retry-after-ms)
    replaces it, even above `max_delay`: the server knows when it will take requests again.
    Any other error (bad input, `EmolabError`, always) is raised at once: it would fail the same way again.

    What is retried is one request. A call to a backend that is one request (generate, or any verb of
    an in-process model) is repeated whole. A `score` or `top_tokens` call to a backend that `fans_out`
    sends thousands of requests: this layer hands itself down to them (`around_request`, awaited on the
    backend's event loop), so a request that failed is sent again alone, at most `max_attempts` times,
    while the others' answers stand.
    """

    def __init__(
        self,
        inner: ModelBackend,
        policy: RetryPolicy,
        *,
        sleep: Callable[[float], None] = time.sleep,
        rng: random.Random | None = None,
    ):
        super().__init__(inner)
        self.max_attempts = policy.max_attempts
        self.initial_delay = policy.initial_delay_s
        self.max_delay = policy.max_delay_s
        self._sleep = sleep
        self._rng = rng or random.Random()
        self._lock = threading.Lock()
        self.retries = 0

    def delay_before_retry(self, attempt: int, err: BaseException) -> float:
        """Seconds to wait after failed attempt number `attempt` (1-based)."""
        asked = retry_after_seconds(err)
        if asked is not None:
            # Never earlier than asked; up to 10% later so that jobs told the same time do not return in lockstep.
            return asked * self._rng.uniform(1.0, 1.1)
        backoff = min(self.max_delay, self.initial_delay * 2 ** (attempt - 1))
        return backoff * self._rng.uniform(0.5, 1.0)

    def _after_failure(self, attempt: int, err: Exception, what: str, level: int = logging.WARNING) -> float | None:
        """Seconds to wait before attempt `attempt + 1`, counted and logged; None when `err` is final."""
        transient = self.inner.should_retry(err)
        record_retry_verdict(err, transient)  # for whoever meets the error after the last attempt (is_transient)
        if attempt == self.max_attempts or not transient:
            return None
        delay = self.delay_before_retry(attempt, err)
        with self._lock:
            self.retries += 1
        log.log(level, "%s %s failed (%s: %s); retry %d/%d in %.1fs", self.name, what, type(err).__name__, err,
                attempt, self.max_attempts - 1, delay)
        return delay

    def _retry(self, call: Callable[[], T], what: str, streams: Sequence[_RepeatedStream] = ()) -> T:
        for attempt in range(1, self.max_attempts + 1):
            try:
                return call()
            except Exception as err:
                delay = self._after_failure(attempt, err, what)
                if delay is None:
                    raise
                for stream in streams:  # told now, so a live view shows the restart while we wait
                    stream.repeat(f"{type(err).__name__}: {err}")
                self._sleep(delay)
        raise AssertionError("unreachable")

    async def around_request(self, send: Callable[[], Awaitable[T]]) -> T:
        """One request of a fan-out, retried alone; the wait is on the event loop, so the other requests go on."""
        for attempt in range(1, self.max_attempts + 1):
            try:
                return await send()
            except Exception as err:
                # One line per request at DEBUG: a 503 burst over a fan-out of thousands would otherwise
                # print thousands; the call logs one warning with the count (_per_request).
                delay = self._after_failure(attempt, err, "request", logging.DEBUG)
                if delay is None:
                    raise
                await asyncio.sleep(delay)
        raise AssertionError("unreachable")

    def _per_request(self, call: Callable[[], T], what: str) -> T:
        if not self.inner.fans_out:
            return self._retry(call, what)
        before = self.retries
        try:
            with handing_down(self):
                return call()
        finally:
            if (retried := self.retries - before) > 0:  # other threads' calls may count here too: a summary
                log.warning("%s %s: %d transient request failures retried", self.name, what, retried)

    def generate(self, messages, config=None, on_token=None) -> Generation:
        if on_token is None:
            return self._retry(lambda: self.inner.generate(messages, config, None), "generate")
        stream = _RepeatedStream(on_token)
        return self._retry(lambda: self.inner.generate(messages, config, stream), "generate", [stream])

    def _generate_batch(self, conversations, config=None, on_tokens=None) -> list[Generation]:
        streams = [None if callback is None else _RepeatedStream(callback)
                   for callback in (on_tokens or [None] * len(conversations))]
        return self._retry(lambda: self.inner.generate_batch(conversations, config, streams), "generate_batch",
                           [stream for stream in streams if stream is not None])

    def score(self, prompts, continuations, *, word_boundary=False) -> ScoreResult:
        return self._per_request(lambda: self.inner.score(prompts, continuations, word_boundary=word_boundary), "score")

    def top_tokens(self, prompts, k) -> list[dict[str, float]]:
        return self._per_request(lambda: self.inner.top_tokens(prompts, k), "top_tokens")

    def ranked_tokens(self, prompts, k) -> list[list[RankedToken]]:
        return self._per_request(lambda: self.inner.ranked_tokens(prompts, k), "ranked_tokens")

    def usage(self) -> dict[str, Any]:
        with self._lock:
            return {"retries": self.retries}


# ------------------------------------------------------------------- accounting
def _merge_counts(total: dict[str, Any], part: dict[str, Any]) -> None:
    for key, value in part.items():
        if isinstance(value, dict):
            _merge_counts(total.setdefault(key, {}), value)
        else:
            total[key] = total.get(key, 0) + value


def usage_of(backend: ModelBackend) -> dict[str, Any]:
    """Every wrapper's accounting down the `.inner` chain, merged (counters of the same name add up).

    With the stack from `wrap_backend` this gives, for a run manifest: calls per verb, prompt and
    completion tokens of real model calls, retries, and response-cache hits and misses.
    """
    total: dict[str, Any] = {}
    layer: ModelBackend = backend
    while isinstance(layer, BackendWrapper):
        _merge_counts(total, layer.usage())
        layer = layer.inner
    # The model itself may count too (TransformersBackend: prompt tokens taken from its prefix cache).
    own = getattr(layer, "usage", None)
    if callable(own):
        _merge_counts(total, own())
    return total
