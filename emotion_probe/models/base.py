"""The one model interface every part of emolab talks to, in the inspect_ai style.

One abstract verb, `generate(messages, config)`: a chat completion (agents use this). Everything
else is a hook with a default, which a provider overrides where it can do better:
- `score(prompts, continuations)`: exact log P(continuation | prompt) for every pair, the basis of
  the emotion probe (default: `NotSupported`, one clear line);
- `top_tokens(prompts, k)`: the next-token top-k that the paper's method and chat-only servers
  offer (default: `NotSupported`);
- `generate_batch(conversations, configs)`: several chats at once (default: one `generate` after
  another; `batches_natively` says a provider decodes the rows together, as TransformersBackend does).

A provider also judges its own failures: `should_retry(err)` says whether a failed call may succeed if
repeated (default: a rate limit, a server error, a timeout or a dropped connection; a provider whose SDK
raises such failures as types of its own adds them).

Retry, the per-endpoint request limit, call accounting, caching and batching are wrappers around
this interface (`emotion_probe.models.wrappers.core`, `concurrency`, `cache`, `batching`), never flags
inside a provider. Two attributes tell the wrappers what they wrap: `endpoint` names the server a
backend sends its requests to (None: it computes in-process), and `fans_out` says that one `score` or
`top_tokens` call sends many independent requests. Retry and the request limit act on each request,
not on a whole call: for a backend that fans out they hand themselves down (`handing_down`) and the
provider runs each request through them (`request_layers`, `send_through`), so one failed request is
repeated alone instead of the thousands sent beside it.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable, Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any, Literal, NamedTuple, Protocol, TypeVar

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from emotion_probe.errors import EmolabError, NotSupported

Role = Literal["system", "user", "assistant"]
T = TypeVar("T")


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    role: Role
    content: str


class GenerateConfig(BaseModel):
    """Sampling settings for one `generate` call; None means the backend's own default."""

    model_config = ConfigDict(extra="forbid")

    max_tokens: int = Field(default=256, ge=1)
    temperature: float = Field(default=0.0, ge=0.0)
    top_p: float = Field(default=1.0, gt=0.0, le=1.0)
    seed: int | None = None
    stop: list[str] = Field(default_factory=list)
    #: Above 1, tokens the reply already holds are made less likely (logits divided by it when
    #: positive, multiplied when negative, as in transformers). Small models otherwise fall into
    #: loops ("I'm here. I'm here.", "0000...") that eat the whole token budget.
    repetition_penalty: float = Field(default=1.0, gt=0.0)
    #: A JSON schema the reply must follow. In-process models decode under its grammar
    #: (TransformersBackend, structured_output=grammar); servers that can constrain decoding get it
    #: as response_format (OpenAIBackend, per `structured_output`). The caller validates the reply
    #: either way, for what a schema cannot say.
    response_schema: dict[str, Any] | None = None

    def reseeded(self, *parts: int) -> GenerateConfig:
        """A copy whose seed is derived from this seed and `parts` (trial, turn, attempt, ...); no seed stays no seed.

        Calls that share a prompt and a seed sample the same text, so independent draws (another
        trial, another regeneration round) need seeds of their own, and a response cache keys on them.
        """
        if self.seed is None:
            return self
        seed = int(np.random.SeedSequence([self.seed, *parts]).generate_state(1)[0])
        return self.model_copy(update={"seed": seed})


class Generation(BaseModel):
    """The text a backend produced, with the accounting a sweep needs."""

    text: str
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    finish_reason: str | None = None


class RankedToken(NamedTuple):
    """One of a prompt's most likely next tokens."""

    id: int | None  # the vocabulary id; None where the backend reports text only (an OpenAI-compatible server)
    text: str  # the token decoded on its own
    logprob: float


@dataclass(frozen=True)
class ScoreResult:
    """Log-probabilities of each continuation after each prompt.

    `logprobs[i, k]` = log P(continuations[k] | prompts[i]); -inf where the
    method could not see that continuation (only for inexact methods).
    `method` names how the numbers were obtained, and `exact` says whether
    they are full-sequence probabilities or an approximation.
    """

    logprobs: np.ndarray
    method: str
    exact: bool


#: Receives a reply's text piece by piece as it streams, possibly from another thread (BatchingBackend
#: streams from its worker). It may also have a `restart(reason)` method: a layer that repeats a call
#: after pieces went out (RetryingBackend, when a stream dropped midway) calls it before the repeat,
#: which then streams from the start; without one, a repeat streams only what goes past the pieces sent.
TokenCallback = Callable[[str], None]


