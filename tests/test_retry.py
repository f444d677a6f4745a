"""Retries, the per-endpoint request limit, streaming and structured-output requests of the OpenAI backend.

Against a real loopback HTTP server (stdlib http.server) that speaks enough of the OpenAI API
(/v1/chat/completions, streamed or not, and /v1/completions with echo) to fail on purpose, count
concurrent requests and record what it was sent. Plus unit tests of RetryingBackend.

RetryingBackend is the one retry layer: the openai client underneath sends each request once, and in a
scoring fan-out only the request that failed is sent again. Requests are counted at the server.
"""

from __future__ import annotations

import asyncio
import email.utils
import json
import re
import threading
import time
from collections import Counter
from collections.abc import Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import SimpleNamespace

import httpx
import numpy as np
import openai
import pytest
import yaml

from agents.negotiation import turn_schemas
from emotion_probe.models.base import (ChatMessage, GenerateConfig, Generation, ModelBackend, ScoreResult, request_layers,
                                       send_through)
from emotion_probe.models.providers.openai import OpenAIBackend, strict_json_schema
from emotion_probe.models.wrappers.concurrency import EndpointSlots
from emotion_probe.models.wrappers.stack import RetryPolicy, usage_of, wrap_backend
from emotion_probe.models.wrappers.core import CountingBackend, RetryingBackend, is_transient, retry_after_seconds
from emotion_probe.errors import ConfigError, EmolabError
from experiments.app.config import RetrySettings
from emotion_probe.wheel import EmotionWheel

CustomerTurn = turn_schemas(tuple(EmotionWheel.load("shaver").primaries)).customer  # the default run's schema

CONF = Path(__file__).resolve().parents[1] / "conf"
#: conf/retry/default.yaml as shipped, with waits short enough for a test.
SHIPPED_RETRY = RetrySettings.model_validate(
    {**yaml.safe_load((CONF / "retry" / "default.yaml").read_text()), "initial_delay_s": 0.01, "max_delay_s": 0.01})
SHIPPED_POLICY = SHIPPED_RETRY.policy()

HELLO = [ChatMessage(role="user", content="Say hello.")]
STREAMED_PIECES = ["Hel", "lo", " there", "!"]


