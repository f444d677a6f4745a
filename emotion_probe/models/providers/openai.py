"""Any OpenAI-compatible endpoint, through the official `openai` client (its async flavour).

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
has no BOS token; emolab detects this rather than return wrong numbers. The rule:
- each response gets a verdict: *aligned* when the generated token is the top
  alternative at its own position and not at the one before, *shifted* when it is
  the other way round, and none when both or neither hold (a repeated token, a
  response too short to tell);
- a batch is accepted when its aligned verdicts outnumber its shifted ones, and
  refused (EchoUnavailable, so ``auto`` falls back to top_logprobs) otherwise;
- a batch where no response gives a verdict cannot be checked: it is accepted,
  with a warning, and counted as ``unchecked`` in ``describe()["echo_alignment"]``.

Falling back changes what is measured. Chat ``top_logprobs`` sends the text as a
user turn of the chat template, so the "next word" is the first word of the
model's reply, not the continuation of the text; each fallback is logged as a
warning and every scoring path used is listed in ``describe()["score_methods"]``,
which the run manifest records. The chat API returns at most
``CHAT_TOP_LOGPROBS_MAX`` alternatives: ``top_tokens(prompts, k)`` (the paper's
method) refuses a larger k there rather than return fewer than asked.

Concurrency: the public interface is synchronous, but every request runs on one
asyncio event loop in a background thread, shared by all backends of the process
(`providers.event_loop`).
Scoring fans out one request per (prompt, continuation) pair, `max_concurrency` at
a time (`fans_out`). The limit shared by every stack that talks to one endpoint
(base_url), so that the salesperson, the customer and the probe together never hold
more requests open than the server was sized for, is a wrapper:
`wrappers.concurrency.ConcurrencyLimit`, which `wrappers.stack.wrap_backend` puts
around this backend (keyed on `endpoint`).

Retries: none here. The client is built with `max_retries=0`, and the one retry
layer is `wrappers.core.RetryingBackend` (conf/retry). Each request of a fan-out
runs through the layers the wrappers hand down (`base.request_layers`), so a
transient failure repeats that one request, not the whole fan-out. Which failures are
transient is this provider's to say (`should_retry`): the client's own timeout and
connection errors, besides the statuses every provider retries.
"""

from __future__ import annotations

import json
import logging
import os
import queue
import re
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Literal, TypeVar

import numpy as np

from emotion_probe.models.base import (
    ChatMessage,
    GenerateConfig,
    Generation,
    ModelBackend,
    RequestLayer,
    ScoreResult,
    TokenCallback,
    as_messages,
    record_retry_verdict,
    request_layers,
    send_through,
)
from emotion_probe.models.providers.event_loop import event_loop, map_concurrently
from emotion_probe.redaction import redact
from emotion_probe.errors import ConfigError, EmolabError, TokenizationMismatch

log = logging.getLogger(__name__)

ProbeMethod = Literal["auto", "echo", "top_logprobs"]
StructuredOutput = Literal["json_schema", "json_object", "none"]
T = TypeVar("T")

#: The endpoint the client talks to when base_url is null.
OPENAI_API_URL = "https://api.openai.com/v1"
#: The most alternatives chat completions return per token (`top_logprobs`, 0-20 in OpenAI's API).
CHAT_TOP_LOGPROBS_MAX = 20


class EchoUnavailable(EmolabError):
    """The server cannot give exact prompt-token log-probabilities."""


def _argmax_key(candidates: dict[str, float] | None) -> str | None:
    return max(candidates, key=candidates.__getitem__) if candidates else None


# ----------------------------------------------------------- structured output
_SCHEMA_MAPS = ("properties", "$defs", "definitions", "patternProperties")
_SCHEMA_LISTS = ("anyOf", "oneOf", "allOf", "prefixItems")
_SCHEMA_SINGLE = ("items", "not", "if", "then", "else", "additionalProperties")


def strict_json_schema(schema: dict[str, Any]) -> dict[str, Any]:
    """`schema` in the subset OpenAI's strict mode accepts: every object closed and all its properties required.

    Strict mode has no optional fields and no defaults: a field that may be absent must be
    nullable instead (pydantic already writes `X | None` as anyOf [X, null]), and the caller's
    pydantic validation fills in what the model wrote.
    """
    out: dict[str, Any] = {}
    for key, value in schema.items():
        if key == "default":
            continue
        if key in _SCHEMA_MAPS and isinstance(value, dict):
            out[key] = {name: strict_json_schema(sub) if isinstance(sub, dict) else sub for name, sub in value.items()}
        elif key in _SCHEMA_LISTS and isinstance(value, list):
            out[key] = [strict_json_schema(sub) if isinstance(sub, dict) else sub for sub in value]
        elif key in _SCHEMA_SINGLE and isinstance(value, dict):
            out[key] = strict_json_schema(value)
        else:
            out[key] = value
    if out.get("type") == "object" or "properties" in out:
        out["additionalProperties"] = False
        out["required"] = list(out.get("properties", {}))
    return out