class BatchFeed(Protocol):
    """What a batcher offers a backend that decodes continuously (TransformersBackend.generate_batch).

    Between decoding steps the backend asks `admit(free)` for waiting requests, each
    (messages, config, on_token), which join the running batch; it hands each reply to
    `finished(index, generation)` the moment its row is done (rows are numbered in the order they
    joined); and it reports the number of rows of every step to `stepped(rows)`.
    """

    def admit(self, running: int) -> list[tuple[Sequence[ChatMessage], GenerateConfig, TokenCallback | None]]: ...

    def finished(self, index: int, generation: Generation) -> None: ...

    def stepped(self, rows: int) -> None: ...


#: describe() keys that record how a backend is wrapped or what it has done so far, not what it computes.
_NOT_IDENTITY = frozenset({"wrapped_by", "response_cache"})


class ModelBackend(ABC):
    """A language model, local or remote. Subclasses keep heavy imports lazy."""

    #: A short human-readable identifier, for manifests and logs (never a secret).
    name: str = "model"

    #: The server this backend sends its requests to (OpenAIBackend: its base URL), None for a model
    #: that runs in-process. Every stack that talks to one endpoint shares one request limit
    #: (wrappers.concurrency.ConcurrencyLimit), of `max_concurrency` requests at once.
    endpoint: str | None = None
    max_concurrency: int | None = None

    #: True when one `score` or `top_tokens` call sends many independent requests (OpenAIBackend: one
    #: per (prompt, continuation) pair) and runs each of them through `request_layers()`. The retry and
    #: request-limit wrappers then act per request instead of around the whole call.
    fans_out: bool = False

    @abstractmethod
    def generate(
        self,
        messages: Sequence[ChatMessage],
        config: GenerateConfig | None = None,
        on_token: TokenCallback | None = None,
    ) -> Generation:
        """Chat completion. `on_token` receives text pieces as they stream, where the backend streams."""

    #: True when `generate_batch` decodes its rows together (one forward pass per step), so that
    #: concurrent callers gain from being gathered into one batch (BatchingBackend); False when it is
    #: the default loop below.
    batches_natively: bool = False

    def generate_batch(
        self,
        conversations: Sequence[Sequence[ChatMessage | dict]],
        config: GenerateConfig | Sequence[GenerateConfig] | None = None,
        on_tokens: Sequence[TokenCallback | None] | None = None,
    ) -> list[Generation]:
        """Several chat completions; `config` is one for every row or one per row. Default: one after another."""
        if config is None or isinstance(config, GenerateConfig):
            configs = [config] * len(conversations)
        else:
            configs = list(config)
        callbacks = list(on_tokens or [None] * len(conversations))
        return [self.generate(as_messages(c), cfg, cb) for c, cfg, cb in zip(conversations, configs, callbacks)]

    def score(
        self,
        prompts: Sequence[str],
        continuations: Sequence[str],
        *,
        word_boundary: bool = False,
    ) -> ScoreResult:
        """log P(continuation | prompt) for every prompt x continuation pair, shape [N, K].

        With `word_boundary`, each continuation's probability is multiplied by the
        probability that a new word (or punctuation, or end of text) follows it.
        """
        raise NotSupported(f"model {self.name!r} ({type(self).__name__}) cannot score continuations; probe with a "
                           "model that exposes token probabilities (transformers, or a server with logprobs)")

    def top_tokens(self, prompts: Sequence[str], k: int) -> list[dict[str, float]]:
        """The k most likely next tokens after each prompt, as {token text: logprob}."""
        raise NotSupported(f"model {self.name!r} ({type(self).__name__}) cannot list its next-token top-k; "
                           "probe.method=paper needs a model that exposes token probabilities")

    def ranked_tokens(self, prompts: Sequence[str], k: int) -> list[list[RankedToken]]:
        """The k most likely next tokens after each prompt, in rank order, with their ids where the backend
        knows them: what a token-level comparison needs (two ids that decode to one text stay two entries).

        By default `top_tokens`' entries with no ids; a backend that sees its vocabulary overrides this.
        """
        return [[RankedToken(None, text, float(logprob)) for text, logprob in sorted(row.items(), key=lambda item: -item[1])]
                for row in self.top_tokens(prompts, k)]

    def should_retry(self, err: BaseException) -> bool:
        """Whether a call that failed with `err` may succeed if repeated (RetryingBackend asks this).

        By default: an HTTP status of 408, 429 or 5xx (`err.status_code` or `err.response.status_code`),
        a `TimeoutError` or a `ConnectionError`. Bad input (`EmolabError`) and every other error would
        fail the same way again. A provider whose client raises timeouts or dropped connections as
        types of its own extends this.
        """
        return transient_by_default(err)

    def num_parameters(self) -> int | None:
        """Parameter count, for scaling plots; None where the backend cannot know."""
        return None

    def context_length(self) -> int | None:
        """Maximum sequence length in tokens; None where unknown."""
        return None

    def describe(self) -> dict[str, object]:
        """What a run manifest records about this backend (no secrets)."""
        return {"backend": type(self).__name__, "name": self.name, "parameters": self.num_parameters()}

    def identity(self) -> dict[str, Any]:
        """What decides this backend's answers, for the keys that keep results apart (probe parts, a resume).

        By default what `describe()` says, less the wrapper bookkeeping, which changes nothing computed.
        A stack built by `emotion_probe.models.wrappers.stack.wrap_backend` answers with the resolved model
        config it was built from instead (the name alone would let two devices or dtypes share results).
        """
        return {key: value for key, value in self.describe().items() if key not in _NOT_IDENTITY}


