"""method="paper": the authors' released pipeline, checked on hand-derived fixtures.

Every expected value below was worked out by hand from the authors' algorithm
(phys-ai/Emotion-Hierarchy-LLMs: emotion_hierarchy/hierarchy.py and recognition.py), never by
running emolab. Probabilities are powers of two, so every float32 sum and product is exact and
the hand arithmetic is the machine's; where rounding itself is the point, the test spells the
float32 steps out.
"""

from __future__ import annotations

import json

import networkx as nx
import numpy as np
import pytest

from emotion_probe import ConfigError, EmotionProbe, EmotionWheel
from emotion_probe.models.providers.scripted import ScriptedBackend
from emotion_probe.analysis.bias import recognition_summary
from emotion_probe.analysis.hierarchy import build_hierarchy
from emotion_probe.analysis.hierarchy_metrics import average_root_to_leaf_depth, tree_metrics
from emotion_probe.analysis.hierarchy_paper import paper_cooccurrence, paper_graph
from emotion_probe.probe import authors_first_word
from experiments.app.config import probe_settings


@pytest.fixture(scope="module")
def wheel(tmp_path_factory):
    """Six words in two groups; column order joy, fear, hope, pride, worry, dread."""
    path = tmp_path_factory.mktemp("wheel") / "six.json"
    path.write_text(json.dumps({"name": "six", "groups": [
        {"primary": "joy", "color": "#ffbf00", "words": ["hope", "pride"]},
        {"primary": "fear", "color": "#9467bd", "words": ["worry", "dread"]},
    ]}))
    return EmotionWheel.load(path)


def _rows(wheel, rows):
    """[(word, p), ...] per row, in rank order -> (P, ranked)."""
    P = np.zeros((len(rows), len(wheel.words)))
    for n, row in enumerate(rows):
        for word, p in row:
            P[n, wheel.index[word]] = p
    return P, [[word for word, _ in row] for row in rows]


# Hand derivation (threshold 0.3):
#   R1 joy .5, hope .25   -> C[joy,hope]   = 1/8
#   R2 pride .5, hope .5  -> C[pride,hope] = 1/4
#   R3, R4 joy .5, fear .5 -> C[joy,fear]  = 1/2
#   R5 pride .5, worry .5 -> C[pride,worry] = 1/4
#   R6 worry .5, dread .5 -> C[worry,dread] = 1/4
# Totals f: joy 5/8, fear 1/2, hope 3/8, pride 1/2, worry 1/2, dread 1/4.
# Conditional rule, parent b of child a when P(b|a) > 0.3 and P(a|b) < P(b|a):
#   joy -> hope  (P(joy|hope) = 1/3,  P(hope|joy) = 1/5)
#   pride -> hope (P(pride|hope) = 2/3, P(hope|pride) = 1/2)
#   joy -> fear  (1 vs 4/5), worry -> dread (1 vs 1/2); pride and worry tie at 1/2: no edge.
# hope first met joy (R1), then pride (R2): two parents, the authors keep the first inserted (joy),
# though pride has the larger P(parent | child). pride, its only edge gone, stays as an isolated node.
TWO_PARENTS = [
    [("joy", 0.5), ("hope", 0.25)],
    [("pride", 0.5), ("hope", 0.5)],
    [("joy", 0.5), ("fear", 0.5)],
    [("joy", 0.5), ("fear", 0.5)],
    [("pride", 0.5), ("worry", 0.5)],
    [("worry", 0.5), ("dread", 0.5)],
]


def test_weights_frequencies_and_their_order(wheel):
    P, ranked = _rows(wheel, TWO_PARENTS)
    co = paper_cooccurrence(P, [[wheel.index[w] for w in row] for row in ranked])
    i = wheel.index
    assert co.weights.dtype == np.float32
    assert co.weights[i["joy"], i["hope"]] == co.weights[i["hope"], i["joy"]] == 0.125
    assert co.weights[i["pride"], i["hope"]] == 0.25
    assert co.weights[i["joy"], i["fear"]] == 0.5  # two rows of 1/4
    assert co.weights[i["joy"], i["pride"]] == 0.0  # never in one row
    assert np.diag(co.weights).tolist() == [0.0] * 6  # no self co-occurrence
    assert {w: float(co.frequencies[i[w]]) for w in wheel.words} == {
        "joy": 0.625, "fear": 0.5, "hope": 0.375, "pride": 0.5, "worry": 0.5, "dread": 0.25}
    # First co-occurrence order: R1 joy, hope; R2 pride; R3 fear; R5 worry; R6 dread.
    assert [wheel.words[n] for n in co.nodes] == ["joy", "hope", "pride", "fear", "worry", "dread"]
    assert [wheel.words[n] for n in co.neighbors[i["hope"]]] == ["joy", "pride"]
    assert [wheel.words[n] for n in co.neighbors[i["worry"]]] == ["pride", "dread"]


