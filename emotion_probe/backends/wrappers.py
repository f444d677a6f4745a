"""Behaviour layered around any backend: call accounting and retries.

Wrappers implement the same interface, so they nest freely:
    model = CountingBackend(RetryingBackend(load_model("openai", model="gpt-4o-mini")))
"""

from __future__ import annotations

import logging
import random
import time
from collections import Counter
from collections.abc import Callable, Sequence
from typing import TypeVar

from emotion_probe.backends.base import GenerateConfig, Generation, ModelBackend, ScoreResult, TokenCallback
from emotion_probe.errors import EmolabError

log = logging.getLogger(__name__)
T = TypeVar("T")


class BackendWrapper(ModelBackend):
    """Delegates everything to `inner`; subclasses override what they change."""

    def __init__(self, inner: ModelBackend):
        self.inner = inner
        self.name = inner.name

    def generate(self, messages, config: GenerateConfig | None = None, on_token: TokenCallback | None = None) -> Generation:
        return self.inner.generate(messages, config, on_token)

    def score(self, prompts: Sequence[str], continuations: Sequence[str], *, word_boundary: bool = False) -> ScoreResult:
        return self.inner.score(prompts, continuations, word_boundary=word_boundary)

    def top_tokens(self, prompts: Sequence[str], k: int) -> list[dict[str, float]]:
        return self.inner.top_tokens(prompts, k)

    def num_parameters(self) -> int | None:
        return self.inner.num_parameters()

    def context_length(self) -> int | None:
        return self.inner.context_length()

    def describe(self) -> dict[str, object]:
        inner = self.inner.describe()
        return {**inner, "wrapped_by": [*inner.get("wrapped_by", []), type(self).__name__]}

    def __getattr__(self, attribute: str):
        # Reach through to backend-specific attributes (e.g. `.model`, `.tokenizer`).
        return getattr(self.inner, attribute)


class CountingBackend(BackendWrapper):
    """Counts calls, prompts scored and tokens generated: the numbers a sweep's cost report needs."""

    def __init__(self, inner: ModelBackend):
        super().__init__(inner)
        self.calls: Counter[str] = Counter()
        self.completion_tokens = 0

    def generate(self, messages, config=None, on_token=None) -> Generation:
        self.calls["generate"] += 1
        result = self.inner.generate(messages, config, on_token)
        self.completion_tokens += result.completion_tokens or 0
        return result

    def score(self, prompts, continuations, *, word_boundary=False) -> ScoreResult:
        self.calls["score"] += 1
        self.calls["scored_prompts"] += len(prompts)
        return self.inner.score(prompts, continuations, word_boundary=word_boundary)

    def top_tokens(self, prompts, k) -> list[dict[str, float]]:
        self.calls["top_tokens"] += 1
        return self.inner.top_tokens(prompts, k)

    def describe(self) -> dict[str, object]:
        return {**super().describe(), "calls": dict(self.calls), "completion_tokens": self.completion_tokens}


class RetryingBackend(BackendWrapper):
    """Retries transient failures with exponential backoff and jitter.

    Bad input (`EmolabError`) is never retried: it would fail the same way again.
    """

    def __init__(
        self,
        inner: ModelBackend,
        max_attempts: int = 3,
        initial_delay: float = 1.0,
        max_delay: float = 30.0,
        sleep: Callable[[float], None] = time.sleep,
    ):
        super().__init__(inner)
        if max_attempts < 1:
            raise ValueError("max_attempts must be >= 1")
        self.max_attempts = max_attempts
        self.initial_delay = initial_delay
        self.max_delay = max_delay
        self._sleep = sleep

    def _retry(self, call: Callable[[], T], what: str) -> T:
        for attempt in range(1, self.max_attempts + 1):
            try:
                return call()
            except EmolabError:
                raise
            except Exception as err:  # transient by assumption: network, server, runtime
                if attempt == self.max_attempts:
                    raise
                delay = min(self.max_delay, self.initial_delay * 2 ** (attempt - 1)) * random.uniform(0.5, 1.5)
                log.warning("%s %s failed (%s: %s); retry %d/%d in %.1fs", self.name, what, type(err).__name__, err,
                            attempt, self.max_attempts - 1, delay)
                self._sleep(delay)
        raise AssertionError("unreachable")

    def generate(self, messages, config=None, on_token=None) -> Generation:
        return self._retry(lambda: self.inner.generate(messages, config, on_token), "generate")

    def score(self, prompts, continuations, *, word_boundary=False) -> ScoreResult:
        return self._retry(lambda: self.inner.score(prompts, continuations, word_boundary=word_boundary), "score")

    def top_tokens(self, prompts, k) -> list[dict[str, float]]:
        return self._retry(lambda: self.inner.top_tokens(prompts, k), "top_tokens")
