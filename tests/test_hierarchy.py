"""The hierarchy math on hand-made distributions whose answers are known."""

import json
import time

import networkx as nx
import numpy as np
import pytest

from emotion_probe import ConfigError, EmotionWheel
from emotion_probe.analysis.hierarchy import build_hierarchy, cooccurrence, matching_matrix, parent_edges
from emotion_probe.analysis.hierarchy_metrics import tree_metrics

# root > {mid1, mid2}, mid1 > {leaf1, leaf2}, mid2 > {leaf3, leaf4}
WORDS = ["root", "mid1", "mid2", "leaf1", "leaf2", "leaf3", "leaf4"]


@pytest.fixture(scope="module")
def planted_wheel(tmp_path_factory):
    path = tmp_path_factory.mktemp("wheel") / "planted.json"
    path.write_text(json.dumps({"name": "planted", "groups": [
        {"primary": "root", "color": "#111111", "words": ["leaf1", "leaf2"]},
        {"primary": "mid1", "color": "#222222", "words": ["leaf3"]},
        {"primary": "mid2", "color": "#333333", "words": ["leaf4"]},
    ]}))
    return EmotionWheel.load(path)


def _planted_distributions(wheel):
    """Each scenario splits its mass between a word and its parent; parents pair up more often."""
    index = wheel.index
    rows = []
    for child, parent, copies in [("leaf1", "mid1", 10), ("leaf2", "mid1", 10), ("leaf3", "mid2", 10),
                                  ("leaf4", "mid2", 10), ("mid1", "root", 30), ("mid2", "root", 30)]:
        row = np.zeros(len(wheel.words))
        row[index[child]] = row[index[parent]] = 0.5
        rows += [row] * copies
    return np.array(rows)


def test_cooccurrence_and_matching_by_hand():
    P = np.array([[0.5, 0.5, 0.0], [0.5, 0.0, 0.5], [0.2, 0.2, 0.6]])
    C = cooccurrence(P)
    assert C[0, 1] == pytest.approx(0.25 + 0.04) and C[0, 0] == 0 and C[1, 2] == pytest.approx(0.12)
    M = matching_matrix(C)
    assert M[1, 0] == pytest.approx(0.29 / (0.29 + 0.12))
    np.testing.assert_allclose(M.sum(axis=1), 1.0)


def test_planted_two_level_hierarchy_is_recovered_exactly(planted_wheel):
    result = build_hierarchy(_planted_distributions(planted_wheel), planted_wheel, threshold=0.3)
    assert sorted(result.edges) == sorted([("root", "mid1"), ("root", "mid2"), ("mid1", "leaf1"), ("mid1", "leaf2"),
                                           ("mid2", "leaf3"), ("mid2", "leaf4")])
    index = planted_wheel.index
    # P(mid1 | leaf1) = 1 and P(leaf1 | mid1) = 2.5 / 12.5: the asymmetry that makes mid1 the parent.
    assert result.matching[index["leaf1"], index["mid1"]] == pytest.approx(1.0)
    assert result.matching[index["mid1"], index["leaf1"]] == pytest.approx(0.2)
    assert result.matching[index["mid1"], index["root"]] == pytest.approx(0.6)


def test_threshold_rule():
    M = np.array([[0.0, 0.35, 0.65], [0.31, 0.0, 0.69], [0.5, 0.5, 0.0]])
    words = ["a", "b", "c"]
    # b parent of a needs M[a,b] = .35 > .3 and M[b,a] = .31 < .35: yes.
    # c parent of a: .65 > .3 and M[c,a] = .5 < .65: yes. c parent of b: .69 > .5: yes.
    # a parent of c: M[c,a] = .5 > .3 but M[a,c] = .65 is not smaller: no.
    assert sorted(parent_edges(M, words, 0.3)) == [("b", "a"), ("c", "a"), ("c", "b")]
    assert sorted(parent_edges(M, words, 0.4)) == [("c", "a"), ("c", "b")]
    assert parent_edges(M, words, 0.7) == []