def test_two_parent_rule_keeps_the_first_inserted_parent_and_isolates_the_other(wheel):
    P, ranked = _rows(wheel, TWO_PARENTS)
    result = build_hierarchy(P, wheel, threshold=0.3, method="paper", ranked=ranked, baseline_samples=10)
    # Candidates in the authors' order: children by first co-occurrence, parents by each child's neighbours.
    assert [(p, c) for p, c, _ in result.candidates] == [
        ("joy", "hope"), ("pride", "hope"), ("joy", "fear"), ("worry", "dread")]
    assert [round(prob, 6) for _, _, prob in result.candidates] == [0.333333, 0.666667, 1.0, 1.0]
    assert sorted(result.edges) == [("joy", "fear"), ("joy", "hope"), ("worry", "dread")]
    assert "pride" in result.graph and result.graph.degree("pride") == 0
    assert result.isolated == ["pride"]
    m = result.metrics
    assert (m["nodes"], m["edges"], m["isolated"], m["roots"], m["leaves"]) == (6, 3, 1, 3, 3)
    assert m["total_path_length"] == 3
    # Root-to-leaf paths: joy-hope 1, joy-fear 1, worry-dread 1, and the isolated pride 0: mean 3/4.
    assert m["average_root_to_leaf_depth"] == 0.75
    assert m["average_depth"] == 1.0  # ours: nearest root to each leaf; pride is no leaf


def test_row_order_decides_which_parent_survives(wheel):
    # The same rows with R1 and R2 swapped: every sum is the same, but hope now meets pride first.
    swapped = [TWO_PARENTS[1], TWO_PARENTS[0], *TWO_PARENTS[2:]]
    P, ranked = _rows(wheel, swapped)
    result = build_hierarchy(P, wheel, method="paper", ranked=ranked, baseline_samples=10)
    assert sorted(result.edges) == [("joy", "fear"), ("pride", "hope"), ("worry", "dread")]
    assert result.isolated == []


def test_rank_order_within_a_row_decides_first_co_occurrence(wheel):
    # One row with hope ranked above joy: hope enters first, and lists its neighbours in rank order.
    P, ranked = _rows(wheel, [[("hope", 0.25), ("joy", 0.125), ("pride", 0.0625)]])
    co = paper_cooccurrence(P, [[wheel.index[w] for w in row] for row in ranked])
    assert [wheel.words[n] for n in co.nodes] == ["hope", "joy", "pride"]
    # Pairs go (hope, joy), (hope, pride), (joy, pride): pride meets hope before joy.
    assert [wheel.words[n] for n in co.neighbors[wheel.index["pride"]]] == ["hope", "joy"]


def test_sums_round_in_float32_in_row_order(wheel):
    P, ranked = _rows(wheel, [[("joy", 0.1), ("hope", 0.3)], [("joy", 0.7), ("hope", 0.9)],
                              [("joy", 0.2), ("fear", 0.6)]])
    co = paper_cooccurrence(P, [[wheel.index[w] for w in row] for row in ranked])
    f32 = np.float32
    joy_hope = f32(f32(f32(0.1) * f32(0.3)) + f32(f32(0.7) * f32(0.9)))
    joy_fear = f32(f32(0.2) * f32(0.6))
    assert co.weights[wheel.index["joy"], wheel.index["hope"]] == joy_hope
    assert co.frequencies[wheel.index["joy"]] == f32(joy_hope + joy_fear)  # hope first, then fear


def test_threshold_is_compared_in_float32(wheel):
    # hope meets joy with weight f32(0.3) and fear with f32(0.7); f32(0.3) + f32(0.7) rounds to 1.0, so
    # P(joy | hope) is f32(0.3) itself. NumPy compares it with the threshold in float32 (NEP 50):
    # f32(0.3) > f32(0.3) is false, no joy -> hope. In float64 it would pass (0.30000001 > 0.3).
    # joy also meets pride (weight 1), so P(hope | joy) = 0.3 / 1.3 < P(joy | hope): only the threshold decides.
    P, ranked = _rows(wheel, [[("joy", 1.0), ("hope", 0.3)], [("fear", 1.0), ("hope", 0.7)],
                              [("joy", 1.0), ("pride", 1.0)]])
    co = paper_cooccurrence(P, [[wheel.index[w] for w in row] for row in ranked])
    assert co.frequencies[wheel.index["hope"]] == np.float32(1.0)
    result = build_hierarchy(P, wheel, threshold=0.3, method="paper", ranked=ranked, baseline_samples=10)
    # hope -> fear: P(hope | fear) = 1 > P(fear | hope) = 0.7; joy -> pride: 1 > 1 / 1.3.
    assert sorted(result.edges) == [("hope", "fear"), ("joy", "pride")]
    lower = build_hierarchy(P, wheel, threshold=0.29, method="paper", ranked=ranked, baseline_samples=10)
    assert sorted(lower.edges) == [("hope", "fear"), ("joy", "hope"), ("joy", "pride")]