def _status_code(err: BaseException) -> int | None:
    """The HTTP status an error carries: `err.status_code` (openai, most SDKs) or `err.response.status_code` (httpx)."""
    for holder in (err, getattr(err, "response", None)):
        status = getattr(holder, "status_code", None)
        if isinstance(status, int):
            return status
    return None


def transient_by_default(err: BaseException) -> bool:
    """`ModelBackend.should_retry` before a provider adds its own types: a rate limit, a server error, a
    timeout, a dropped connection; never bad input (`EmolabError`)."""
    if isinstance(err, EmolabError):
        return False
    status = _status_code(err)
    if status is not None:
        return status in (408, 429) or 500 <= status <= 599
    return isinstance(err, (TimeoutError, ConnectionError))


#: The attribute on an error that holds its backend's `should_retry` verdict (`record_retry_verdict`).
_RETRY_VERDICT = "emolab_should_retry"


def record_retry_verdict(err: BaseException, verdict: bool) -> None:
    """Keep on `err` what its backend's `should_retry` said of it, for code that meets the error later
    without that backend at hand (a task's top level deciding how to report it: `recorded_retry_verdict`)."""
    try:
        setattr(err, _RETRY_VERDICT, verdict)
    except AttributeError:  # an error type without attributes: its reader falls back to transient_by_default
        pass


def recorded_retry_verdict(err: BaseException) -> bool | None:
    """The verdict `record_retry_verdict` kept on `err`; None where none was kept."""
    verdict = getattr(err, _RETRY_VERDICT, None)
    return verdict if isinstance(verdict, bool) else None


def as_messages(messages: Sequence[ChatMessage | dict]) -> list[ChatMessage]:
    """Accept plain dicts at the boundary and validate them."""
    return [m if isinstance(m, ChatMessage) else ChatMessage.model_validate(m) for m in messages]


# ------------------------------------------------------------------ per-request layers
class RequestLayer(Protocol):
    """A wrapper that acts on each request a backend sends (RetryingBackend, ConcurrencyLimit).

    `around_request(send)` awaits `send()` (one request, on the backend's event loop) with its own
    behaviour around it: a retry sends it again, a limit holds a slot while it runs.
    """

    async def around_request(self, send: Callable[[], Awaitable[T]]) -> T: ...


#: The layers handed down to the call in progress in this thread, outermost first. A context variable
#: rather than an argument, so that the verbs keep their signatures through every wrapper in between.
_request_layers: ContextVar[tuple[RequestLayer, ...]] = ContextVar("emolab_request_layers", default=())


@contextmanager
def handing_down(layer: RequestLayer) -> Iterator[None]:
    """While the block runs (a call into a backend that `fans_out`), its requests also run through `layer`."""
    token = _request_layers.set((*_request_layers.get(), layer))
    try:
        yield
    finally:
        _request_layers.reset(token)


def request_layers() -> tuple[RequestLayer, ...]:
    """The layers handed down to this call, outermost first.

    Read in the calling thread, before the requests go to another thread or event loop (a context
    variable does not follow them there), and pass the result to `send_through`.
    """
    return _request_layers.get()


async def send_through(layers: Sequence[RequestLayer], send: Callable[[], Awaitable[T]]) -> T:
    """`await send()` inside every layer of `layers`, the first outermost."""
    if not layers:
        return await send()
    return await layers[0].around_request(lambda: send_through(layers[1:], send))