def test_metrics_on_small_graphs_by_hand(planted_wheel):
    chain = nx.DiGraph([("root", "mid1"), ("mid1", "leaf1")])
    metrics = tree_metrics(chain, planted_wheel, samples=200)
    assert metrics["edges"] == 2 and metrics["nodes"] == 3
    assert metrics["total_path_length"] == 1 + 2 + 1
    assert metrics["average_depth"] == 2 and metrics["max_depth"] == 2
    # root-mid1: different primaries; mid1-leaf1: leaf1 is under root, so also different.
    assert metrics["wheel_alignment"] == 0.0
    star = nx.DiGraph([("root", "leaf1"), ("root", "leaf2"), ("root", "mid1"), ("mid1", "leaf3")])
    metrics = tree_metrics(star, planted_wheel, samples=200)
    # root reaches leaf1, leaf2, mid1 at 1 and leaf3 at 2; mid1 reaches leaf3 at 1.
    assert metrics["total_path_length"] == 1 + 1 + 1 + 2 + 1
    assert metrics["average_depth"] == pytest.approx((1 + 1 + 2) / 3)
    assert metrics["wheel_alignment"] == pytest.approx(3 / 4)


def test_shuffled_alignment_matches_the_exact_chance_level(planted_wheel):
    """The baseline is alignment under random relabelling: compare its sampled mean and std with the
    exact values over all 7! relabellings of the planted wheel."""
    import itertools

    star = nx.DiGraph([("root", "leaf1"), ("root", "leaf2"), ("root", "mid1"), ("mid1", "leaf3")])
    index = planted_wheel.index
    edges = [(index[parent], index[child]) for parent, child in star.edges()]
    exact = np.array([np.mean([labels[a] == labels[b] for a, b in edges])
                      for labels in itertools.permutations(planted_wheel.primary_index)])
    # Any two distinct words share a group with chance sum n_g (n_g - 1) / (7 * 6) = (3*2 + 2 + 2) / 42.
    assert exact.mean() == pytest.approx(10 / 42)
    metrics = tree_metrics(star, planted_wheel, samples=2000)
    assert metrics["shuffled_alignment_mean"] == pytest.approx(exact.mean(), abs=0.02)
    assert metrics["shuffled_alignment_std"] == pytest.approx(exact.std(), abs=0.02)
    # The seed makes the baseline reproducible, and another seed gives another sample.
    assert tree_metrics(star, planted_wheel, samples=200) == tree_metrics(star, planted_wheel, samples=200)
    assert (tree_metrics(star, planted_wheel, samples=200, seed=1)["shuffled_alignment_mean"]
            != tree_metrics(star, planted_wheel, samples=200)["shuffled_alignment_mean"])


def test_matching_is_vectorized_and_fast():
    rng = np.random.default_rng(0)
    P = rng.dirichlet(np.ones(135) * 0.1, size=5000)
    wheel = EmotionWheel.load("shaver")
    start = time.perf_counter()
    result = build_hierarchy(P, wheel, baseline_samples=100)
    assert result.matching.shape == (135, 135)
    assert time.perf_counter() - start < 5  # generous bound; the matrix itself takes milliseconds


def test_bad_inputs(planted_wheel):
    with pytest.raises(ConfigError, match=r"must be \[N, 7\]"):
        build_hierarchy(np.ones((3, 5)), planted_wheel)
    with pytest.raises(ConfigError, match="NaN rows"):
        build_hierarchy(np.full((2, 7), np.nan), planted_wheel)
    with pytest.raises(ConfigError, match="threshold must be in"):
        build_hierarchy(np.ones((2, 7)) / 7, planted_wheel, threshold=1.5)


def test_tree_figure_is_written(planted_wheel, tmp_path):
    from emotion_probe.analysis.plots import draw_tree, layered_positions

    result = build_hierarchy(_planted_distributions(planted_wheel), planted_wheel)
    positions = layered_positions(result.graph)
    assert positions["root"][1] == 0 and positions["mid1"][1] == -1 and positions["leaf3"][1] == -2
    written = draw_tree(result.graph, planted_wheel, tmp_path / "tree")
    assert [p.suffix for p in written] == [".png", ".svg"] and all(p.stat().st_size > 1000 for p in written)