def _schema_name(schema: dict[str, Any]) -> str:
    """OpenAI wants a-z, A-Z, 0-9, _ and - in at most 64 characters; pydantic's title is the class name."""
    return re.sub(r"[^A-Za-z0-9_-]", "_", str(schema.get("title") or "response"))[:64]


class OpenAIBackend(ModelBackend):
    """Chat generation and emotion probing against an OpenAI-compatible server."""

    fans_out = True

    def __init__(
        self,
        model: str,
        base_url: str | None = None,
        api_key_env: str = "OPENAI_API_KEY",
        probe_method: ProbeMethod = "auto",
        top_logprobs: int = 20,
        max_concurrency: int = 8,
        timeout: float = 60.0,
        top_logprobs_via: Literal["auto", "completions", "chat"] = "auto",
        structured_output: StructuredOutput = "json_schema",
        name: str | None = None,
    ):
        if probe_method not in ("auto", "echo", "top_logprobs"):
            raise ConfigError(f"model.probe_method: expected auto, echo or top_logprobs, got {probe_method!r}")
        if top_logprobs_via not in ("auto", "completions", "chat"):
            raise ConfigError(f"model.top_logprobs_via: expected auto, completions or chat, got {top_logprobs_via!r}")
        if structured_output not in ("json_schema", "json_object", "none"):
            raise ConfigError(f"model.structured_output: expected json_schema, json_object or none, got {structured_output!r}")
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
        # What describe(), repr and error messages show: a key pasted into the URL is masked (the client keeps it).
        self.base_url = redact(base_url) if base_url is not None else None
        self.probe_method: ProbeMethod = probe_method
        self.top_logprobs = top_logprobs
        #: Requests one fan-out keeps in flight; stacks over one endpoint share a limit of this size (ConcurrencyLimit).
        self.max_concurrency = max_concurrency
        self.structured_output: StructuredOutput = structured_output
        self.endpoint = redact(base_url or OPENAI_API_URL).rstrip("/")
        self._openai = openai
        # The key lives only inside the client (never in an attribute of ours, a repr or describe()).
        # max_retries=0: RetryingBackend is the one retry layer; client retries underneath it would
        # multiply its attempts.
        self._make_client = lambda: openai.AsyncOpenAI(api_key=api_key, base_url=base_url, timeout=timeout,
                                                       max_retries=0)
        self._client_pid = os.getpid()
        self._client_instance = self._make_client()
        #: Method of the most recent score() call: "completions-echo", "completions-top_logprobs", "chat-top_logprobs".
        self.last_score_method: str | None = None
        #: Every scoring path used so far, in first-use order: a run that switched paths midway shows both.
        self.score_methods: list[str] = []
        #: Echo responses by alignment verdict (see the module docstring), for the manifest.
        self.echo_alignment = {"aligned": 0, "shifted": 0, "unchecked": 0}
        self._warned: set[str] = set()
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
            "score_methods": list(self.score_methods),
            "echo_alignment": dict(self.echo_alignment),
            "structured_output": self.structured_output,
            "max_concurrency": self.max_concurrency,
        }

    def identity(self) -> dict[str, Any]:
        # What the server answered so far (the scoring path it fell back to) is a record, not an identity:
        # it changes during a run, and a resume must not be refused for it.
        return {key: value for key, value in super().identity().items()
                if key not in ("last_score_method", "score_methods", "echo_alignment")}

    # ------------------------------------------------------------- plumbing
    @property
    def _client(self):
        # The client's connection pool belongs to the process that made it; a forked worker makes its own.
        if os.getpid() != self._client_pid:
            self._client_pid, self._client_instance = os.getpid(), self._make_client()
        return self._client_instance

    def should_retry(self, err: BaseException) -> bool:
        # The client raises a timeout or a dropped connection (a stream cut midway) as its own types, which
        # carry no status code and are no builtin TimeoutError or ConnectionError.
        own = (self._openai.APITimeoutError, self._openai.APIConnectionError)
        return isinstance(err, own) or super().should_retry(err)

    async def _send(self, call: Callable[[], Awaitable[T]], layers: Sequence[RequestLayer] = ()) -> T:
        """One request, through the per-request layers the wrappers handed down (retry, endpoint limit)."""
        try:
            return await send_through(layers, call)
        except json.JSONDecodeError as err:
            # The openai client lets a body that is not JSON through as a bare JSONDecodeError: a broken
            # server or proxy, not a transient failure, so it is not retried; say which server it was.
            raise EmolabError(f"{self.name}: the server at {self.endpoint} answered with a body that is not "
                              f"JSON ({err.msg} at character {err.pos})") from None
        except Exception as err:
            # Kept on the error for code above a stack without a retry layer (is_transient in the wrappers).
            record_retry_verdict(err, self.should_retry(err))
            raise

    def _used(self, method: str) -> None:
        self.last_score_method = method
        if method not in self.score_methods:
            self.score_methods.append(method)

    def _warn_once(self, key: str, message: str, *args: object) -> None:
        # Once per backend: a fan-out of thousands of requests must not print thousands of lines.
        if key not in self._warned:
            self._warned.add(key)
            log.warning(message, *args)

    # --------------------------------------------------------------- generation
    def _chat_request(self, messages: Sequence[ChatMessage | dict], config: GenerateConfig) -> dict[str, Any]:
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
        extra: dict[str, Any] = {}
        response_format = self._response_format(config.response_schema)
        if response_format is not None:
            # Sent as raw JSON: llama-cpp-python's json_object takes a "schema" key that the typed parameter lacks.
            extra["response_format"] = response_format
        if config.repetition_penalty != 1.0:
            # Not an OpenAI API parameter, but vLLM, SGLang and llama.cpp servers take it as is.
            extra["repetition_penalty"] = config.repetition_penalty
        if extra:
            request["extra_body"] = extra
        return request

    def _response_format(self, schema: dict[str, Any] | None) -> dict[str, Any] | None:
        if schema is None or self.structured_output == "none":
            return None
        if self.structured_output == "json_object":
            return {"type": "json_object", "schema": schema}
        return {"type": "json_schema",
                "json_schema": {"name": _schema_name(schema), "schema": strict_json_schema(schema), "strict": True}}

    def _refused_format(self, err: Exception, request: dict[str, Any]) -> Exception:
        """A refusal of a request that carried response_format: say which setting to change.

        Servers refuse an unknown format with 400 or 422, or (llama-cpp-python) a 500 whose message
        names response_format; other failures pass through unchanged.
        """
        status = getattr(err, "status_code", None)
        if "extra_body" not in request or not (status in (400, 422) or "response_format" in str(err)):
            return err
        return ConfigError(
            f"{self.name}: the server refused a request carrying response_format type "
            f"{request['extra_body']['response_format']['type']!r} (model.structured_output={self.structured_output}): "
            f"{' '.join(str(err).split())[:600]}. If the server does not support it, set model.structured_output to json_object "
            "(llama-cpp-python) or none"
        )

    def generate(
        self,
        messages: Sequence[ChatMessage | dict],
        config: GenerateConfig | None = None,
        on_token: TokenCallback | None = None,
    ) -> Generation:
        request = self._chat_request(messages, config or GenerateConfig())
        try:
            if on_token is None:
                return event_loop().run(self._send(lambda: self._chat(request)))
            return self._generate_streamed(request, on_token)
        except self._openai.APIStatusError as err:
            explained = self._refused_format(err, request)
            if explained is err:
                raise
            raise explained from None

    def _unexpected_shape(self, err: Exception) -> EmolabError:
        # The openai client builds its objects from any JSON without checking them, so a body of the wrong
        # shape ({"choices": []}) fails only when read: a broken server, like a body that is not JSON.
        return EmolabError(f"{self.name}: the server at {self.endpoint} answered with JSON of an unexpected shape "
                           f"({type(err).__name__}: {' '.join(str(err).split())[:200]})")

    async def _chat(self, request: dict[str, Any]) -> Generation:
        response = await self._client.chat.completions.create(**request)
        try:
            choice = response.choices[0]
            usage = response.usage
            return Generation(
                text=choice.message.content or "",
                prompt_tokens=usage.prompt_tokens if usage else None,
                completion_tokens=usage.completion_tokens if usage else None,
                finish_reason=choice.finish_reason,
            )
        except (AttributeError, IndexError, KeyError, TypeError, ValueError) as err:
            raise self._unexpected_shape(err) from None

    def _generate_streamed(self, request: dict[str, Any], on_token: TokenCallback) -> Generation:
        # on_token runs here, in the caller's thread, not on the loop: callers rely on their own
        # thread's context (LangGraph's stream writer is a context variable) and must not stall the loop.
        pieces: queue.Queue[str | None] = queue.Queue()
        future = event_loop().submit(self._send(lambda: self._chat_streamed(request, pieces.put)))
        future.add_done_callback(lambda _: pieces.put(None))  # after every piece: the queue is FIFO
        try:
            while (piece := pieces.get()) is not None:
                on_token(piece)
        except BaseException:
            future.cancel()
            raise
        return future.result()

    async def _chat_streamed(self, request: dict[str, Any], put: Callable[[str], None]) -> Generation:
        # include_usage: the last chunk carries the token counts (servers that ignore it send none).
        stream = await self._client.chat.completions.create(**request, stream=True,
                                                            stream_options={"include_usage": True})
        text: list[str] = []
        finish_reason = None
        usage = None
        try:
            async for chunk in stream:
                try:
                    usage = getattr(chunk, "usage", None) or usage
                    if not chunk.choices:
                        continue
                    delta = chunk.choices[0].delta.content or ""
                    finish_reason = chunk.choices[0].finish_reason or finish_reason
                    if not isinstance(delta, str):
                        raise TypeError(f"delta.content is a {type(delta).__name__}, not text")
                except (AttributeError, IndexError, KeyError, TypeError) as err:
                    raise self._unexpected_shape(err) from None
                if delta:
                    text.append(delta)
                    put(delta)
        finally:
            await stream.close()
        try:
            return Generation(
                text="".join(text),
                prompt_tokens=usage.prompt_tokens if usage else None,
                completion_tokens=usage.completion_tokens if usage else None,
                finish_reason=finish_reason,
            )
        except (AttributeError, ValueError) as err:  # usage without its counts, or counts that are not numbers
            raise self._unexpected_shape(err) from None

    # ------------------------------------------------------------------ scoring
    def score(self, prompts: Sequence[str], continuations: Sequence[str], *, word_boundary: bool = False) -> ScoreResult:
        if word_boundary:
            raise ConfigError(
                "probe.word_boundary needs the full next-token distribution after each word, "
                "which an OpenAI-compatible server does not return; use a transformers backend"
            )
        layers = request_layers()  # read here, in the caller's thread: the requests run on the loop's
        if self.probe_method in ("auto", "echo"):
            try:
                logprobs = event_loop().run(self._score_echo(list(prompts), list(continuations), layers))
                self._used("completions-echo")
                return ScoreResult(logprobs=logprobs, method=self.last_score_method, exact=True)
            except EchoUnavailable as err:
                if self.probe_method == "echo":
                    raise
                log.warning("%s: exact echo scoring unavailable (%s); falling back to top_logprobs (inexact)", self.name, err)
                self.probe_method = "top_logprobs"
        # Not strict: here top_logprobs is a fallback, and fewer alternatives only leave more words unseen.
        top = event_loop().run(self._top_tokens(list(prompts), self.top_logprobs, strict=False, layers=layers))
        logprobs = np.full((len(prompts), len(continuations)), -np.inf)
        wanted = {c.strip().lower(): k for k, c in enumerate(continuations)}
        for row, candidates in enumerate(top):
            for token, value in candidates.items():
                column = wanted.get(token.strip().lower())
                if column is not None:
                    logprobs[row, column] = np.logaddexp(logprobs[row, column], value)
        return ScoreResult(logprobs=logprobs, method=self.last_score_method or "top_logprobs", exact=False)

    async def _score_echo(self, prompts: list[str], continuations: list[str],
                          layers: Sequence[RequestLayer]) -> np.ndarray:
        pairs = [(i, k) for i in range(len(prompts)) for k in range(len(continuations))]
        results = await map_concurrently(lambda ik: self._echo_one(prompts[ik[0]], continuations[ik[1]], layers),
                                          pairs, self.max_concurrency)
        out = np.empty((len(prompts), len(continuations)))
        self._check_alignment([aligned for _, aligned in results])
        for (i, k), (value, _) in zip(pairs, results):
            out[i, k] = value
        return out

    def _check_alignment(self, verdicts: list[bool | None]) -> None:
        """The batch rule of the module docstring: aligned verdicts must outnumber shifted ones."""
        aligned, shifted = verdicts.count(True), verdicts.count(False)
        unchecked = len(verdicts) - aligned - shifted
        if not verdicts:
            return
        if aligned + shifted == 0:
            self.echo_alignment["unchecked"] += unchecked
            self._warn_once("unchecked", "%s: no echo response could be checked for alignment (each generated token "
                            "is the top alternative at both or neither of the last two positions); the scores "
                            "are used as the server reported them", self.name)
            return
        if shifted >= aligned:
            raise EchoUnavailable(
                f"the server's echoed log-probabilities are shifted by one position in {shifted} of "
                f"{aligned + shifted} checked responses (a known llama-cpp-python bug, abetlen/llama-cpp-python#1983, "
                "when the prompt has no BOS token)"
            )
        self.echo_alignment["aligned"] += aligned
        self.echo_alignment["shifted"] += shifted
        self.echo_alignment["unchecked"] += unchecked

    async def _echo_one(self, prompt: str, continuation: str,
                        layers: Sequence[RequestLayer]) -> tuple[float, bool | None]:
        """log P(continuation | prompt) from one echo request, plus whether the response was aligned."""
        text = prompt + continuation
        try:
            response = await self._send(lambda: self._client.completions.create(
                model=self.model_name, prompt=text, echo=True, logprobs=1, max_tokens=1, temperature=0
            ), layers)
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
        """The top k next tokens; refuses (ConfigError) where the server's path cannot return k of them."""
        return event_loop().run(self._top_tokens(list(prompts), k, strict=True, layers=request_layers()))

    def _refuse_chat_cap(self, k: int) -> None:
        raise ConfigError(
            f"{self.name}: asked for the top {k} next tokens, but this server is probed through chat completions, "
            f"which return at most {CHAT_TOP_LOGPROBS_MAX} (top_logprobs); with probe.method=paper set probe.top_k "
            f"<= {CHAT_TOP_LOGPROBS_MAX}, or use a server that serves completions with logprobs"
        )

    async def _top_tokens(self, prompts: list[str], k: int, *, strict: bool,
                          layers: Sequence[RequestLayer]) -> list[dict[str, float]]:
        if not prompts:
            return []
        if strict and self._completions_ok is False and k > CHAT_TOP_LOGPROBS_MAX:
            self._refuse_chat_cap(k)  # known before any request: chat is configured or was found earlier
        first: list[dict[str, float]] = []
        if self._completions_ok is None:
            # Find out once, on one prompt, whether completions serve logprobs, before fanning out.
            first, prompts = [await self._top_one(prompts[0], k, strict, layers)], prompts[1:]
        return first + await map_concurrently(lambda p: self._top_one(p, k, strict, layers), prompts,
                                               self.max_concurrency)

    async def _top_one(self, prompt: str, k: int, strict: bool, layers: Sequence[RequestLayer]) -> dict[str, float]:
        if self._completions_ok is not False:
            reason = "the response carried no logprobs"
            try:
                response = await self._send(lambda: self._client.completions.create(
                    model=self.model_name, prompt=prompt, logprobs=k, max_tokens=1, temperature=0
                ), layers)
                lp = response.choices[0].logprobs
                if lp is not None and lp.top_logprobs:
                    self._completions_ok = True
                    self._used("completions-top_logprobs")
                    return dict(lp.top_logprobs[0] or {})
            except (self._openai.NotFoundError, self._openai.BadRequestError, self._openai.UnprocessableEntityError) as err:
                reason = f"refused with HTTP {err.status_code}"
            self._completions_ok = False
            self._warn_once(
                "chat", "%s: completions with logprobs are unavailable (%s); probing through chat top_logprobs "
                "instead, which sends the text as a user message: the 'next word' is then the first word of the "
                "model's reply, not the continuation of the text", self.name, reason)
        if k > CHAT_TOP_LOGPROBS_MAX:
            if strict:
                self._refuse_chat_cap(k)
            self._warn_once("cap", "%s: chat completions return at most %d alternatives; model.top_logprobs=%d "
                            "is cut to %d", self.name, CHAT_TOP_LOGPROBS_MAX, k, CHAT_TOP_LOGPROBS_MAX)
        # Chat-only servers: the next token after the text, sent as a user turn.
        response = await self._send(lambda: self._client.chat.completions.create(
            model=self.model_name,
            messages=[{"role": "user", "content": prompt}],
            max_tokens=1,
            temperature=0,
            logprobs=True,
            top_logprobs=min(k, CHAT_TOP_LOGPROBS_MAX),
        ), layers)
        content = response.choices[0].logprobs.content if response.choices[0].logprobs else None
        if not content:
            raise ConfigError(f"{self.name}: the server returned no logprobs; it cannot be probed")
        self._used("chat-top_logprobs")
        return {alt.token: alt.logprob for alt in content[0].top_logprobs}


def _consume_from_end(tokens: Sequence[str], end: int, text: str) -> int | None:
    """Index i such that tokens[i:end] joins to exactly `text`, or None if a token straddles it."""
    joined, i = "", end
    while len(joined) < len(text) and i > 0:
        i -= 1
        joined = tokens[i] + joined
    return i if joined == text else None
