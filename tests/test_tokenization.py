"""How the transformers backend splits prompt and continuation into tokens, on a real (tiny, in-memory)
BPE tokenizer: the EOS-appending path, and the clean-split check that raises TokenizationMismatch."""

from __future__ import annotations

import numpy as np
import pytest

from emotion_probe.models.providers.transformers import TransformersBackend
from emotion_probe.errors import EmolabError, TokenizationMismatch

# Characters of every test text, plus merges. "ab" is a merge, so a prompt ending in "a" followed by a
# continuation starting with "b" tokenizes as one token across the split.
CHARACTERS = list(" abcdefghijklmnopqrstuvwxyz.!")
MERGES = [("a", "b"), (" ", "j"), (" j", "o")]
SPECIALS = ["<pad>", "<bos>", "<eos>"]


def _tokenizer(appends_eos: bool):
    from tokenizers import Tokenizer, models, processors
    from transformers import PreTrainedTokenizerFast

    vocab = {token: i for i, token in enumerate([*SPECIALS, *CHARACTERS, *("".join(m) for m in MERGES)])}
    assert len(vocab) < 97  # the tiny model's vocabulary
    core = Tokenizer(models.BPE(vocab=vocab, merges=MERGES))
    if appends_eos:
        # Like the tokenizers that end every encoding with EOS (some T5- and Llama-derived ones).
        core.post_processor = processors.TemplateProcessing(single="$A <eos>", special_tokens=[("<eos>", vocab["<eos>"])])
    return PreTrainedTokenizerFast(tokenizer_object=core, pad_token="<pad>", bos_token="<bos>", eos_token="<eos>")


def _backend(tiny_llama, appends_eos: bool) -> TransformersBackend:
    return TransformersBackend(path="tiny", model=tiny_llama, tokenizer=_tokenizer(appends_eos), device="cpu",
                               dtype="float32", prefix_cache_mb=0)


PROMPTS = ["i feel", "what a day. i feel"]
CONTINUATIONS = [" joy", " fear", " jealousy"]


def test_the_eos_appending_tokenizer_is_detected_and_its_eos_dropped(tiny_llama):
    plain, appending = _backend(tiny_llama, False), _backend(tiny_llama, True)
    eos = appending.tokenizer.eos_token_id
    raw = appending.tokenizer(PROMPTS, add_special_tokens=True)["input_ids"]
    assert all(ids[-1] == eos for ids in raw)  # the tokenizer really appends EOS
    assert appending._appends_eos and not plain._appends_eos
    # A prompt must stay open-ended: the backend's own encoding has no EOS, and equals the plain one.
    assert appending._encode(PROMPTS) == plain._encode(PROMPTS)
    assert all(eos not in ids for ids in appending._encode(PROMPTS))


@pytest.mark.parametrize("scoring", ["packed", "kv_cache", "naive"])
def test_eos_appending_tokenizer_scores_like_a_plain_one(tiny_llama, scoring):
    plain, appending = _backend(tiny_llama, False), _backend(tiny_llama, True)
    plain.scoring = appending.scoring = scoring
    expected = plain.score(PROMPTS, CONTINUATIONS).logprobs
    np.testing.assert_allclose(appending.score(PROMPTS, CONTINUATIONS).logprobs, expected, atol=1e-5)
    # ... and both equal the product over the continuation's tokens, computed by hand.
    import torch

    tokenizer = plain.tokenizer
    prompt = tokenizer(PROMPTS[1])["input_ids"]
    continuation = tokenizer(PROMPTS[1] + CONTINUATIONS[2])["input_ids"][len(prompt):]
    with torch.inference_mode():
        logits = tiny_llama(torch.tensor([prompt + continuation])).logits[0].float()
    logprobs = torch.log_softmax(logits, -1)
    by_hand = sum(logprobs[len(prompt) - 1 + j, t].item() for j, t in enumerate(continuation))
    assert expected[1, 2] == pytest.approx(by_hand, abs=1e-4)


@pytest.mark.parametrize("appends_eos", [False, True])
def test_a_continuation_that_merges_with_the_prompt_is_refused(tiny_llama, appends_eos):
    backend = _backend(tiny_llama, appends_eos)
    # "...a" + "bed": the tokenizer joins "a" and "b" into "ab", so the prompt's tokens are not a
    # prefix of the joined text's tokens, and P("bed" | prompt) is not a product over a shared prefix.
    with pytest.raises(TokenizationMismatch, match=r"continuation 'bed' does not tokenize as a clean extension "
                                                   r"of the prompt ending 'what a'"):
        backend.score(["what a"], [" joy", "bed"])
    # A user error, reported as one line by the CLI.
    assert issubclass(TokenizationMismatch, EmolabError)
    # The same words after a complete word and a space split cleanly.
    assert np.isfinite(backend.score(["what a day"], [" joy", " bed"]).logprobs).all()


def test_an_empty_continuation_is_refused(tiny_llama):
    with pytest.raises(TokenizationMismatch, match="continuation '' does not tokenize"):
        _backend(tiny_llama, False).score(["i feel"], [" joy", ""])
