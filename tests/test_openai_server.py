"""The OpenAI backend against a real OpenAI-compatible server: llama.cpp on loopback, embedded GGUF.

The server is the session fixture `llama_server_url` (tests/conftest.py).
"""

from __future__ import annotations

import json
import logging

from typing import Literal

import numpy as np
import pytest
from pydantic import BaseModel, ConfigDict
from scipy.stats import spearmanr

from agents.structured import call_structured
from emotion_probe import ConfigError, EmotionProbe, EmotionWheel
from emotion_probe.models.base import ChatMessage, GenerateConfig
from emotion_probe.models.providers.openai import EchoUnavailable, OpenAIBackend
from experiments.app.config import build_probe, probe_settings

pytestmark = [pytest.mark.server, pytest.mark.embedded]

# SmolLM2's BOS text. llama-cpp-python aligns echoed log-probs correctly only when the
# prompt starts with BOS (abetlen/llama-cpp-python#1983), so the agreement test uses it.
BOS = "<|im_start|>"
TEXTS = ["My dog died this morning and I keep looking at his bowl.", "I won the regional chess final!"]


@pytest.fixture()
def backend(llama_server_url):
    return OpenAIBackend(model="smollm2", base_url=llama_server_url, max_concurrency=2)


def test_chat_generation_plain_and_streamed(backend):
    reply = backend.generate([{"role": "user", "content": "Say hello."}])
    assert reply.text.strip() and reply.finish_reason in ("stop", "length")
    pieces: list[str] = []
    streamed = backend.generate([{"role": "user", "content": "Say hello."}], on_token=pieces.append)
    assert len(pieces) > 1 and "".join(pieces) == streamed.text


def test_echo_probe_agrees_with_transformers(backend, smollm2):
    # Tolerance: llama.cpp computes with Q4_1 weights and 8-bit-quantized activations, while
    # transformers runs the same weights de-quantized in fp32. Per-token log-probs differ by up to
    # ~0.5 nats (measured), so we ask for the same ranking and a small total-variation distance,
    # not equality. A misaligned or mis-parsed echo gives rank correlations near zero.
    wheel = EmotionWheel.load("plutchik")
    template = BOS + "{text} The emotion in this sentence is"
    remote = EmotionProbe(backend, wheel, probe_settings(wheel=wheel.source, template=template))
    remote_dist = remote.distribution(TEXTS)
    local_dist = EmotionProbe(smollm2, wheel, probe_settings(wheel=wheel.source, template=template)).distribution(TEXTS)
    assert remote.last_method == "completions-echo" and remote.last_exact
    for remote_row, local_row in zip(remote_dist, local_dist):
        assert 0.5 * np.abs(remote_row - local_row).sum() < 0.1
        assert spearmanr(remote_row, local_row).statistic > 0.95
        assert remote_row.argmax() == local_row.argmax()


def test_misaligned_echo_is_detected_not_reported(llama_server_url):
    strict = OpenAIBackend(model="smollm2", base_url=llama_server_url, probe_method="echo")
    with pytest.raises(EchoUnavailable, match="do not line up|shifted"):
        build_probe(strict, wheel="ekman").distribution(TEXTS[:1])
    lenient = OpenAIBackend(model="smollm2", base_url=llama_server_url, probe_method="auto")
    probe = build_probe(lenient, wheel="ekman", template="{text} I feel")
    dist = probe.distribution(TEXTS[:1])
    assert probe.last_exact is False and probe.last_method == "completions-top_logprobs"
    assert lenient.probe_method == "top_logprobs"
    assert np.isnan(dist).all() or np.isclose(np.nansum(dist), 1.0)


def test_chat_top_logprobs_fallback(llama_server_url):
    chat = OpenAIBackend(model="smollm2", base_url=llama_server_url, probe_method="top_logprobs", top_logprobs_via="chat")
    top = chat.top_tokens(["Reply with one word: how does winning feel?"], 5)[0]
    assert 1 <= len(top) <= 5 and all(v <= 0 for v in top.values())
    probe = build_probe(chat, wheel="ekman")
    dist = probe.distribution(["I won the regional chess final!"])
    assert probe.last_method == "chat-top_logprobs" and probe.last_exact is False
    assert dist.shape == (1, 6)


def test_api_key_never_leaks(llama_server_url, caplog, monkeypatch, tmp_path):
    secret = "sk-emolab-test-secret-0123456789"
    monkeypatch.setenv("EMOLAB_TEST_KEY", secret)
    backend = OpenAIBackend(model="smollm2", base_url=llama_server_url, api_key_env="EMOLAB_TEST_KEY")
    with caplog.at_level(logging.DEBUG):
        backend.generate([{"role": "user", "content": "hi"}])
    assert secret not in caplog.text
    assert secret not in repr(backend)
    assert secret not in json.dumps(backend.describe(), default=str)


def test_missing_key_for_the_openai_api_is_a_clear_error(monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    with pytest.raises(ConfigError, match="OPENAI_API_KEY is not set"):
        OpenAIBackend(model="gpt-4o-mini")


class Mood(BaseModel):
    """Small enough that llama.cpp's grammar enforces all of it: an enum, a string, a boolean."""

    model_config = ConfigDict(extra="forbid")

    feeling: Literal["happy", "sad", "angry", "afraid"]
    reason: str
    would_tell_a_friend: bool


MOOD_QUESTION = [ChatMessage(role="user", content="I just won the regional chess final! How do I feel? Answer in JSON.")]


def test_structured_output_round_trips_through_the_schema(llama_server_url):
    # llama-cpp-python takes the schema as response_format {"type": "json_object", "schema": ...} and turns it
    # into a grammar, so the 135M model's very first reply must already validate: no retries allowed.
    backend = OpenAIBackend(model="smollm2", base_url=llama_server_url, structured_output="json_object")
    reply = call_structured(backend, MOOD_QUESTION, Mood, max_retries=0, config=GenerateConfig(max_tokens=96))
    assert reply.parse_status == "ok" and reply.attempts == 1, reply.raw
    assert Mood.model_validate_json(reply.raw) == reply.parsed
    pieces: list[str] = []
    streamed = call_structured(backend, MOOD_QUESTION, Mood, max_retries=0, config=GenerateConfig(max_tokens=96),
                               on_token=pieces.append)
    assert streamed.parse_status == "ok" and "".join(pieces) == streamed.raw


def test_unsupported_structured_output_names_the_setting(llama_server_url):
    # This server accepts only response_format types text and json_object (and answers others with a 500,
    # which a RetryingBackend would retry; the bare backend sends it once). The error says what to change.
    backend = OpenAIBackend(model="smollm2", base_url=llama_server_url, structured_output="json_schema")
    with pytest.raises(ConfigError, match=r"(?s)model\.structured_output=json_schema.*set model\.structured_output to json_object"):
        call_structured(backend, MOOD_QUESTION, Mood, max_retries=0, config=GenerateConfig(max_tokens=8))
