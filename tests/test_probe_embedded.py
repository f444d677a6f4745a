"""The probe on the real embedded model: exactness against naive scoring, and its options."""

import numpy as np
import pytest

from emotion_probe import ConfigError, EmotionProbe
from emotion_probe.models.trie import ContinuationTrie
from experiments.app.config import build_probe, probe_settings

pytestmark = pytest.mark.embedded

TEXTS = [
    "I finally got the job offer after months of searching!",
    "My grandmother passed away last night and the house feels empty.",
    "Someone keyed my car in the parking lot, again.",
]


@pytest.fixture(scope="module")
def scoring_inputs(smollm2, shaver):
    probe = EmotionProbe(smollm2, shaver, probe_settings())
    return probe.prompts(TEXTS), probe.continuations


def _scores(backend, scoring, prompts, continuations, word_boundary=False):
    backend.scoring = scoring
    try:
        return backend.score(prompts, continuations, word_boundary=word_boundary).logprobs
    finally:
        backend.scoring = "packed"


def test_shaver_words_include_multi_token_words(smollm2, scoring_inputs):
    prompts, continuations = scoring_inputs
    ids = smollm2._continuation_ids(prompts[0], smollm2._encode(prompts[:1])[0], continuations)
    lengths = {len(t) for t in ids}
    assert {1, 2, 3, 4} <= lengths  # e.g. " enthrallment" is 4 tokens
    assert ContinuationTrie.build(ids).num_nodes == 55


@pytest.mark.parametrize("word_boundary", [False, True])
def test_packed_probe_equals_naive_full_sequence_scoring(smollm2, scoring_inputs, word_boundary):
    prompts, continuations = scoring_inputs
    naive = _scores(smollm2, "naive", prompts, continuations, word_boundary)
    packed = _scores(smollm2, "packed", prompts, continuations, word_boundary)
    cached = _scores(smollm2, "kv_cache", prompts, continuations, word_boundary)
    # Probabilities (not just log-probs) agree to 1e-4 for every word, multi-token words included.
    assert np.abs(np.exp(packed) - np.exp(naive)).max() < 1e-4
    assert np.abs(np.exp(cached) - np.exp(naive)).max() < 1e-4
    assert np.abs(packed - naive).max() < 1e-3


def test_distribution_rows_sum_to_one_and_stream(smollm2, shaver):
    probe = EmotionProbe(smollm2, shaver, probe_settings(chunk_size=2))
    chunks = list(probe.iter_distributions(TEXTS))
    assert [c.shape for c in chunks] == [(2, 135), (1, 135)]
    dist = probe.distribution(TEXTS)
    assert dist.shape == (3, 135)
    np.testing.assert_allclose(dist.sum(axis=1), 1.0, atol=1e-9)
    np.testing.assert_allclose(np.concatenate(chunks), dist, atol=1e-6)
    assert probe.last_method == "transformers-packed" and probe.last_exact
    # Even a 135M model reads direction: more joy-group mass for a job offer than for a
    # bereavement, more sadness-group mass for the bereavement, where sadness leads.
    groups = np.array([shaver.primary_of(w) for w in shaver.words])
    mass = {g: dist[:, groups == g].sum(axis=1) for g in shaver.primaries}
    assert mass["joy"][0] > mass["joy"][1]
    assert mass["sadness"][1] > mass["sadness"][0]
    assert max(mass, key=lambda g: mass[g][1]) == "sadness"