class FakeOpenAIServer:
    """An OpenAI-compatible server on 127.0.0.1:<free port>.

    `failures` are answered first, one per request, in order, as (status, headers); later requests
    succeed. Each request takes `delay_s`. `requests` records (arrival time, path, JSON body);
    `max_in_flight` is the most requests it was handling at one moment.
    """

    def __init__(self, failures: Sequence[tuple[int, dict[str, str]]] = (), delay_s: float = 0.0):
        self.failures = list(failures)
        self.delay_s = delay_s
        self.requests: list[tuple[float, str, dict]] = []
        self.in_flight = 0
        self.max_in_flight = 0
        self._lock = threading.Lock()
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # keep test output clean
                pass

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with fake._lock:
                    fake.requests.append((time.monotonic(), self.path, body))
                    failure = fake.failures.pop(0) if fake.failures else None
                    fake.in_flight += 1
                    fake.max_in_flight = max(fake.max_in_flight, fake.in_flight)
                time.sleep(fake.delay_s)
                # Done "processing" before the reply goes out: once the client has it, it may send the next.
                with fake._lock:
                    fake.in_flight -= 1
                if failure is not None:
                    status, headers = failure
                    self._send_json(status, {"error": {"message": f"failing on purpose with {status}",
                                                       "type": "test", "code": None}}, headers)
                elif self.path.endswith("/chat/completions") and body.get("stream"):
                    self._send_stream(body)
                elif self.path.endswith("/chat/completions"):
                    self._send_json(200, _chat_completion(body))
                elif self.path.endswith("/completions"):
                    self._send_json(200, _echo_completion(body))
                else:
                    self._send_json(404, {"error": {"message": "no such route", "type": "test", "code": None}})

            def _send_json(self, status: int, payload: dict, headers: dict[str, str] | None = None):
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                for name, value in (headers or {}).items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(data)

            def _send_stream(self, body: dict):
                self.send_response(200)
                self.send_header("Content-Type", "text/event-stream")
                self.end_headers()
                chunks = [{"choices": [{"index": 0, "delta": {"content": piece}, "finish_reason": None}]}
                          for piece in STREAMED_PIECES]
                chunks.append({"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]})
                if body.get("stream_options", {}).get("include_usage"):
                    chunks.append({"choices": [], "usage": {"prompt_tokens": 5, "completion_tokens": 4, "total_tokens": 9}})
                for chunk in chunks:
                    chunk.update(id="chunk", object="chat.completion.chunk", created=0, model=body["model"])
                    self.wfile.write(f"data: {json.dumps(chunk)}\n\n".encode())
                    self.wfile.flush()
                self.wfile.write(b"data: [DONE]\n\n")

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}/v1"

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


def _chat_completion(body: dict) -> dict:
    return {"id": "chat", "object": "chat.completion", "created": 0, "model": body["model"],
            "choices": [{"index": 0, "message": {"role": "assistant", "content": "Hello there!"}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 5, "completion_tokens": 3, "total_tokens": 8}}


def _echo_completion(body: dict) -> dict:
    """The prompt echoed word by word, each word at log-prob -1, then one generated token " .".

    Each position's top alternative is its own token, so the response is correctly aligned.
    """
    tokens = [*re.findall(r"\s*\S+", body["prompt"]), " ."]
    return {"id": "cmpl", "object": "text_completion", "created": 0, "model": body["model"],
            "choices": [{"index": 0, "text": body["prompt"] + " .", "finish_reason": "length",
                         "logprobs": {"tokens": tokens, "token_logprobs": [None] + [-1.0] * (len(tokens) - 1),
                                      "top_logprobs": [None] + [{t: -0.5} for t in tokens[1:]],
                                      "text_offset": list(range(len(tokens)))}}],
            "usage": {"prompt_tokens": len(tokens) - 1, "completion_tokens": 1, "total_tokens": len(tokens)}}


@pytest.fixture()
def fake_server():
    """A FakeOpenAIServer that never fails."""
    server = FakeOpenAIServer()
    yield server
    server.close()


def _server(request_finalizer, **settings) -> FakeOpenAIServer:
    """A FakeOpenAIServer with these settings, closed when the test ends."""
    server = FakeOpenAIServer(**settings)
    request_finalizer(server.close)
    return server


def _stack(url: str, retry: RetryPolicy | None = SHIPPED_POLICY, **model) -> object:
    """The stack a run builds around an OpenAIBackend (no cache)."""
    return wrap_backend(OpenAIBackend(model="m", base_url=url, **model), identity={"model": "m", "base_url": url},
                        cache=None, retry=retry)


def _score_once(backend) -> None:
    result = backend.score(["I won the final. I feel"], [" joy"])
    assert result.method == "completions-echo" and result.logprobs.tolist() == [[-1.0]]


# ------------------------------------------------------------ one retry layer, for real
@pytest.mark.parametrize("verb", ["generate", "score"])
def test_the_retry_layer_retries_429_and_503_honouring_retry_after(request, verb):
    server = _server(request.addfinalizer, failures=[(429, {"Retry-After": "1"}), (503, {})])
    backend = _stack(server.url)
    if verb == "generate":
        assert backend.generate(HELLO).text == "Hello there!"
    else:
        _score_once(backend)
    arrivals = [arrived for arrived, _, _ in server.requests]
    assert len(arrivals) == 3  # 429, 503, success: nothing more, nothing less
    assert arrivals[1] - arrivals[0] >= 0.95  # the server asked for 1 s and got it
    assert usage_of(backend)["retries"] == 2  # both retries were the retry layer's, none the client's


@pytest.mark.parametrize("verb", ["generate", "score", "top_tokens"])
def test_a_failing_request_is_sent_exactly_as_often_as_conf_retry_allows(request, verb):
    # The server fails more often than any layer would try: every attempt made reaches it and is counted.
    # Before, the client's own max_retries=4 ran under the 3 attempts of the retry layer: 15 requests.
    attempts = SHIPPED_RETRY.max_attempts
    server = _server(request.addfinalizer, failures=[(503, {})] * (attempts * 5 + 5))
    backend = _stack(server.url, max_concurrency=1)
    with pytest.raises(openai.InternalServerError):
        {"generate": lambda: backend.generate(HELLO), "score": lambda: _score_once(backend),
         "top_tokens": lambda: backend.top_tokens(["I won the final. I feel"], 5)}[verb]()
    assert len(server.requests) == attempts
    assert usage_of(backend)["retries"] == attempts - 1
    # Without the retry layer, a request is sent once: the client underneath never retries.
    bare = _server(request.addfinalizer, failures=[(503, {})] * 5)
    with pytest.raises(openai.InternalServerError):
        OpenAIBackend(model="m", base_url=bare.url).generate(HELLO)
    assert len(bare.requests) == 1


def test_in_a_score_fan_out_only_the_failed_request_is_sent_again(request):
    server = _server(request.addfinalizer, failures=[(503, {})])
    backend = _stack(server.url, max_concurrency=4)
    prompts = [f"Scenario number {i} happened. I feel" for i in range(3)]
    continuations = [" joy", " fear", " anger", " calm"]
    result = backend.score(prompts, continuations)
    np.testing.assert_array_equal(result.logprobs, np.full((3, 4), -1.0))
    sent = Counter(body["prompt"] for _, _, body in server.requests)
    # 12 pairs, one request each; the one that met the 503 went twice, and no other request was repeated
    # (retrying the whole call would have sent all 12 again).
    assert len(sent) == 12 and sorted(sent.values()) == [1] * 11 + [2]
    assert usage_of(backend)["retries"] == 1


def test_bad_request_is_never_retried(request):
    server = _server(request.addfinalizer, failures=[(400, {})])
    backend = _stack(server.url)
    with pytest.raises(openai.BadRequestError):
        backend.generate(HELLO)
    assert len(server.requests) == 1  # neither the client nor RetryingBackend tried again
    assert usage_of(backend)["retries"] == 0


@pytest.mark.parametrize("headers, at_least", [({"Retry-After": "1"}, 1.0), ({"retry-after-ms": "1500"}, 1.5)])
def test_the_retry_layer_reads_the_openai_errors(request, headers, at_least):
    # The client retries nothing, so RetryingBackend must recognise the openai errors as transient
    # and find the server's Retry-After on err.response.headers.
    server = _server(request.addfinalizer, failures=[(429, headers), (503, {})])
    waits: list[float] = []
    backend = RetryingBackend(OpenAIBackend(model="m", base_url=server.url), RetryPolicy(3, 0.01, 0.01),
                              sleep=waits.append)
    assert backend.generate(HELLO).text == "Hello there!"
    assert len(server.requests) == 3 and backend.retries == 2
    assert at_least <= waits[0] <= at_least * 1.1 and waits[1] <= 0.01


def test_timeouts_and_refused_connections_are_transient(request):
    # The backend's verdict, and the same verdict read off the error where no retry layer was (a run's top level).
    slow = _server(request.addfinalizer, delay_s=1.0)
    backend = OpenAIBackend(model="m", base_url=slow.url, timeout=0.2)
    with pytest.raises(openai.APITimeoutError) as timed_out:
        backend.generate(HELLO)
    assert backend.should_retry(timed_out.value) and is_transient(timed_out.value)
    closed = _server(request.addfinalizer)
    closed.close()  # nothing listens on this port any more
    backend = OpenAIBackend(model="m", base_url=closed.url)
    with pytest.raises(openai.APIConnectionError) as refused:
        backend.generate(HELLO)
    assert backend.should_retry(refused.value) and is_transient(refused.value)


# ------------------------------------------------------------ per-endpoint limit
def test_stacks_sharing_an_endpoint_share_its_concurrency_limit(request):
    # Two stacks over two providers, as a run's agents and probe are; each fan-out alone would send 3
    # requests at once, so together they would reach 6 without the shared limit.
    server = _server(request.addfinalizer, delay_s=0.03)
    prompts = [f"Scenario number {i} happened. I feel" for i in range(6)]
    continuations = [" joy", " fear", " anger", " calm"]
    first, second = (_stack(server.url, max_concurrency=3) for _ in range(2))
    results: dict[str, ScoreResult] = {}
    threads = [threading.Thread(target=lambda b=b, key=key: results.__setitem__(key, b.score(prompts, continuations)))
               for key, b in (("first", first), ("second", second))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(server.requests) == 2 * len(prompts) * len(continuations)
    assert 2 <= server.max_in_flight <= 3  # requests did overlap, and never beyond the endpoint's 3 slots
    for result in results.values():
        np.testing.assert_array_equal(result.logprobs, np.full((6, 4), -1.0))
        assert result.exact and result.method == "completions-echo"


def test_generate_calls_from_many_threads_share_the_endpoint_limit(request):
    server = _server(request.addfinalizer, delay_s=0.05)
    stacks = [_stack(server.url, max_concurrency=2) for _ in range(2)]
    replies: list[str] = []
    threads = [threading.Thread(target=lambda b=stacks[i % 2]: replies.append(b.generate(HELLO).text)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert replies == ["Hello there!"] * 8
    assert server.max_in_flight == 2  # 8 callers at once, 2 slots at the endpoint: full, never beyond


def test_endpoint_slots_serve_threads_and_event_loops_and_survive_a_cancelled_waiter():
    slots = EndpointSlots(1)
    slots.acquire()  # a thread holds the only slot

    async def cancelled_waiter() -> None:
        waiter = asyncio.ensure_future(slots.acquire_async())
        await asyncio.sleep(0.05)
        assert not waiter.done()  # it waits for the thread's slot
        waiter.cancel()
        await asyncio.gather(waiter, return_exceptions=True)

    asyncio.run(cancelled_waiter())
    slots.release()
    # The cancelled waiter neither kept a slot nor stays in the queue: the next holders get it at once.
    async def take_and_give_back() -> None:
        await asyncio.wait_for(slots.acquire_async(), timeout=1)
        slots.release()

    asyncio.run(take_and_give_back())
    taken = threading.Event()
    threading.Thread(target=lambda: (slots.acquire(), taken.set()), daemon=True).start()
    assert taken.wait(timeout=1)


# --------------------------------------------------------------------- streaming
def test_streamed_tokens_reach_the_callers_thread_with_usage(fake_server):
    backend = OpenAIBackend(model="m", base_url=fake_server.url)
    caller, seen = threading.get_ident(), []
    reply = backend.generate(HELLO, on_token=lambda piece: seen.append((piece, threading.get_ident())))
    # LangGraph's stream writer lives in the caller's context: pieces must arrive on the caller's thread.
    assert [piece for piece, _ in seen] == STREAMED_PIECES and {ident for _, ident in seen} == {caller}
    assert reply == Generation(text="Hello there!", prompt_tokens=5, completion_tokens=4, finish_reason="stop")


def test_an_exception_in_on_token_stops_the_stream_and_frees_its_slot(fake_server):
    backend = _stack(fake_server.url, max_concurrency=1)

    def refuse(piece: str) -> None:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        backend.generate(HELLO, on_token=refuse)
    # The endpoint has one slot: had the abandoned stream kept it, the next call would wait forever.
    replies: list[str] = []
    follow_up = threading.Thread(target=lambda: replies.append(backend.generate(HELLO).text), daemon=True)
    follow_up.start()
    follow_up.join(timeout=10)
    assert replies == ["Hello there!"]


# ----------------------------------------------------------- structured output
@pytest.mark.parametrize("mode", ["json_schema", "json_object", "none"])
def test_structured_output_request_per_setting(fake_server, mode):
    schema = CustomerTurn.model_json_schema()
    backend = OpenAIBackend(model="m", base_url=fake_server.url, structured_output=mode)
    backend.generate(HELLO, GenerateConfig(response_schema=schema))
    backend.generate(HELLO)  # no schema: never a response_format
    sent = [body.get("response_format") for _, _, body in fake_server.requests]
    assert sent[1] is None
    if mode == "none":
        assert sent[0] is None
    elif mode == "json_object":
        assert sent[0] == {"type": "json_object", "schema": schema}
    else:
        assert sent[0]["type"] == "json_schema"
        assert sent[0]["json_schema"] == {"name": "CustomerTurn", "schema": strict_json_schema(schema), "strict": True}


def test_strict_schema_closes_every_object_and_requires_every_field():
    schema = CustomerTurn.model_json_schema()
    strict = strict_json_schema(schema)
    assert strict["required"] == ["message", "my_emotions", "decision", "price"]
    assert strict["additionalProperties"] is False and "default" not in strict["properties"]["price"]
    assert {"type": "null"} in strict["properties"]["price"]["anyOf"]  # optional became nullable, still allowed
    report = strict["$defs"]["EmotionReport"]
    assert report["additionalProperties"] is False and len(report["required"]) == 6
    assert schema["required"] == ["message", "my_emotions", "decision"]  # the input is left as it was


def test_bad_structured_output_setting_names_the_field():
    with pytest.raises(ConfigError, match="model.structured_output: expected json_schema, json_object or none"):
        OpenAIBackend(model="m", base_url="http://127.0.0.1:9/v1", structured_output="xml")


# ------------------------------------------------------- RetryingBackend, unit
class HTTPFailure(Exception):
    """What an HTTP SDK raises: a status code, and the response with its headers."""

    def __init__(self, status_code: int, headers: dict[str, str] | None = None):
        super().__init__(f"HTTP {status_code}")
        self.status_code = status_code
        self.response = SimpleNamespace(status_code=status_code, headers=headers or {})


class Flaky(ModelBackend):
    """Raises the given errors, one per call, then answers."""

    def __init__(self, *errors: BaseException):
        self.errors = list(errors)
        self.calls = 0

    def generate(self, messages, config=None, on_token=None) -> Generation:
        self.calls += 1
        if self.errors:
            raise self.errors.pop(0)
        return Generation(text="ok")

    def score(self, prompts, continuations, *, word_boundary=False) -> ScoreResult:
        raise NotImplementedError

    def top_tokens(self, prompts, k):
        raise NotImplementedError


def _retrying(inner: ModelBackend, max_attempts: int, initial_delay: float = 1.0,
              max_delay: float = 30.0) -> tuple[RetryingBackend, list[float]]:
    waits: list[float] = []
    return RetryingBackend(inner, RetryPolicy(max_attempts, initial_delay, max_delay), sleep=waits.append), waits


def test_backoff_doubles_with_jitter_up_to_max_delay():
    inner = Flaky(*[HTTPFailure(503)] * 6)
    backend, waits = _retrying(inner, max_attempts=7, initial_delay=1.0, max_delay=8.0)
    assert backend.generate(HELLO).text == "ok" and inner.calls == 7
    ceilings = [1, 2, 4, 8, 8, 8]
    for wait, ceiling in zip(waits, ceilings):
        assert ceiling / 2 <= wait <= ceiling
    assert waits[0] < waits[1] < waits[2]  # [1/2, 1] < [1, 2] < [2, 4]: growth survives the jitter


def test_retry_after_is_honoured_even_above_max_delay():
    in_30s = email.utils.formatdate(time.time() + 30, usegmt=True)
    inner = Flaky(HTTPFailure(429, {"Retry-After": "120"}), HTTPFailure(429, {"retry-after": in_30s}),
                  HTTPFailure(503, {"Retry-After-Ms": "2500"}))
    backend, waits = _retrying(inner, max_attempts=4, initial_delay=0.1, max_delay=1.0)
    assert backend.generate(HELLO).text == "ok"
    assert 120 <= waits[0] <= 132 and 27 <= waits[1] <= 33.1 and 2.5 <= waits[2] <= 2.75


@pytest.mark.parametrize("error", [HTTPFailure(429), HTTPFailure(500), HTTPFailure(503), HTTPFailure(408),
                                   TimeoutError("read timed out"), ConnectionResetError("peer reset")])
def test_transient_failures_are_retried(error):
    inner = Flaky(error)
    backend, waits = _retrying(inner, max_attempts=2, initial_delay=0.5)
    assert backend.generate(HELLO).text == "ok" and inner.calls == 2 and len(waits) == 1


@pytest.mark.parametrize("error", [EmolabError("bad input"), ConfigError("model.x: wrong"), HTTPFailure(400),
                                   HTTPFailure(401), HTTPFailure(404), ValueError("a bug"), KeyError("a bug")])
def test_other_failures_are_raised_at_once(error):
    inner = Flaky(error)
    backend, waits = _retrying(inner, max_attempts=5)
    with pytest.raises(type(error)):
        backend.generate(HELLO)
    assert inner.calls == 1 and waits == []


def test_the_last_transient_failure_is_raised_after_max_attempts():
    inner = Flaky(HTTPFailure(503), HTTPFailure(502), HTTPFailure(500))
    backend, waits = _retrying(inner, max_attempts=3)
    with pytest.raises(HTTPFailure, match="HTTP 500"):
        backend.generate(HELLO)
    assert inner.calls == 3 and len(waits) == 2 and backend.usage() == {"retries": 2}


class Overloaded(Exception):
    """An SDK's own "try again later", with no status code: only the provider that raises it knows what it means."""


class Picky(Flaky):
    """A provider that judges its own failures: its Overloaded is transient, and nothing else is (not even a 503)."""

    def should_retry(self, err: BaseException) -> bool:
        return isinstance(err, Overloaded)


class PickyFanOut(Picky):
    """A Picky provider whose score sends one request per prompt through the layers handed down (as OpenAIBackend)."""

    fans_out = True

    def score(self, prompts, continuations, *, word_boundary=False) -> ScoreResult:
        layers = request_layers()

        async def send(prompt: str) -> float:
            self.calls += 1
            if self.errors:
                raise self.errors.pop(0)
            return -1.0

        async def every() -> list[float]:
            return [await send_through(layers, lambda p=prompt: send(p)) for prompt in prompts]

        return ScoreResult(np.array([[v] for v in asyncio.run(every())]), method="fake", exact=True)


def test_the_provider_decides_what_is_retried():
    inner = Picky(Overloaded("busy"))
    backend, waits = _retrying(inner, max_attempts=3, initial_delay=0.5)
    assert backend.generate(HELLO).text == "ok" and inner.calls == 2 and len(waits) == 1
    # A status every default provider retries is final where this provider says so.
    inner = Picky(HTTPFailure(503))
    backend, waits = _retrying(inner, max_attempts=3)
    with pytest.raises(HTTPFailure):
        backend.generate(HELLO)
    assert inner.calls == 1 and waits == [] and backend.retries == 0
    # A provider that does not know the error keeps the default rule: Overloaded carries no status, so it is final.
    inner = Flaky(Overloaded("busy"))
    backend, waits = _retrying(inner, max_attempts=3)
    with pytest.raises(Overloaded):
        backend.generate(HELLO)
    assert inner.calls == 1 and waits == []


def test_the_provider_decides_through_every_layer_between():
    # The retry layer asks the layer under it, which asks the provider: accounting and the cache add no verdict.
    inner = Picky(Overloaded("busy"), HTTPFailure(503))
    counted = CountingBackend(inner)
    assert counted.should_retry(Overloaded("busy")) and not counted.should_retry(HTTPFailure(503))
    backend = RetryingBackend(counted, RetryPolicy(3, 0.0, 0.0), sleep=lambda _: None)
    with pytest.raises(HTTPFailure):
        backend.generate(HELLO)
    assert inner.calls == 2 and backend.retries == 1


def test_in_a_fan_out_each_request_is_retried_as_the_provider_decides():
    inner = PickyFanOut(Overloaded("busy"))
    backend = RetryingBackend(inner, RetryPolicy(3, 0.0, 0.0), sleep=lambda _: None)
    assert backend.score(["a", "b"], [" x"]).logprobs.tolist() == [[-1.0], [-1.0]]
    assert inner.calls == 3 and backend.retries == 1  # the first request twice, the second once
    inner = PickyFanOut(HTTPFailure(503))
    backend = RetryingBackend(inner, RetryPolicy(3, 0.0, 0.0), sleep=lambda _: None)
    with pytest.raises(HTTPFailure):
        backend.score(["a", "b"], [" x"])
    assert inner.calls == 1 and backend.retries == 0


def test_the_verdict_travels_with_the_error_it_gave_up_on():
    # A run's top level meets the error without the backend: it reads the provider's verdict off the error.
    inner = Picky(Overloaded("busy"), Overloaded("still busy"))
    backend, _ = _retrying(inner, max_attempts=2)
    with pytest.raises(Overloaded) as raised:
        backend.generate(HELLO)
    assert is_transient(raised.value)
    inner = Picky(HTTPFailure(503))
    backend, _ = _retrying(inner, max_attempts=2)
    with pytest.raises(HTTPFailure) as raised:
        backend.generate(HELLO)
    assert not is_transient(raised.value)


def test_the_openai_backend_calls_its_clients_timeouts_and_dropped_connections_transient():
    backend = OpenAIBackend(model="m", base_url="http://127.0.0.1:9/v1")
    request = httpx.Request("POST", "http://127.0.0.1:9/v1/chat/completions")
    assert backend.should_retry(openai.APITimeoutError(request=request))
    assert backend.should_retry(openai.APIConnectionError(request=request))
    assert backend.should_retry(HTTPFailure(503)) and backend.should_retry(TimeoutError())  # and the default rule
    assert not backend.should_retry(HTTPFailure(400)) and not backend.should_retry(EmolabError("bad input"))
    # They are the provider's to know: a backend of another SDK does not retry them.
    assert not Flaky().should_retry(openai.APITimeoutError(request=request))


def test_retry_after_parsing_edge_cases():
    assert retry_after_seconds(ValueError("no response")) is None
    assert retry_after_seconds(HTTPFailure(429, {"Retry-After": "soon"})) is None
    assert retry_after_seconds(HTTPFailure(429, {"Retry-After": "-5"})) == 0.0
    past = email.utils.formatdate(time.time() - 60, usegmt=True)
    assert retry_after_seconds(HTTPFailure(429, {"Retry-After": past})) == 0.0


def test_bad_retry_settings_are_refused():
    with pytest.raises(ConfigError, match="retry.max_attempts must be >= 1"):
        RetryPolicy(max_attempts=0, initial_delay_s=1, max_delay_s=2)
    with pytest.raises(ValueError, match="max_attempts"):
        RetrySettings(max_attempts=0, initial_delay_s=1, max_delay_s=2)
    with pytest.raises(ValueError, match="extra"):
        RetrySettings(max_attempts=2, initial_delay_s=1, max_delay_s=2, jitter=True)