def test_cleanup_removes_grandparent_and_great_grandparent_shortcuts_only():
    # Chain a-b-c-d-e. d has three parents (c, b, a), so the two-parent rule leaves it alone; the
    # cleanup at d finds b as c's parent (removes b->d) and a as b's parent (removes a->d).
    # e has three parents (d, a, x); d is processed before e, so by then d's only parent is c: a->e,
    # four levels up, is never reached and stays.
    candidates = [("a", "b", 1.0), ("b", "c", 1.0), ("c", "d", 1.0), ("b", "d", 1.0), ("a", "d", 1.0),
                  ("d", "e", 1.0), ("a", "e", 1.0), ("x", "e", 1.0)]
    graph = paper_graph(candidates)
    assert list(graph.nodes) == ["a", "b", "c", "d", "e", "x"]
    assert sorted(graph.edges) == [("a", "b"), ("a", "e"), ("b", "c"), ("c", "d"), ("d", "e"), ("x", "e")]
    # Paths a-b-c-d-e (4), a-e (1), x-e (1).
    assert average_root_to_leaf_depth(graph) == 2.0


def test_cleanup_depends_on_node_order():
    # The same edges, inserted so that e (and x) come before b, c, d: at e, d still has parents c, b
    # and a, so a is found as the great-grandparent via b, and a->e goes too.
    candidates = [("a", "e", 1.0), ("x", "e", 1.0), ("a", "b", 1.0), ("b", "c", 1.0), ("c", "d", 1.0),
                  ("b", "d", 1.0), ("a", "d", 1.0), ("d", "e", 1.0)]
    graph = paper_graph(candidates)
    assert list(graph.nodes) == ["a", "e", "x", "b", "c", "d"]
    assert sorted(graph.edges) == [("a", "b"), ("b", "c"), ("c", "d"), ("d", "e"), ("x", "e")]
    assert average_root_to_leaf_depth(graph) == 2.5  # a-b-c-d-e (4), x-e (1)


def test_two_parent_rule_ignores_nodes_with_three_parents_and_reads_the_reversed_key():
    graph = paper_graph([("p", "c", 0.1), ("q", "c", 0.9), ("r", "c", 0.5)])
    assert graph.in_degree("c") == 3
    # Two parents, the second with the larger probability: still the first is kept.
    graph = paper_graph([("p", "c", 0.1), ("q", "c", 0.9)])
    assert list(graph.edges) == [("p", "c")]


def test_root_to_leaf_depth_counts_every_path_and_differs_from_nearest_root_depth(wheel):
    # Leaf x is one step from root r1 and three from root r2 (r2-y-z-x): paths of length 1 and 3, mean 2;
    # the nearest-root depth of x is 1.
    graph = nx.DiGraph([("r1", "x"), ("r2", "y"), ("y", "z"), ("z", "x")])
    assert average_root_to_leaf_depth(graph) == 2.0
    # A diamond doubles the paths below it: a-b-d-e and a-c-d-e, both of length 3.
    assert average_root_to_leaf_depth(nx.DiGraph([("a", "b"), ("a", "c"), ("b", "d"), ("c", "d"), ("d", "e")])) == 3.0
    assert average_root_to_leaf_depth(nx.DiGraph()) == 0.0
    assert np.isnan(average_root_to_leaf_depth(nx.DiGraph([("a", "b"), ("b", "a")])))


def test_exact_method_reports_the_authors_depth_too(wheel):
    graph = nx.DiGraph([("joy", "hope"), ("fear", "worry"), ("worry", "dread"), ("fear", "dread")])
    metrics = tree_metrics(graph, wheel, samples=10)
    # Paths joy-hope 1, fear-worry-dread 2, fear-dread 1: mean 4/3; nearest-root depths of hope and dread: 1, 1.
    assert metrics["average_root_to_leaf_depth"] == pytest.approx(4 / 3)
    assert metrics["average_depth"] == 1.0


