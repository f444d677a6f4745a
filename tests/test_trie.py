"""The trie and the packed batch, checked against plain per-sequence scoring on a tiny random model."""

from types import SimpleNamespace

import pytest
import torch

from emotion_probe.models.providers.transformers import TransformersBackend
from emotion_probe.models.trie import ContinuationTrie, pack_prompts_with_trie, trie_paths

CONTINUATIONS = [(5,), (5, 7), (5, 7, 9), (6, 8), (6, 8, 3, 4), (11,), (6, 2)]


def test_nodes_are_the_distinct_non_final_prefixes():
    trie = ContinuationTrie.build(CONTINUATIONS)
    prefixes = {(5,), (5, 7), (6,), (6, 8), (6, 8, 3)}
    assert trie.num_nodes == len(prefixes)
    assert sorted(trie.node_depth.tolist()) == sorted(len(p) for p in prefixes)
    with_final = ContinuationTrie.build(CONTINUATIONS, include_final=True)
    assert with_final.num_nodes == len(prefixes | {(5, 7, 9), (6, 8, 3, 4), (11,), (6, 2)})


def test_each_node_sees_exactly_its_ancestors():
    trie = ContinuationTrie.build(CONTINUATIONS)
    for i in range(trie.num_nodes):
        seen = trie.visible[i].nonzero().flatten().tolist()
        depths = sorted(int(trie.node_depth[j]) for j in seen)
        assert depths == list(range(1, int(trie.node_depth[i]) + 1))


def test_packed_layout_positions_and_mask():
    trie = ContinuationTrie.build([(5, 7), (6,)])  # one node: (5,)
    packed = pack_prompts_with_trie([[1, 2, 3], [4]], trie, pad_id=0)
    assert packed.input_ids.tolist() == [[1, 2, 3, 5], [0, 0, 4, 5]]
    # The node sits right after each prompt's own last token, whatever the padding.
    assert packed.position_ids[:, -1].tolist() == [3, 1]
    assert packed.position_ids[1, 2].item() == 0
    mask = packed.attention_mask[:, 0]
    assert mask[1, 3].tolist() == [False, False, True, True]  # node: real prompt + itself
    assert mask[1, 2].tolist() == [False, False, True, False]  # prompt never sees the trie
    assert mask[1, 0, 0] and not mask[1, 0, 1]  # padding sees only itself (no NaN rows)
    assert packed.rows_to_keep == 2


def test_paths_cover_every_node():
    trie = ContinuationTrie.build(CONTINUATIONS)
    paths, node_path, node_step = trie_paths(trie)
    for node in range(trie.num_nodes):
        assert paths[node_path[node]][node_step[node]] == int(trie.node_tokens[node])
        assert node_step[node] == int(trie.node_depth[node]) - 1


@pytest.fixture()
def tiny_backend(tiny_llama):
    tokenizer = SimpleNamespace(pad_token_id=0, eos_token_id=1)
    return TransformersBackend(path="tiny", model=tiny_llama, tokenizer=tokenizer, device="cpu", dtype="float32")


@pytest.mark.parametrize("strategy", ["_score_packed", "_score_kv_cache"])
def test_exact_strategies_equal_naive_scoring(tiny_backend, strategy):
    prompts = [[2, 14, 15, 16, 17, 18], [3, 40], [9, 9, 9, 30, 31, 32, 33, 34, 35]]
    trie = ContinuationTrie.build(CONTINUATIONS)
    with torch.inference_mode():
        fast = getattr(tiny_backend, strategy)(prompts, trie)
        naive = tiny_backend._score_naive(prompts, trie.continuations, word_boundary=False)
        # By hand: one sequence, one continuation, no batching at all.
        sequence = prompts[1] + list(CONTINUATIONS[4])
        logprobs = torch.log_softmax(tiny_backend.model(torch.tensor([sequence])).logits[0].float(), -1)
        by_hand = sum(logprobs[len(prompts[1]) - 1 + j, t].item() for j, t in enumerate(CONTINUATIONS[4]))
    assert torch.allclose(fast.double(), naive, atol=1e-4)
    assert naive[1, 4].item() == pytest.approx(by_hand, abs=1e-4)


def test_word_boundary_strategies_agree(tiny_backend):
    tiny_backend.__dict__["boundary_token_mask"] = torch.arange(97) % 3 == 0
    prompts = [[2, 14, 15], [3, 40, 41, 42]]
    trie = ContinuationTrie.build(CONTINUATIONS, include_final=True)
    with torch.inference_mode():
        packed = tiny_backend._score_packed(prompts, trie)
        cached = tiny_backend._score_kv_cache(prompts, trie)
        naive = tiny_backend._score_naive(prompts, trie.continuations, word_boundary=True)
        plain = tiny_backend._score_naive(prompts, trie.continuations, word_boundary=False)
    assert torch.allclose(packed.double(), naive, atol=1e-4)
    assert torch.allclose(cached.double(), naive, atol=1e-4)
    assert (naive < plain).all()  # the boundary term is a probability < 1
