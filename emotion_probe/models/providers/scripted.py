"""A backend that replays a script: deterministic tests with no model, failing loudly when it runs dry."""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence

import numpy as np

from emotion_probe.models.base import (
    ChatMessage,
    GenerateConfig,
    Generation,
    ModelBackend,
    ScoreResult,
    TokenCallback,
    as_messages,
)
from emotion_probe.errors import ConfigError, ScriptExhausted


class ScriptedBackend(ModelBackend):
    """Returns `responses` in order from generate(); fixed per-continuation scores from score().

    Thread-safe: concurrent trials each take the next response exactly once.
    """

    def __init__(
        self,
        responses: Sequence[str] = (),
        continuation_logprobs: dict[str, float] | None = None,
        name: str = "scripted",
        delay_s: float = 0.0,
    ):
        if delay_s < 0:
            raise ConfigError(f"model.delay_s must be >= 0, got {delay_s}")
        self.name = name
        #: Seconds each generate() takes, like a slow model: tests that interrupt a run need time to do it in.
        self.delay_s = delay_s
        self.responses = list(responses)
        self.continuation_logprobs = continuation_logprobs
        #: Every conversation generate() was given, for assertions on what an agent saw.
        self.seen: list[list[ChatMessage]] = []
        self._lock = threading.Lock()

    @property
    def remaining(self) -> int:
        return len(self.responses) - len(self.seen)

    def generate(
        self,
        messages: Sequence[ChatMessage | dict],
        config: GenerateConfig | None = None,
        on_token: TokenCallback | None = None,
    ) -> Generation:
        messages = as_messages(messages)
        with self._lock:  # taking the next response and recording the call must be one step
            if self.remaining <= 0:
                last = messages[-1].content[:80] if messages else ""
                raise ScriptExhausted(
                    f"scripted backend {self.name!r} ran out after {len(self.responses)} responses; "
                    f"call {len(self.seen) + 1} asked: {last!r}"
                )
            text = self.responses[len(self.seen)]
            self.seen.append(list(messages))
        if self.delay_s:
            time.sleep(self.delay_s)
        if on_token is not None:
            for piece in text.split(" "):
                on_token(piece + " ")
        return Generation(text=text, finish_reason="stop")

    def score(self, prompts: Sequence[str], continuations: Sequence[str], *, word_boundary: bool = False) -> ScoreResult:
        if self.continuation_logprobs is None:
            raise ConfigError(f"scripted backend {self.name!r} has no continuation_logprobs to score with")
        row = np.array([self.continuation_logprobs.get(c, -np.inf) for c in continuations], dtype=np.float64)
        return ScoreResult(logprobs=np.tile(row, (len(prompts), 1)), method="scripted", exact=True)

    def top_tokens(self, prompts: Sequence[str], k: int) -> list[dict[str, float]]:
        if self.continuation_logprobs is None:
            raise ConfigError(f"scripted backend {self.name!r} has no continuation_logprobs to rank")
        ranked = sorted(self.continuation_logprobs.items(), key=lambda item: -item[1])[:k]
        return [dict(ranked) for _ in prompts]
