"""The OpenAI backend against loopback servers that fail mid-way (429 and 503 are in test_retry.py):
a stream dropped in the middle, a body that is not JSON, a server that never answers."""

from __future__ import annotations

import time

import openai
import pytest
from loopback import Hang, Raw, Reply, ScriptedServer, Stream, chat_chunks

from emotion_probe.models.providers.openai import OpenAIBackend
from emotion_probe.errors import EmolabError

HELLO = [{"role": "user", "content": "Say hello."}]


def _server(request, respond) -> ScriptedServer:
    server = ScriptedServer(respond)
    request.addfinalizer(server.close)
    return server


def test_a_stream_dropped_midway_is_a_transient_error_after_the_pieces_that_arrived(request):
    server = _server(request, lambda path, body: Stream(chat_chunks(body["model"], ["Hel", "lo", " there"]), drop_after=2))
    pieces: list[str] = []
    backend = OpenAIBackend(model="m", base_url=server.url)
    with pytest.raises(openai.APIConnectionError) as dropped:
        backend.generate(HELLO, on_token=pieces.append)
    assert pieces == ["Hel", "lo"]  # what arrived was delivered; nothing was made up after the drop
    assert backend.should_retry(dropped.value)  # so the retry layer tries again


def test_a_body_that_is_not_json_is_one_clear_error(request):
    server = _server(request, lambda path, body: Raw(b'{"id": "chat", "choices": ['))
    backend = OpenAIBackend(model="m", base_url=server.url)
    with pytest.raises(EmolabError, match=r"^m: the server at http://127\.0\.0\.1:\d+/v1 answered with a body that is "
                                          r"not JSON \(Expecting value at character 27\)$") as raised:
        backend.generate(HELLO)
    assert not backend.should_retry(raised.value)  # a broken server is not retried
    assert len(server.requests) == 1


def test_a_server_that_hangs_times_out_as_a_transient_error(request):
    server = _server(request, lambda path, body: Hang())
    backend = OpenAIBackend(model="m", base_url=server.url, timeout=0.5)
    started = time.monotonic()
    with pytest.raises(openai.APITimeoutError) as timed_out:
        backend.generate(HELLO)
    assert 0.4 < time.monotonic() - started < 10
    assert backend.should_retry(timed_out.value)


@pytest.mark.parametrize("respond", [
    lambda path, body: Reply(200, {"id": "chat", "object": "chat.completion", "choices": []}),
    lambda path, body: Reply(200, {"id": "chat", "object": "chat.completion", "choices": [{"index": 0}]}),
])
def test_json_of_the_wrong_shape_is_one_clear_error(request, respond):
    # The openai client builds its objects without checking them, so this used to end in an IndexError
    # or AttributeError from deep inside the backend.
    server = _server(request, respond)
    backend = OpenAIBackend(model="m", base_url=server.url)
    with pytest.raises(EmolabError, match=r"^m: the server at http://127\.0\.0\.1:\d+/v1 answered with JSON of an "
                                          r"unexpected shape \((IndexError|AttributeError): ") as raised:
        backend.generate(HELLO)
    assert not backend.should_retry(raised.value)


def test_a_stream_chunk_of_the_wrong_shape_is_one_clear_error(request):
    chunks = chat_chunks("m", ["Hel"])
    chunks.insert(1, {**chunks[0], "choices": [{"index": 0, "delta": {"content": 5}, "finish_reason": None}]})
    server = _server(request, lambda path, body: Stream(chunks))
    pieces: list[str] = []
    with pytest.raises(EmolabError, match=r"answered with JSON of an unexpected shape \(TypeError: delta\.content "
                                          r"is a int, not text\)"):
        OpenAIBackend(model="m", base_url=server.url).generate(HELLO, on_token=pieces.append)
    assert pieces == ["Hel"]
