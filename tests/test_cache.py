"""The response cache, the counting layer and the standard stack (wrap_backend, usage_of)."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import yaml

from emotion_probe.models.base import ChatMessage, GenerateConfig, Generation, ModelBackend, ScoreResult
from emotion_probe.models.wrappers.cache import CachingBackend, ResponseCacheError
from emotion_probe.models.providers.scripted import ScriptedBackend
from emotion_probe.models.wrappers.stack import CacheOptions, RetryPolicy, response_cache_path, usage_of, wrap_backend
from experiments.app.config import CacheSettings, RetrySettings
from emotion_probe.models.wrappers.core import CountingBackend, RetryingBackend
from emotion_probe.errors import ConfigError

CONF = Path(__file__).resolve().parents[1] / "conf"
ASK = [ChatMessage(role="user", content="How much for the acorn?")]
GREEDY = GenerateConfig(temperature=0.0)
SAMPLED = GenerateConfig(temperature=0.7)
CACHE_ON = CacheOptions(path=None, generate="deterministic")


def _scripted_stack(path: Path, responses: list[str], generate: str = "deterministic"):
    """What experiments build: the scripted backend, with its config as the cache identity."""
    identity = {"_target_": "emotion_probe.models.providers.scripted.ScriptedBackend", "responses": responses,
                "continuation_logprobs": {" joy": -1.0, " fear": -2.0}}
    provider = ScriptedBackend(responses, continuation_logprobs=identity["continuation_logprobs"])
    stack = wrap_backend(provider, identity=identity, cache=CacheOptions(path=str(path), generate=generate),
                         retry=None)
    return stack, provider


class ByPrompt(ModelBackend):
    """Answers that depend on the prompt, and a record of exactly what reached the model."""

    name = "by-prompt"

    def __init__(self, method: str = "exact-method", exact: bool = True):
        self.method, self.exact = method, exact
        self.asked: list[tuple[str, list[str]]] = []

    def generate(self, messages, config=None, on_token=None) -> Generation:
        self.asked.append(("generate", [m.content for m in messages]))
        text = f"reply to {messages[-1].content}"
        if on_token:
            on_token(text)
        return Generation(text=text, prompt_tokens=7, completion_tokens=3, finish_reason="stop")

    def generate_batch(self, conversations, config=None, on_tokens=None) -> list[Generation]:
        self.asked.append(("generate_batch", [c[-1].content for c in conversations]))
        return [Generation(text=f"reply to {c[-1].content}", prompt_tokens=7, completion_tokens=3) for c in conversations]

    def score(self, prompts, continuations, *, word_boundary=False) -> ScoreResult:
        self.asked.append(("score", list(prompts)))
        rows = [[-float(len(p) + k) for k in range(len(continuations))] for p in prompts]
        if prompts:
            rows[0][-1] = -np.inf  # an unseen continuation must survive the round trip
        return ScoreResult(logprobs=np.array(rows).reshape(len(prompts), len(continuations)), method=self.method,
                           exact=self.exact)

    def top_tokens(self, prompts, k) -> list[dict[str, float]]:
        self.asked.append(("top_tokens", list(prompts)))
        return [{f" {p[:3]}": -0.5, " other": -1.5} for p in prompts]


def _expected_rows(prompts: list[str], width: int) -> np.ndarray:
    return np.array([[-float(len(p) + k) for k in range(width)] for p in prompts])


# ------------------------------------------------------------------- generate
def test_a_rerun_makes_no_model_calls(tmp_path):
    path = tmp_path / "responses.sqlite"
    first, provider = _scripted_stack(path, ["$9, a fine acorn.", "$8 then."])
    assert first.generate(ASK, GREEDY).text == "$9, a fine acorn."
    assert first.generate(ASK, GREEDY).text == "$9, a fine acorn."  # same request: answered from the file
    assert len(provider.seen) == 1
    assert usage_of(first)["cache"] == {"hits": 1, "misses": 1, "uncached": 0}
    assert usage_of(first)["calls"] == {"generate": 1}  # counting sits below the cache: real calls only
    # A new process with the same config: the same answers, and the model is never asked.
    again, fresh_provider = _scripted_stack(path, ["$9, a fine acorn.", "$8 then."])
    streamed: list[str] = []
    assert again.generate(ASK, GREEDY, on_token=streamed.append).text == "$9, a fine acorn."
    assert fresh_provider.seen == [] and "".join(streamed) == "$9, a fine acorn."
    assert usage_of(again) == {"calls": {}, "prompt_tokens": 0, "completion_tokens": 0,
                               "generations_without_usage": 0, "cache": {"hits": 1, "misses": 0, "uncached": 0}}


def test_another_script_is_another_model(tmp_path):
    path = tmp_path / "responses.sqlite"
    one, _ = _scripted_stack(path, ["A"])
    other, other_provider = _scripted_stack(path, ["B"])
    assert one.generate(ASK, GREEDY).text == "A"
    assert other.generate(ASK, GREEDY).text == "B" and len(other_provider.seen) == 1


@pytest.mark.parametrize("config, cached", [
    (GREEDY, True), (GenerateConfig(temperature=0.7, seed=3), True), (SAMPLED, False)])
def test_deterministic_setting_caches_only_reproducible_generations(tmp_path, config, cached):
    inner = ByPrompt()
    backend = CachingBackend(inner, tmp_path / "c.sqlite", {"model": "m"}, generate="deterministic")
    backend.generate(ASK, config)
    backend.generate(ASK, config)
    assert len(inner.asked) == (1 if cached else 2)
    assert backend.usage()["cache"]["uncached"] == (0 if cached else 2)


@pytest.mark.parametrize("setting, calls", [("always", 1), ("never", 2)])
def test_always_and_never(tmp_path, setting, calls):
    inner = ByPrompt()
    backend = CachingBackend(inner, tmp_path / "c.sqlite", {"model": "m"}, generate=setting)
    config = SAMPLED if setting == "always" else GREEDY
    assert backend.generate(ASK, config).text == backend.generate(ASK, config).text
    assert len(inner.asked) == calls


def test_every_part_of_the_request_is_in_the_key(tmp_path):
    inner = ByPrompt()
    backend = CachingBackend(inner, tmp_path / "c.sqlite", {"model": "m"})
    variants = [
        (ASK, GREEDY),
        ([ChatMessage(role="system", content="Be brief."), *ASK], GREEDY),
        (ASK, GenerateConfig(max_tokens=17)),
        (ASK, GenerateConfig(stop=["\n"])),
        (ASK, GenerateConfig(top_p=0.5)),
        (ASK, GenerateConfig(response_schema={"type": "object"})),
    ]
    for messages, config in variants:
        backend.generate(messages, config)
    assert len(inner.asked) == len(variants)
    backend.generate([m.model_dump() for m in ASK], None)  # plain dicts and a None config mean the same request
    assert len(inner.asked) == len(variants)


# -------------------------------------------------------------------- scoring
def test_score_sends_only_the_rows_it_has_not_seen(tmp_path):
    inner = ByPrompt(method="completions-echo")
    backend = CachingBackend(CountingBackend(inner), tmp_path / "c.sqlite", {"model": "m"})
    words = [" joy", " fear", " calm"]
    first = backend.score(["a b", "ccc d"], words)
    np.testing.assert_array_equal(first.logprobs[1], _expected_rows(["ccc d"], 3)[0])
    grown = backend.score(["new one", "a b", "ccc d", "new one"], words)
    assert inner.asked == [("score", ["a b", "ccc d"]), ("score", ["new one"])]  # one call, only the new prompt
    expected = _expected_rows(["new one", "a b", "ccc d", "new one"], 3)
    expected[0, -1] = expected[3, -1] = -np.inf  # "new one" was the first row of its call
    expected[1, -1] = -np.inf  # so was "a b"
    np.testing.assert_array_equal(grown.logprobs, expected)
    assert grown.method == "completions-echo" and grown.exact
    assert backend.usage()["cache"] == {"hits": 3, "misses": 3, "uncached": 0}
    assert usage_of(backend)["calls"] == {"score": 2, "scored_prompts": 3}
    # A different set of continuations, or word_boundary, is a different question.
    backend.score(["a b"], words[:2])
    backend.score(["a b"], words, word_boundary=True)
    assert len(inner.asked) == 4


def test_rows_from_different_methods_are_reported_as_such(tmp_path):
    path = tmp_path / "c.sqlite"
    CachingBackend(ByPrompt(method="completions-echo"), path, {"model": "m"}).score(["old"], [" joy"])
    mixed = CachingBackend(ByPrompt(method="chat-top_logprobs", exact=False), path, {"model": "m"}).score(
        ["old", "new"], [" joy"])
    assert mixed.method == "chat-top_logprobs+completions-echo" and mixed.exact is False


def test_top_tokens_are_cached_per_prompt(tmp_path):
    inner = ByPrompt()
    backend = CachingBackend(inner, tmp_path / "c.sqlite", {"model": "m"})
    assert backend.top_tokens(["abcdef"], 5) == [{" abc": -0.5, " other": -1.5}]
    assert backend.top_tokens(["xyz", "abcdef"], 5) == [{" xyz": -0.5, " other": -1.5}, {" abc": -0.5, " other": -1.5}]
    backend.top_tokens(["abcdef"], 10)  # another k: another question
    assert inner.asked == [("top_tokens", ["abcdef"]), ("top_tokens", ["xyz"]), ("top_tokens", ["abcdef"])]


# ------------------------------------------------------------ batched generation
def test_batched_generation_goes_through_the_cache_and_the_counter(tmp_path):
    inner = ByPrompt()
    stack = wrap_backend(inner, identity={"model": "m"}, cache=CacheOptions(path=str(tmp_path / "c.sqlite"),
                                                                             generate="deterministic"),
                         retry=RetryPolicy(max_attempts=2, initial_delay_s=0, max_delay_s=0))
    talk = [[ChatMessage(role="user", content=text)] for text in ("one", "two")]
    assert [g.text for g in stack.generate_batch(talk, GREEDY)] == ["reply to one", "reply to two"]
    more = [*talk, [ChatMessage(role="user", content="three")]]
    pieces: list[str] = []
    replies = stack.generate_batch(more, GREEDY, [pieces.append, None, None])
    assert [g.text for g in replies] == ["reply to one", "reply to two", "reply to three"]
    assert pieces == ["reply to one"]  # a cached reply is replayed to its caller's callback
    assert inner.asked == [("generate_batch", ["one", "two"]), ("generate_batch", ["three"])]
    assert usage_of(stack)["calls"] == {"generate": 3} and usage_of(stack)["completion_tokens"] == 9
    assert wrap_backend(ScriptedBackend(), identity={}, cache=None, retry=None).batches_natively is False


# ------------------------------------------------------------------- concurrency
def test_threads_share_one_cache(tmp_path):
    inner = ByPrompt()
    backend = CachingBackend(CountingBackend(inner), tmp_path / "c.sqlite", {"model": "m"})
    errors: list[BaseException] = []

    def work(worker: int) -> None:
        try:
            for i in range(40):
                prompts = [f"worker {worker} prompt {i}", f"shared prompt {i}"]
                np.testing.assert_array_equal(backend.score(prompts, [" a", " b"]).logprobs[:, 0],
                                              [-float(len(p)) for p in prompts])
                reply = backend.generate([ChatMessage(role="user", content=f"shared {i}")], GREEDY)
                assert reply.text == f"reply to shared {i}"
        except BaseException as err:  # surfaced below: an assert in a thread would vanish
            errors.append(err)

    threads = [threading.Thread(target=work, args=(w,)) for w in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    cache = backend.usage()["cache"]
    assert cache["hits"] + cache["misses"] == 6 * 40 * 3
    assert cache["misses"] >= 6 * 40 + 40 + 40  # every private row, and each shared one at least once


WRITER = """
import pathlib, sys, time
from emotion_probe.models.wrappers.cache import CachingBackend
from emotion_probe.models.providers.scripted import ScriptedBackend
path, go, worker = sys.argv[1], pathlib.Path(sys.argv[2]), sys.argv[3]
while not go.exists():  # start together, so that both open and write the new file at the same moment
    time.sleep(0.005)