def test_ranks_default_to_descending_probability_and_are_validated(wheel):
    P, ranked = _rows(wheel, TWO_PARENTS)
    with_ranks = build_hierarchy(P, wheel, method="paper", ranked=ranked, baseline_samples=10)
    without = build_hierarchy(P, wheel, method="paper", baseline_samples=10)
    # Ties (R2: pride and hope at 0.5) fall back to wheel order; here no first meeting depends on them.
    assert sorted(without.edges) == sorted(with_ranks.edges) == [("joy", "fear"), ("joy", "hope"), ("worry", "dread")]
    with pytest.raises(ConfigError, match="not a word of the wheel"):
        build_hierarchy(P, wheel, method="paper", ranked=[["glee"]] + ranked[1:])
    with pytest.raises(ConfigError, match="rows for 6 rows"):
        build_hierarchy(P, wheel, method="paper", ranked=ranked[:2])


# --------------------------------------------------------------------------- recognition
WORDS = {"joy", "fear", "hope", "sadness", "pride"}


@pytest.mark.parametrize("tokens, expected", [
    ([" noise", " joy", " fear"], "joy"),           # first wheel word in rank order
    ([" Joy", " fear"], "fear"),                    # case-sensitive: " Joy" is not joy
    ([" sad", "ness", " joy"], "sadness"),          # glued to the token before: " sad" + "ness"
    ([" joy", "ful", " fear"], "fear"),             # "joyful" is no wheel word; joy is lost
    (["\njoy", " hope"], "hope"),                   # escaped to "\\njoy": the piece is "njoy"
    ([" joy.", " fear"], "joy"),                    # punctuation splits off
    ([" the", " a"], None),                         # uncovered
])
def test_authors_first_word(tokens, expected):
    assert authors_first_word(tokens, WORDS) == expected


def test_recognition_summary_excludes_uncovered_rows_from_accuracy(wheel):
    true = ["joy", "hope", "fear", "dread", "worry"]
    predicted = ["joy", "pride", None, "worry", None]
    summary = recognition_summary(true, predicted, wheel.words, wheel.primary_of, wheel.primaries)
    # Covered: 3 of 5. Exact right: joy (1). Same group: joy, hope->pride (joy), dread->worry (fear): 3.
    assert summary == {"rows": 5, "covered": 3, "coverage": 0.6, "accuracy": 1 / 3, "primary_accuracy": 1.0,
                       "accuracy_all_rows": 0.2, "primary_accuracy_all_rows": 0.6}


def test_paper_probe_keeps_raw_probabilities_and_rank_order(wheel, caplog):
    top = {" calm": np.log(0.5), " fear": np.log(0.25), " Joy": np.log(0.125), " hope": np.log(0.0625),
           "fear": np.log(0.03125), " joy": np.log(0.015625)}
    backend = ScriptedBackend(continuation_logprobs=top)
    probe = EmotionProbe(backend, wheel, probe_settings(wheel=wheel.source, method="paper", top_k=100))
    with caplog.at_level("WARNING", logger="emotion_probe.probe"):
        frame = probe.frame(["I won."])
    row = frame.iloc[0]
    # Raw probabilities, never renormalized; " Joy" does not count, "fear" repeats a word already counted.
    assert {w: row[w] for w in wheel.words} == pytest.approx(
        {"joy": 0.015625, "fear": 0.25, "hope": 0.0625, "pride": 0.0, "worry": 0.0, "dread": 0.0}, rel=1e-12)
    assert list(row["top_k_words"]) == ["fear", "hope", "joy"]
    assert row["top_k_first_word"] == "fear"
    assert probe.describe()["variant_tokens_dropped"] == 1
    assert "1 top-k tokens repeated a word" in caplog.text
    # Only the top 2 tokens: fear alone.
    short = EmotionProbe(backend, wheel, probe_settings(wheel=wheel.source, method="paper", top_k=2)).frame(["I won."]).iloc[0]
    assert list(short["top_k_words"]) == ["fear"] and short["fear"] == pytest.approx(0.25) and short["joy"] == 0.0


def test_paper_probe_rows_without_a_word_are_zero_not_nan(wheel, caplog):
    backend = ScriptedBackend(continuation_logprobs={" the": np.log(0.5), " a": np.log(0.25)})
    probe = EmotionProbe(backend, wheel, probe_settings(wheel=wheel.source, method="paper"))
    with caplog.at_level("WARNING", logger="emotion_probe.probe"):
        frame = probe.frame(["one", "two"])
    assert (frame[wheel.words].to_numpy() == 0).all()
    assert frame["top_k_first_word"].tolist() == [None, None]
    assert "2 of 2 prompts had none of the wheel's words" in caplog.text
