"""What is measured on a hierarchy: its size, depth and path lengths, and its alignment with the wheel.

Alignment comes with two chance levels, so a reader can tell it from what the wheel's grouping gives by
itself: `shuffled_alignment` permutes the primaries over all words, `frequency_matched_alignment` only
among words of similar frequency.
"""

from __future__ import annotations

import networkx as nx
import numpy as np

from emotion_probe.analysis.stats import upper_tail_p
from emotion_probe.errors import ConfigError
from emotion_probe.wheel import EmotionWheel


def average_root_to_leaf_depth(graph: nx.DiGraph) -> float:
    """The authors' depth: the mean length of every path from a root (in-degree 0) to a leaf
    (out-degree 0). An isolated node is both, a path of length 0. Counted by dynamic programming,
    not by listing paths, so wide graphs stay cheap; NaN for a graph with a cycle."""
    if graph.number_of_nodes() == 0:
        return 0.0
    if not nx.is_directed_acyclic_graph(graph):
        return float("nan")
    paths: dict[str, int] = {}  # root-to-leaf paths starting at the node
    length: dict[str, int] = {}  # their summed lengths
    for node in reversed(list(nx.topological_sort(graph))):
        children = list(graph.successors(node))
        if not children:
            paths[node], length[node] = 1, 0
        else:
            paths[node] = sum(paths[c] for c in children)
            length[node] = sum(length[c] + paths[c] for c in children)
    roots = [n for n in graph if graph.in_degree(n) == 0]
    count = sum(paths[r] for r in roots)
    return sum(length[r] for r in roots) / count if count else 0.0


def _depths_from_roots(graph: nx.DiGraph) -> dict[str, int]:
    roots = [n for n in graph if graph.in_degree(n) == 0]
    depth: dict[str, int] = {}
    frontier = list(roots)
    for node in roots:
        depth[node] = 0
    while frontier:
        nxt = []
        for node in frontier:
            for child in graph.successors(node):
                if child not in depth:
                    depth[child] = depth[node] + 1
                    nxt.append(child)
        frontier = nxt
    return depth


def alignment(edges: list[tuple[str, str]], wheel: EmotionWheel) -> float:
    """Share of parent-child edges whose two words share a primary in the wheel."""
    if not edges:
        return float("nan")
    return float(np.mean([wheel.primary_of(p) == wheel.primary_of(c) for p, c in edges]))


def _against_labellings(edges: list[tuple[str, str]], wheel: EmotionWheel, labels: np.ndarray) -> tuple[float, float, float]:
    """The mean and standard deviation of the edges' alignment under each labelling of `labels` ([samples, K],
    a primary index per word per sample), and the one-sided Monte Carlo p-value of their alignment under
    the wheel's own labels."""
    index = wheel.index
    groups = wheel.primary_index
    parents = np.array([index[p] for p, _ in edges])
    children = np.array([index[c] for _, c in edges])
    scores = (labels[:, parents] == labels[:, children]).sum(axis=1) / len(edges)
    observed = float(np.mean(groups[parents] == groups[children]))
    return float(scores.mean()), float(scores.std()), upper_tail_p(observed, scores)


def shuffled_alignment(
    edges: list[tuple[str, str]], wheel: EmotionWheel, samples: int = 1000, seed: int = 0
) -> tuple[float, float, float]:
    """Chance level: alignment after randomly permuting which primary each word belongs to.

    Returns the mean and standard deviation over `samples` permutations and the one-sided Monte
    Carlo p-value of the observed alignment (`emotion_probe.analysis.stats.upper_tail_p`); NaNs without
    edges or with samples=0.
    """
    if not edges or samples <= 0:
        return float("nan"), float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    groups = wheel.primary_index
    labels = np.stack([rng.permutation(groups) for _ in range(samples)])
    return _against_labellings(edges, wheel, labels)


