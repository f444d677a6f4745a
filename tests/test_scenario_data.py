"""The shipped scenario sets obey the rules every scenario must obey."""

from collections import Counter

from emotion_probe import EmotionWheel
from emotion_probe.scenario_checks import MAX_SENTENCES, leaked_form, normalized, sentence_count
from emotion_probe.scenarios import load_scenarios


def test_labelled_set_covers_every_shaver_word_twenty_times():
    # The paper's scale: 20 scenarios for each of the 135 words.
    wheel = EmotionWheel.load("shaver")
    rows = load_scenarios("shaver_labelled")
    counts = Counter(r.emotion for r in rows)
    assert len(rows) == 2700
    assert set(counts) == set(wheel.words)
    assert set(counts.values()) == {20}
    for row in rows:
        assert row.primary == wheel.primary_of(row.emotion), row.id
        assert row.id == f"{row.emotion}-{row.id.rsplit('-', 1)[1]}", row.id


def test_every_labelled_row_says_where_it_came_from():
    sources = Counter(r.source for r in load_scenarios("shaver_labelled"))
    assert None not in sources
    rewritten = {s for s in sources if s != "hand-written"}
    # A row rewritten after the label review says why, in its source.
    assert all(s.startswith("hand-written (rewritten: ") and s.endswith(")") for s in rewritten), rewritten
    assert sources["hand-written"] > 2600


def test_no_scenario_names_its_own_emotion():
    leaks = [(r.id, leaked_form(r.text, r.emotion)) for r in load_scenarios("shaver_labelled")]
    assert [leak for leak in leaks if leak[1] is not None] == []


def test_no_duplicates_and_one_to_three_sentences():
    for name in ("shaver_labelled", "everyday"):
        rows = load_scenarios(name)
        keys = Counter(normalized(r.text) for r in rows)
        assert [k for k, n in keys.items() if n > 1] == [], name
        too_long = [r.id for r in rows if not 1 <= sentence_count(r.text) <= MAX_SENTENCES]
        assert too_long == [], name


def test_everyday_set_is_large_and_unlabelled():
    rows = load_scenarios("everyday")
    assert len(rows) >= 300
    assert all(r.emotion is None for r in rows)