backend = CachingBackend(ScriptedBackend(continuation_logprobs={" joy": -1.0}), path, {"model": "shared"})
for i in range(150):
    backend.score([f"worker {worker} prompt {i}", f"shared prompt {i}"], [" joy"])
print(backend.usage()["cache"]["misses"])
"""


def test_two_processes_write_one_file_at_once(tmp_path):
    path, go = tmp_path / "shared.sqlite", tmp_path / "go"
    writers = [subprocess.Popen([sys.executable, "-c", WRITER, str(path), str(go), name], stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True) for name in ("a", "b")]
    time.sleep(0.3)
    go.touch()
    for writer in writers:
        out, err = writer.communicate(timeout=120)
        assert writer.returncode == 0, err
        assert 150 <= int(out) <= 300
    # Everything both wrote is there: a reader with a model that must not be asked finds every row.
    reader = CachingBackend(ScriptedBackend(), path, {"model": "shared"})
    prompts = [f"worker {w} prompt {i}" for w in "ab" for i in range(150)] + [f"shared prompt {i}" for i in range(150)]
    assert (reader.score(prompts, [" joy"]).logprobs == -1.0).all()
    assert reader.usage()["cache"] == {"hits": 450, "misses": 0, "uncached": 0}


# ---------------------------------------------------------------- bad files, bad input
def test_a_corrupt_file_is_one_clear_error(tmp_path):
    path = tmp_path / "responses.sqlite"
    path.write_bytes(b"this is not a database, just some bytes " * 100)
    with pytest.raises(ResponseCacheError, match=f"response cache {path} is unreadable or not an emolab response cache"):
        CachingBackend(ByPrompt(), path, {"model": "m"})


def test_another_programs_database_is_refused(tmp_path):
    path = tmp_path / "checkpoints.sqlite"
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE checkpoints (thread_id TEXT)")
    with pytest.raises(ResponseCacheError, match=f"{path} is another program's SQLite database"):
        CachingBackend(ByPrompt(), path, {"model": "m"})
    with sqlite3.connect(path) as db:  # and it was left untouched
        assert [r[0] for r in db.execute("SELECT name FROM sqlite_master")] == ["checkpoints"]


def test_bad_arguments_name_the_setting(tmp_path):
    with pytest.raises(ConfigError, match="cache.generate: expected one of deterministic, always, never"):
        CachingBackend(ByPrompt(), tmp_path / "c.sqlite", {}, generate="sometimes")
    with pytest.raises(ConfigError, match="not plain JSON data"):
        CachingBackend(ByPrompt(), tmp_path / "c.sqlite", {"model": object()})


# ------------------------------------------------------------------- the stack
def test_settings_validate_the_shipped_config_files():
    assert CacheSettings.model_validate(yaml.safe_load((CONF / "cache" / "default.yaml").read_text())).options() == CACHE_ON
    retry = RetrySettings.model_validate(yaml.safe_load((CONF / "retry" / "default.yaml").read_text()))
    assert retry.max_attempts >= 1
    with pytest.raises(ValueError, match="generate"):
        CacheSettings(enabled=True, path=None, generate="sometimes")
    with pytest.raises(ValueError, match="extra"):
        CacheSettings(enabled=True, path=None, generate="always", ttl=3)


def test_wrap_backend_layers_in_order_and_leaves_out_what_is_off(tmp_path):
    retry = RetryPolicy(max_attempts=3, initial_delay_s=1, max_delay_s=2)
    full = wrap_backend(ByPrompt(), identity={"model": "m"}, cache=CACHE_ON, retry=retry)
    assert [type(layer).__name__ for layer in (full, full.inner, full.inner.inner)] == [
        "CachingBackend", "CountingBackend", "RetryingBackend"]
    assert isinstance(full.inner.inner.inner, ByPrompt) and full.inner.inner.max_delay == 2
    assert full.describe()["wrapped_by"] == ["RetryingBackend", "CountingBackend", "CachingBackend"]
    bare = wrap_backend(ByPrompt(), identity={}, cache=CacheSettings(enabled=False, path=None, generate="never").options(),
                        retry=RetryPolicy(max_attempts=1, initial_delay_s=1, max_delay_s=1))
    assert type(bare) is CountingBackend and isinstance(bare.inner, ByPrompt)
    assert type(wrap_backend(ByPrompt(), identity={}, cache=None, retry=retry).inner) is RetryingBackend


def test_usage_of_reports_tokens_calls_retries_and_cache(tmp_path):
    stack = wrap_backend(ByPrompt(), identity={"model": "m"},
                         cache=CacheOptions(path=str(tmp_path / "c.sqlite"), generate="deterministic"),
                         retry=RetryPolicy(max_attempts=2, initial_delay_s=0, max_delay_s=0))
    stack.generate(ASK, GREEDY)
    stack.generate(ASK, GREEDY)
    stack.generate(ASK, SAMPLED)
    stack.score(["p"], [" joy"])
    assert usage_of(stack) == {
        "cache": {"hits": 1, "misses": 2, "uncached": 1},
        "calls": {"generate": 2, "score": 1, "scored_prompts": 1},
        "prompt_tokens": 14, "completion_tokens": 6, "generations_without_usage": 0, "retries": 0,
    }
    assert usage_of(ByPrompt()) == {}  # a bare backend has no accounting layers


def test_generations_without_token_counts_are_counted_apart():
    counting = CountingBackend(ScriptedBackend(["hi", "there"]))
    counting.generate(ASK)
    counting.generate(ASK)
    assert counting.usage()["generations_without_usage"] == 2 and counting.usage()["completion_tokens"] == 0


def test_cache_path_resolution(tmp_path, monkeypatch):
    assert response_cache_path(str(tmp_path / "explicit.sqlite")) == tmp_path / "explicit.sqlite"
    # The test session points every default at its own file (tests/conftest.py), never at the user's cache.
    assert response_cache_path(None) == Path(os.environ["EMOLAB_RESPONSE_CACHE"])
    assert "response_cache" in os.environ["EMOLAB_RESPONSE_CACHE"]
    monkeypatch.delenv("EMOLAB_RESPONSE_CACHE")
    monkeypatch.setenv("EMOLAB_CACHE", str(tmp_path / "emolab-cache"))
    assert response_cache_path(None) == tmp_path / "emolab-cache" / "responses.sqlite"
    stack = wrap_backend(ByPrompt(), identity={}, cache=CACHE_ON, retry=None)
    assert stack.path == tmp_path / "emolab-cache" / "responses.sqlite" and stack.path.is_file()


def test_counting_is_safe_across_threads():
    counting = CountingBackend(ByPrompt())
    threads = [threading.Thread(target=lambda: [counting.generate(ASK) for _ in range(200)]) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert counting.calls["generate"] == 800 and counting.prompt_tokens == 800 * 7


def test_retrying_layer_is_transparent_for_attributes():
    provider = ByPrompt()
    stack = RetryingBackend(CountingBackend(provider), RetryPolicy(3, 1.0, 30.0))
    assert stack.method == "exact-method"  # reach-through to backend attributes still works
