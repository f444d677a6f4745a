"""Shared fixtures. The embedded model loads once per session (its first-ever load converts the GGUF)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request

import pytest
from skip_policy import pytest_configure  # noqa: F401  (no skips in CI: tests/skip_policy.py)

# Tests never reach for the Hugging Face Hub.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


@pytest.fixture(scope="session", autouse=True)
def isolated_response_cache(tmp_path_factory):
    """Every test (and every subprocess a test starts, which inherits os.environ) caches model
    responses in a file of this session, never in the user's own cache."""
    path = tmp_path_factory.mktemp("response_cache") / "responses.sqlite"
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("EMOLAB_RESPONSE_CACHE", str(path))
        yield path


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="session")
def llama_server_url(tmp_path_factory):
    """A real llama.cpp (llama-cpp-python) OpenAI-compatible server on loopback, serving the embedded GGUF as "smollm2"."""
    pytest.importorskip("llama_cpp.server", reason="needs the server extra: make setup-server")
    from emotion_probe.models.providers.smollm2 import find_embedded_gguf

    port = free_port()
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


@pytest.fixture(scope="session")
def smollm2():
    from emotion_probe.models.providers.smollm2 import load_smollm2

    return load_smollm2()


@pytest.fixture(scope="session")
def shaver():
    from emotion_probe import EmotionWheel

    return EmotionWheel.load("shaver")


@pytest.fixture(scope="session")
def tiny_llama():
    """A randomly initialised 2-layer Llama built from a config: fast, offline, exactness checks."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=97, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=128, attn_implementation="sdpa",
    )
    return LlamaForCausalLM(config).eval()


@pytest.fixture(scope="session")
def write_deal_agents():
    """Writes `salesperson/model/scripted_deal.yaml` and `customer/model/scripted_deal.yaml` under a folder.

    Add the folder with `hydra.searchpath=[file://<folder>]`. The scripted agents close a deal at $7
    in one exchange per trial, with the same lines every trial, because a resumed process starts its
    script from the top again. `delay_s` makes each reply slow, for tests that interrupt a run.
    """
    import json

    emotions = ["love", "joy", "surprise", "anger", "sadness", "fear"]

    def report(**values: float) -> dict[str, float]:
        return {**dict.fromkeys(emotions, 0), **values}

    def write(folder, trials: int, delay_s: float = 0.0) -> None:
        sales = [json.dumps({"message": "This acorn is yours for $7.",
                             "predicted_customer_emotions": report(joy=60, surprise=40)})] * trials
        customer = [json.dumps({"message": "Deal.", "my_emotions": report(joy=50, love=50), "decision": "accept",
                                "price": 7}), json.dumps({"paid": "$7"})] * trials
        for role, responses in [("salesperson", sales), ("customer", customer)]:
            target = folder / role / "model"
            target.mkdir(parents=True, exist_ok=True)
            lines = [f"# @package {role}.model", "defaults:", "  - /model/scripted@_here_",
                     f"name: scripted-{role}", f"delay_s: {delay_s}", "responses:"]
            lines += [f"  - {json.dumps(text)}" for text in responses]
            (target / "scripted_deal.yaml").write_text("\n".join(lines) + "\n", encoding="utf-8")

    return write