def test_word_boundary_lowers_words_that_prefix_longer_words(smollm2, shaver, scoring_inputs):
    prompts, continuations = scoring_inputs
    plain = np.asarray(smollm2.score(prompts, continuations).logprobs)
    bounded = np.asarray(smollm2.score(prompts, continuations, word_boundary=True).logprobs)
    # The boundary term is a probability (that the next token starts a new word), so it never raises a word.
    assert (bounded <= plain + 1e-3).all()
    drop = (plain - bounded).mean(axis=0)
    column = shaver.index
    # Words that begin longer words ("insulted", "frightened", "disgusted") lose most of their mass;
    # words that end in a suffix no longer word extends ("unhappiness", "disappointment") keep it.
    for prefix in ["insult", "fright", "disgust"]:
        assert drop[column[prefix]] > 1.0, (prefix, drop[column[prefix]])
    for whole in ["unhappiness", "disappointment", "satisfaction"]:
        assert drop[column[whole]] < 0.05, (whole, drop[column[whole]])
    # After renormalisation over the wheel, the prefix words' share falls.
    plain_dist = EmotionProbe(smollm2, shaver, probe_settings()).distribution(TEXTS)
    bounded_dist = EmotionProbe(smollm2, shaver, probe_settings(word_boundary=True)).distribution(TEXTS)
    np.testing.assert_allclose(bounded_dist.sum(axis=1), 1.0, atol=1e-9)
    for prefix in ["insult", "fright", "disgust"]:
        assert (bounded_dist[:, column[prefix]] < plain_dist[:, column[prefix]]).all(), prefix


def test_paper_method_uses_single_token_words_only(smollm2, shaver):
    # A 135M model puts few emotion words among its top 100 next tokens; 1,000 finds some for every text.
    probe = EmotionProbe(smollm2, shaver, probe_settings(method="paper", top_k=1000))
    dist = probe.distribution(TEXTS)
    assert probe.last_method == "paper-top1000" and probe.last_exact is False
    # The model's own next-token probabilities, not renormalized over the wheel.
    assert np.isfinite(dist).all() and (dist.sum(axis=1) > 0).all() and (dist.sum(axis=1) < 1).all()
    single = np.array([len(smollm2.tokenizer.encode(" " + word, add_special_tokens=False)) == 1
                       for word in shaver.words])
    assert 0 < single.sum() < len(shaver.words)
    assert (dist[:, ~single] == 0).all(), "a multi-token word (e.g. 'enthrallment') got mass"
    assert ((dist[:, single] > 0).sum(axis=1) >= 1).all()
    # Among the words it can see, the paper's method ranks first what the exact probe ranks first.
    exact = EmotionProbe(smollm2, shaver, probe_settings()).distribution(TEXTS)
    assert [shaver.words[i] for i in dist.argmax(axis=1)] == [
        shaver.words[np.flatnonzero(single)[row[single].argmax()]] for row in exact]


def test_paper_method_gives_zero_rows_with_a_warning_when_no_word_is_in_the_top_k(smollm2, shaver, caplog):
    probe = EmotionProbe(smollm2, shaver, probe_settings(method="paper", top_k=100))
    with caplog.at_level("WARNING", logger="emotion_probe.probe"):
        dist = probe.distribution(TEXTS)
    assert (dist == 0).all()
    assert "3 of 3 prompts had none of the wheel's words among the model's candidates (paper-top100)" in caplog.text


def test_bad_inputs_get_one_clear_error(smollm2, shaver):
    with pytest.raises(ConfigError, match="text 1 is empty"):
        EmotionProbe(smollm2, shaver, probe_settings()).distribution(["fine", "   "])
    with pytest.raises(ConfigError, match=r"placeholder \{text\}"):
        EmotionProbe(smollm2, shaver, probe_settings(template="The emotion is"))
    with pytest.raises(ConfigError, match="takes a list of texts"):
        EmotionProbe(smollm2, shaver, probe_settings()).distribution("a single string")


def test_prompt_longer_than_context(smollm2, shaver):
    long_text = "word " * 9000
    with pytest.raises(ConfigError, match="longer than the model's context of 8192"):
        EmotionProbe(smollm2, shaver, probe_settings()).distribution([long_text])
    smollm2.on_too_long = "truncate_left"
    try:
        with pytest.warns(UserWarning, match="keeping its last"):
            dist = build_probe(smollm2, wheel="ekman").distribution([long_text])
        assert dist.shape == (1, 6)
    finally:
        smollm2.on_too_long = "error"


def test_generate_streams_through_the_chat_template(smollm2):
    pieces = []
    result = smollm2.generate([{"role": "user", "content": "Name one colour."}], on_token=pieces.append)
    assert result.text.strip() and "".join(pieces).strip() == result.text.strip()
    assert result.completion_tokens >= 1
    assert smollm2.num_parameters() == 134_515_008