def mass_bins(mass: np.ndarray, bins: int) -> list[np.ndarray]:
    """Words (column indices) in `bins` bins of near-equal size by total mass, lightest first.

    Equal-count bins, not equal-width ones: masses span orders of magnitude, and a bin must hold
    several words for a shuffle within it to move anything. Ties in mass keep wheel order. More
    bins than words is one word per bin.
    """
    mass = np.asarray(mass, dtype=np.float64)
    order = np.argsort(mass, kind="stable")
    return [part for part in np.array_split(order, min(max(int(bins), 1), len(order))) if part.size]


def frequency_matched_alignment(
    edges: list[tuple[str, str]], wheel: EmotionWheel, mass: np.ndarray, bins: int = 10,
    samples: int = 1000, seed: int = 0,
) -> tuple[float, float, float]:
    """A chance level for wheel alignment that keeps each word's frequency.

    Edge direction follows each word's total mass (a parent is the word with the larger total
    co-occurrence), so frequent words are parents more often. If the wheel's groups also differ in
    frequency (primaries are common words), alignment above the uniform shuffle could come from
    frequency alone. This null permutes the primary labels only among words of similar total mass
    (`mass_bins` of `mass`, each word's summed probability over the scenarios), so every labelling
    keeps the link between frequency and group, and asks whether the observed edges align more
    than that. Returns the mean and standard deviation of the null alignment and the one-sided
    Monte Carlo p-value of the observed one; NaNs without edges or with samples=0.
    """
    mass = np.asarray(mass, dtype=np.float64)
    if mass.shape != (len(wheel.words),):
        raise ConfigError(f"mass must have one value per word of the {wheel.name!r} wheel, got {mass.shape}")
    if not edges or samples <= 0:
        return float("nan"), float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    groups = wheel.primary_index
    partition = mass_bins(mass, bins)
    labels = np.empty((samples, len(groups)), dtype=groups.dtype)
    for s in range(samples):
        for members in partition:
            labels[s, members] = rng.permutation(groups[members])
    return _against_labellings(edges, wheel, labels)


def structure_metrics(graph: nx.DiGraph) -> dict[str, float]:
    """The graph's size, depth and path-length metrics (see `tree_metrics`), without the wheel."""
    edges = graph.number_of_edges()
    depth = _depths_from_roots(graph)
    leaves = [n for n in graph if graph.out_degree(n) == 0 and graph.in_degree(n) > 0]
    leaf_depths = [depth[n] for n in leaves if n in depth]
    total_path = sum(sum(lengths.values()) for _, lengths in nx.all_pairs_shortest_path_length(graph))
    return {
        "edges": edges,
        "nodes": graph.number_of_nodes(),
        "isolated": sum(1 for n in graph if graph.degree(n) == 0),
        "roots": sum(1 for n in graph if graph.in_degree(n) == 0),
        "leaves": len(leaves),
        "total_path_length": int(total_path),
        "average_depth": float(np.mean(leaf_depths)) if leaf_depths else 0.0,
        "max_depth": int(max(leaf_depths)) if leaf_depths else 0,
        "average_root_to_leaf_depth": average_root_to_leaf_depth(graph),
    }


def tree_metrics(graph: nx.DiGraph, wheel: EmotionWheel, samples: int = 1000, seed: int = 0) -> dict[str, float]:
    """Size, depth and path-length metrics of the hierarchy, plus alignment with the wheel.

    - edges, nodes: parent-child edges, and the words in the graph (the paper method keeps words
      its cleanup left without an edge: `isolated`)
    - total_path_length: sum of shortest-path lengths over all ordered (ancestor, descendant) pairs
    - average_depth: mean distance from the nearest root to each leaf
    - max_depth: the longest of those distances
    - average_root_to_leaf_depth: the authors' depth, the mean length over every root-to-leaf path
    - wheel_alignment, with shuffled_alignment_mean/std/p_value: the same statistic under shuffled
      labels, and how often a shuffle aligns at least as well
    """
    edges = list(graph.edges())
    baseline_mean, baseline_std, baseline_p = shuffled_alignment(edges, wheel, samples, seed)
    return {
        **structure_metrics(graph),
        "wheel_alignment": alignment(edges, wheel),
        "shuffled_alignment_mean": baseline_mean,
        "shuffled_alignment_std": baseline_std,
        "shuffled_alignment_p_value": baseline_p,
    }
