"""The OpenAI backend against a real OpenAI-compatible server: llama.cpp on loopback, embedded GGUF."""

from __future__ import annotations

import json
import logging
import socket
import subprocess
import sys
import time
import urllib.request

import numpy as np
import pytest
from scipy.stats import spearmanr

from emotion_probe import EmotionProbe, EmotionWheel
from emotion_probe.backends.openai_backend import EchoUnavailable, OpenAIBackend
from emotion_probe.backends.smollm2 import find_embedded_gguf

pytestmark = [pytest.mark.server, pytest.mark.embedded]

# SmolLM2's BOS text. llama-cpp-python aligns echoed log-probs correctly only when the
# prompt starts with BOS (abetlen/llama-cpp-python#1983), so the agreement test uses it.
BOS = "<|im_start|>"
TEXTS = ["My dog died this morning and I keep looking at his bowl.", "I won the regional chess final!"]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def server_url(tmp_path_factory):
    pytest.importorskip("llama_cpp.server", reason="needs the server extra: make setup-server")
    port = _free_port()
    # A file, not a pipe: llama.cpp logs enough at start-up to fill a pipe nobody reads, and block.
    log_path = tmp_path_factory.mktemp("llama_server") / "server.log"
    log_file = log_path.open("wb")
    process = subprocess.Popen(
        [sys.executable, "-m", "llama_cpp.server", "--model", str(find_embedded_gguf()), "--logits_all", "true",
         "--host", "127.0.0.1", "--port", str(port), "--model_alias", "smollm2", "--n_ctx", "2048"],
        stdout=log_file, stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}/v1"
    deadline = time.time() + 120
    try:
        while True:
            try:
                urllib.request.urlopen(f"{url}/models", timeout=2)
                break
            except OSError:
                if process.poll() is not None:
                    pytest.fail(f"llama.cpp server exited: {log_path.read_text(errors='replace')[-2000:]}")
                if time.time() > deadline:
                    pytest.fail("llama.cpp server did not start within 120 s")
                time.sleep(0.5)
        yield url
    finally:
        process.terminate()
        process.wait(timeout=30)
        log_file.close()


@pytest.fixture()
def backend(server_url):
    return OpenAIBackend(model="smollm2", base_url=server_url, max_concurrency=2)


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
    remote = EmotionProbe(backend, wheel, template=template)
    remote_dist = remote.distribution(TEXTS)
    local_dist = EmotionProbe(smollm2, wheel, template=template).distribution(TEXTS)
    assert remote.last_method == "completions-echo" and remote.last_exact
    for remote_row, local_row in zip(remote_dist, local_dist):
        assert 0.5 * np.abs(remote_row - local_row).sum() < 0.1
        assert spearmanr(remote_row, local_row).statistic > 0.95
        assert remote_row.argmax() == local_row.argmax()


def test_misaligned_echo_is_detected_not_reported(server_url):
    strict = OpenAIBackend(model="smollm2", base_url=server_url, probe_method="echo")
    with pytest.raises(EchoUnavailable, match="do not line up|shifted"):
        EmotionProbe(strict, "ekman").distribution(TEXTS[:1])
    lenient = OpenAIBackend(model="smollm2", base_url=server_url, probe_method="auto")
    probe = EmotionProbe(lenient, "ekman", template="{text} I feel")
    dist = probe.distribution(TEXTS[:1])
    assert probe.last_exact is False and probe.last_method == "completions-top_logprobs"
    assert lenient.probe_method == "top_logprobs"
    assert np.isnan(dist).all() or np.isclose(np.nansum(dist), 1.0)


def test_chat_top_logprobs_fallback(server_url):
    chat = OpenAIBackend(model="smollm2", base_url=server_url, probe_method="top_logprobs", top_logprobs_via="chat")
    top = chat.top_tokens(["Reply with one word: how does winning feel?"], 5)[0]
    assert 1 <= len(top) <= 5 and all(v <= 0 for v in top.values())
    probe = EmotionProbe(chat, "ekman")
    dist = probe.distribution(["I won the regional chess final!"])
    assert probe.last_method == "chat-top_logprobs" and probe.last_exact is False
    assert dist.shape == (1, 6)


def test_api_key_never_leaks(server_url, caplog, monkeypatch, tmp_path):
    secret = "sk-emolab-test-secret-0123456789"
    monkeypatch.setenv("EMOLAB_TEST_KEY", secret)
    backend = OpenAIBackend(model="smollm2", base_url=server_url, api_key_env="EMOLAB_TEST_KEY")
    with caplog.at_level(logging.DEBUG):
        backend.generate([{"role": "user", "content": "hi"}])
    assert secret not in caplog.text
    assert secret not in repr(backend)
    assert secret not in json.dumps(backend.describe(), default=str)


def test_missing_key_for_the_openai_api_is_a_clear_error(monkeypatch):
    from emotion_probe import ConfigError

    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    with pytest.raises(ConfigError, match="OPENAI_API_KEY is not set"):
        OpenAIBackend(model="gpt-4o-mini")
