"""The model interface: `generate` is the one verb a provider must write; the rest are hooks with defaults."""

from __future__ import annotations

import pytest

from emotion_probe.models.base import ChatMessage, GenerateConfig, Generation, ModelBackend
from emotion_probe.models.wrappers.stack import RetryPolicy, wrap_backend
from emotion_probe.errors import EmolabError, NotSupported


class EchoBackend(ModelBackend):
    """Only `generate`: replies with the last message and the seed it was given."""

    name = "echo"

    def generate(self, messages, config=None, on_token=None) -> Generation:
        text = f"{messages[-1].content} (seed {config.seed if config else None})"
        if on_token is not None:
            on_token(text)
        return Generation(text=text)


def test_a_backend_with_only_generate_batches_by_looping_with_each_rows_settings():
    backend = EchoBackend()
    seen: list[str] = []
    replies = backend.generate_batch(
        [[{"role": "user", "content": "a"}], [ChatMessage(role="user", content="b")]],
        [GenerateConfig(seed=1), GenerateConfig(seed=2)], [seen.append, None])
    assert [r.text for r in replies] == ["a (seed 1)", "b (seed 2)"]
    assert seen == ["a (seed 1)"]
    assert backend.generate_batch([[{"role": "user", "content": "c"}]], GenerateConfig(seed=5))[0].text == "c (seed 5)"
    assert backend.batches_natively is False


def test_scoring_on_a_backend_that_cannot_is_one_clear_error():
    backend = EchoBackend()
    with pytest.raises(NotSupported, match="model 'echo' \\(EchoBackend\\) cannot score continuations"):
        backend.score(["p"], [" joy"])
    with pytest.raises(NotSupported, match="cannot list its next-token top-k"):
        backend.top_tokens(["p"], 5)
    assert issubclass(NotSupported, EmolabError)  # the CLI prints it as one line, exit 2


def test_wrappers_pass_generate_batch_and_batches_natively_through_every_layer():
    class Native(EchoBackend):
        batches_natively = True

    for inner, native in ((EchoBackend(), False), (Native(), True)):
        # Counting and retrying layers (the cache is off: it needs a file), as a run builds them.
        stack = wrap_backend(inner, identity={"name": "echo"}, cache=None,
                             retry=RetryPolicy(max_attempts=2, initial_delay_s=0, max_delay_s=0))
        assert stack is not inner and stack.batches_natively is native
        replies = stack.generate_batch([[{"role": "user", "content": "x"}]], [GenerateConfig(seed=3)])
        assert [r.text for r in replies] == ["x (seed 3)"]
