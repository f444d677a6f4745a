"""Any OpenAI-compatible endpoint, through the official `openai` client.

Probing, most exact first:
- ``echo``: legacy completions with ``echo=True, logprobs=1``. The server returns
  the log-probability of every prompt token, so P(" " + word | prompt) is exact.
  vLLM, SGLang and llama-cpp-python serve this.
- ``top_logprobs``: only the next token's top alternatives (chat completions,
  or completions without echo). Words that are single tokens and appear among
  the alternatives get their probability; all others are unseen. Inexact.

Every echo response is checked for alignment: at temperature 0 the generated
token must be the argmax of the distribution reported for its own position.
llama-cpp-python (<= 0.3.36, issue abetlen/llama-cpp-python#1983) reports each
prompt token's log-probability from the *following* position when the prompt
has no BOS token; emolab detects this rather than return wrong numbers.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Literal

import numpy as np

from emotion_probe.backends.base import (
    ChatMessage,
    GenerateConfig,
    Generation,
    ModelBackend,
    ScoreResult,
    TokenCallback,
    as_messages,
)
from emotion_probe.errors import ConfigError, EmolabError, TokenizationMismatch

log = logging.getLogger(__name__)

ProbeMethod = Literal["auto", "echo", "top_logprobs"]


class EchoUnavailable(EmolabError):
    """The server cannot give exact prompt-token log-probabilities."""


def _argmax_key(candidates: dict[str, float] | None) -> str | None:
    return max(candidates, key=candidates.__getitem__) if candidates else None


class OpenAIBackend(ModelBackend):
    """Chat generation and emotion probing against an OpenAI-compatible server."""

    def __init__(
        self,
        model: str,
        base_url: str | None = None,
        api_key_env: str = "OPENAI_API_KEY",
        probe_method: ProbeMethod = "auto",
        top_logprobs: int = 20,
        max_concurrency: int = 8,
        timeout: float = 60.0,
        max_retries: int = 4,
        top_logprobs_via: Literal["auto", "completions", "chat"] = "auto",
        name: str | None = None,
    ):
        if probe_method not in ("auto", "echo", "top_logprobs"):
            raise ConfigError(f"model.probe_method: expected auto, echo or top_logprobs, got {probe_method!r}")
        if top_logprobs_via not in ("auto", "completions", "chat"):
            raise ConfigError(f"model.top_logprobs_via: expected auto, completions or chat, got {top_logprobs_via!r}")
        if max_concurrency < 1:
            raise ConfigError(f"model.max_concurrency must be >= 1, got {max_concurrency}")
        api_key = os.environ.get(api_key_env)
        if not api_key:
            if base_url is None:
                raise ConfigError(f"model.api_key_env: environment variable {api_key_env} is not set (the OpenAI API needs a key)")
            # Self-hosted servers (vLLM, llama.cpp) usually ignore the key, but the client requires one.
            api_key = "unused"
        import openai

        self.name = name or model
        self.model_name = model
        self.base_url = base_url
        self.probe_method: ProbeMethod = probe_method
        self.top_logprobs = top_logprobs
        self.max_concurrency = max_concurrency
        # The client retries 429/5xx/timeouts with exponential backoff and honours Retry-After.
        self._client = openai.OpenAI(api_key=api_key, base_url=base_url, timeout=timeout, max_retries=max_retries)
        self._openai = openai
        #: Method of the most recent score() call: "completions-echo", "completions-top_logprobs", "chat-top_logprobs".
        self.last_score_method: str | None = None
        # None = not yet known; the first top_tokens call finds out (unless the config says).
        self._completions_ok: bool | None = {"auto": None, "completions": True, "chat": False}[top_logprobs_via]

    def __repr__(self) -> str:  # never show the key
        return f"OpenAIBackend(model={self.model_name!r}, base_url={self.base_url!r})"

    def describe(self) -> dict[str, object]:
        return {
            **super().describe(),
            "model": self.model_name,
            "base_url": self.base_url,
            "probe_method": self.probe_method,
            "last_score_method": self.last_score_method,
        }

    # --------------------------------------------------------------- generation
    def generate(
        self,
        messages: Sequence[ChatMessage | dict],
        config: GenerateConfig | None = None,
        on_token: TokenCallback | None = None,
    ) -> Generation:
        config = config or GenerateConfig()
        request: dict[str, Any] = {
            "model": self.model_name,
            "messages": [m.model_dump() for m in as_messages(messages)],
            "max_tokens": config.max_tokens,
            "temperature": config.temperature,
            "top_p": config.top_p,
        }
        if config.seed is not None:
            request["seed"] = config.seed
        if config.stop:
            request["stop"] = config.stop
        if on_token is None:
            response = self._client.chat.completions.create(**request)
            choice = response.choices[0]
            usage = response.usage
            return Generation(
                text=choice.message.content or "",
                prompt_tokens=usage.prompt_tokens if usage else None,
                completion_tokens=usage.completion_tokens if usage else None,
                finish_reason=choice.finish_reason,
            )
        pieces: list[str] = []
        finish_reason = None
        for chunk in self._client.chat.completions.create(**request, stream=True):
            if not chunk.choices:
                continue
            delta = chunk.choices[0].delta.content or ""
            if delta:
                pieces.append(delta)
                on_token(delta)
            finish_reason = chunk.choices[0].finish_reason or finish_reason
        return Generation(text="".join(pieces), finish_reason=finish_reason)

    # ------------------------------------------------------------------ scoring
    def score(self, prompts: Sequence[str], continuations: Sequence[str], *, word_boundary: bool = False) -> ScoreResult:
        if word_boundary:
            raise ConfigError(
                "probe.word_boundary needs the full next-token distribution after each word, "
                "which an OpenAI-compatible server does not return; use a transformers backend"
            )
        if self.probe_method in ("auto", "echo"):
            try:
                logprobs = self._score_echo(prompts, continuations)
                self.last_score_method = "completions-echo"
                return ScoreResult(logprobs=logprobs, method=self.last_score_method, exact=True)
            except EchoUnavailable as err:
                if self.probe_method == "echo":
                    raise
                log.warning("%s: exact echo scoring unavailable (%s); falling back to top_logprobs (inexact)", self.name, err)
                self.probe_method = "top_logprobs"
        top = self.top_tokens(prompts, self.top_logprobs)
        logprobs = np.full((len(prompts), len(continuations)), -np.inf)
        wanted = {c.strip().lower(): k for k, c in enumerate(continuations)}
        for row, candidates in enumerate(top):
            for token, value in candidates.items():
                column = wanted.get(token.strip().lower())
                if column is not None:
                    logprobs[row, column] = np.logaddexp(logprobs[row, column], value)
        return ScoreResult(logprobs=logprobs, method=self.last_score_method or "top_logprobs", exact=False)

    def _score_echo(self, prompts: Sequence[str], continuations: Sequence[str]) -> np.ndarray:
        pairs = [(i, k) for i in range(len(prompts)) for k in range(len(continuations))]
        with ThreadPoolExecutor(self.max_concurrency) as pool:
            results = list(pool.map(lambda ik: self._echo_one(prompts[ik[0]], continuations[ik[1]]), pairs))
        out = np.empty((len(prompts), len(continuations)))
        verdicts = [aligned for _, aligned in results if aligned is not None]
        if verdicts and not any(verdicts):
            raise EchoUnavailable(
                "the server's echoed log-probabilities are shifted by one position (a known llama-cpp-python bug, "
                "abetlen/llama-cpp-python#1983, when the prompt has no BOS token)"
            )
        for (i, k), (value, _) in zip(pairs, results):
            out[i, k] = value
        return out

    def _echo_one(self, prompt: str, continuation: str) -> tuple[float, bool | None]:
        """log P(continuation | prompt) from one echo request, plus whether the response was aligned."""
        text = prompt + continuation
        try:
            response = self._client.completions.create(
                model=self.model_name, prompt=text, echo=True, logprobs=1, max_tokens=1, temperature=0
            )
        except (self._openai.NotFoundError, self._openai.BadRequestError, self._openai.UnprocessableEntityError) as err:
            raise EchoUnavailable(f"completions with echo were refused: {err}") from None
        choice = response.choices[0]
        lp = choice.logprobs
        if lp is None or not lp.tokens or not (choice.text or "").startswith(text):
            raise EchoUnavailable("the server did not echo the prompt with log-probabilities")
        tokens, values, tops = lp.tokens, lp.token_logprobs, lp.top_logprobs or []
        generated = choice.text[len(text) :]
        if not "".join(tokens).endswith(generated):
            # The echoed tokens stop short of the generated text: the same off-by-one as below.
            raise EchoUnavailable("the echoed tokens do not line up with the echoed text")
        end = _consume_from_end(tokens, len(tokens), generated)
        start = _consume_from_end(tokens, end, continuation) if end is not None else None
        if end is None or start is None:
            raise TokenizationMismatch(
                f"the server tokenized {continuation!r} together with its neighbours after the prompt ending "
                f"{prompt[-40:]!r}; end the template with a complete word"
            )
        span = values[start:end]
        if any(v is None for v in span):
            raise EchoUnavailable("the server returned null log-probabilities for prompt tokens")
        aligned = None
        if end < len(tokens) and end >= 1 and len(tops) == len(tokens):
            here, before = _argmax_key(tops[end]), _argmax_key(tops[end - 1])
            spec_ok, shifted = here == tokens[end], before == tokens[end]
            if spec_ok != shifted:
                aligned = spec_ok
        return float(sum(span)), aligned

    def top_tokens(self, prompts: Sequence[str], k: int) -> list[dict[str, float]]:
        with ThreadPoolExecutor(self.max_concurrency) as pool:
            return list(pool.map(lambda p: self._top_one(p, k), prompts))

    def _top_one(self, prompt: str, k: int) -> dict[str, float]:
        if self._completions_ok is not False:
            try:
                response = self._client.completions.create(
                    model=self.model_name, prompt=prompt, logprobs=k, max_tokens=1, temperature=0
                )
                lp = response.choices[0].logprobs
                if lp is not None and lp.top_logprobs:
                    self._completions_ok = True
                    self.last_score_method = "completions-top_logprobs"
                    return dict(lp.top_logprobs[0] or {})
            except (self._openai.NotFoundError, self._openai.BadRequestError, self._openai.UnprocessableEntityError):
                pass
            self._completions_ok = False
        # Chat-only servers: the next token after the text, sent as a user turn.
        response = self._client.chat.completions.create(
            model=self.model_name,
            messages=[{"role": "user", "content": prompt}],
            max_tokens=1,
            temperature=0,
            logprobs=True,
            top_logprobs=min(k, 20),
        )
        content = response.choices[0].logprobs.content if response.choices[0].logprobs else None
        if not content:
            raise ConfigError(f"{self.name}: the server returned no logprobs; it cannot be probed")
        self.last_score_method = "chat-top_logprobs"
        return {alt.token: alt.logprob for alt in content[0].top_logprobs}


def _consume_from_end(tokens: Sequence[str], end: int, text: str) -> int | None:
    """Index i such that tokens[i:end] joins to exactly `text`, or None if a token straddles it."""
    joined, i = "", end
    while len(joined) < len(text) and i > 0:
        i -= 1
        joined = tokens[i] + joined
    return i if joined == text else None
