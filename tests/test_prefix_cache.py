"""The prefix KV cache: a turn's prompt runs only the tokens past its longest prefix seen before,
and the reply is the same as with every token computed."""

from __future__ import annotations

import pytest
import torch

from emotion_probe.models.base import GenerateConfig
from emotion_probe.models.providers.transformers_decode import PrefixStore


def _layers(length: int, value: float = 0.0) -> list[tuple[torch.Tensor, torch.Tensor]]:
    # Two layers of [1, H=1, T, D=2] float32: 8 bytes per token per tensor, 32 bytes per token in all.
    return [(torch.full((1, 1, length, 2), value), torch.full((1, 1, length, 2), value)) for _ in range(2)]


def test_the_longest_shared_prefix_wins():
    store = PrefixStore(budget_bytes=10**6)
    store.add([1, 2, 3, 4], _layers(4, 1.0))
    store.add([1, 2, 9], _layers(3, 2.0))
    layers, length = store.longest([1, 2, 3, 7, 7])
    assert length == 3 and layers[0][0][0, 0, 0, 0] == 1.0
    layers, length = store.longest([1, 2, 9, 9])
    assert length == 3 and layers[0][0][0, 0, 0, 0] == 2.0
    assert store.longest([5, 6]) == (None, 0)


def test_a_prompt_that_extends_a_stored_one_replaces_it():
    store = PrefixStore(budget_bytes=10**6)
    store.add([1, 2], _layers(2))
    store.add([1, 2, 3, 4], _layers(4))  # the next turn of the same conversation
    assert len(store._entries) == 1 and store._bytes == 4 * 32


def test_the_least_recently_used_entry_goes_first_past_the_budget():
    store = PrefixStore(budget_bytes=3 * 4 * 32)  # room for three 4-token entries
    for first in (10, 20, 30):
        store.add([first, 1, 2, 3], _layers(4))
    store.longest([10, 1])  # 10 is now the most recently used
    store.add([40, 1, 2, 3], _layers(4))
    firsts = sorted(int(ids[0]) for ids, _, _ in store._entries.values())
    assert firsts == [10, 30, 40]
    store.add(list(range(100)), _layers(100))  # larger than the whole budget: not kept
    assert store.longest(list(range(100)))[1] == 0


@pytest.mark.embedded
def test_a_conversation_gives_the_same_replies_with_and_without_the_prefix_cache(smollm2):
    from emotion_probe.models.providers.smollm2 import load_smollm2

    cached = load_smollm2(prefix_cache_mb=64)
    uncached = load_smollm2(prefix_cache_mb=0)
    config = GenerateConfig(temperature=0, max_tokens=24, seed=3)
    conversation = [{"role": "system", "content": "You sell one acorn at a market stall. Answer in one sentence."},
                    {"role": "user", "content": "Hello! How much is the acorn?"}]
    for reply in ("That is too much for an acorn.", "Fine, I will think about it."):
        before = cached.usage()
        assert cached.generate(conversation, config).text == uncached.generate(conversation, config).text
        after = cached.usage()
        prompt_tokens = after["prefill_tokens"] + after["prefix_cache_hit_tokens"] - sum(before.values())
        computed = after["prefill_tokens"] - before["prefill_tokens"]
        if len(conversation) > 2:
            # Later turns run only their two new messages: most of the prompt comes from the cache.
            assert computed < prompt_tokens / 2
        conversation = conversation + [{"role": "assistant", "content": "It costs ten dollars."},
                                       {"role": "user", "content": reply}]
    # Rows of different lengths, some extending a cached prompt, batched together: still the same text.
    batch = [conversation, conversation[:4], conversation[:2]]
    together = cached.generate_batch(batch, config)
    assert [g.text for g in together] == [uncached.generate(c, config).text for c in batch]
    assert uncached.usage() == {}
