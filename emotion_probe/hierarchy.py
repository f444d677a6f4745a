"""Emotion hierarchies from next-word distributions (Zhao et al. 2024, Sec. 3).

Given P [N scenarios, K words] from the probe:
- co-occurrence   C[a, b] = sum_n P[n, a] * P[n, b]   (a != b)
- matching        M[a, b] = P(b | a) = C[a, b] / sum_b' C[a, b']
- b is a parent of a when M[a, b] > threshold and M[b, a] < M[a, b]:
  b is likely whenever a is, but not the reverse.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import networkx as nx
import numpy as np
import pandas as pd

from emotion_probe.errors import ConfigError
from emotion_probe.wheel import EmotionWheel

Method = Literal["exact", "paper"]


def cooccurrence(distributions: np.ndarray) -> np.ndarray:
    """C = P^T P with the diagonal removed: one matrix product, fast for N = 5,000, K = 135."""
    P = np.asarray(distributions, dtype=np.float64)
    C = P.T @ P
    np.fill_diagonal(C, 0.0)
    return C


def topk_cooccurrence(distributions: np.ndarray, top_k: int) -> np.ndarray:
    """The paper's variant: count how often two words are both among a scenario's top-k words."""
    P = np.asarray(distributions, dtype=np.float64)
    if not 1 <= top_k <= P.shape[1]:
        raise ConfigError(f"hierarchy.top_k must be between 1 and {P.shape[1]}, got {top_k}")
    top = np.argpartition(-P, top_k - 1, axis=1)[:, :top_k]
    indicator = np.zeros_like(P)
    np.put_along_axis(indicator, top, 1.0, axis=1)
    return cooccurrence(indicator)


def matching_matrix(C: np.ndarray) -> np.ndarray:
    """Row-normalize co-occurrence into P(b | a); a word that never co-occurs gets a zero row."""
    totals = C.sum(axis=1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(totals > 0, C / np.where(totals > 0, totals, 1.0), 0.0)


def parent_edges(matching: np.ndarray, words: list[str], threshold: float = 0.3) -> list[tuple[str, str]]:
    """(parent, child) pairs: M[child, parent] > threshold and M[parent, child] < M[child, parent]."""
    is_parent = (matching > threshold) & (matching.T < matching)  # [child, parent]
    children, parents = np.nonzero(is_parent)
    return [(words[p], words[c]) for c, p in zip(children, parents)]


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


def shuffled_alignment(
    edges: list[tuple[str, str]], wheel: EmotionWheel, samples: int = 1000, seed: int = 0
) -> tuple[float, float]:
    """Chance level: alignment after randomly permuting which primary each word belongs to."""
    if not edges:
        return float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    index = wheel.index
    groups = wheel.primary_index
    parents = np.array([index[p] for p, _ in edges])
    children = np.array([index[c] for _, c in edges])
    scores = np.empty(samples)
    for s in range(samples):
        permuted = rng.permutation(groups)
        scores[s] = np.mean(permuted[parents] == permuted[children])
    return float(scores.mean()), float(scores.std())


def tree_metrics(graph: nx.DiGraph, wheel: EmotionWheel, samples: int = 1000, seed: int = 0) -> dict[str, float]:
    """Size, depth and path-length metrics of the hierarchy, plus alignment with the wheel.

    - edges, nodes: parent-child edges, and the words that take part in any
    - total_path_length: sum of shortest-path lengths over all ordered (ancestor, descendant) pairs
    - average_depth: mean distance from the nearest root to each leaf
    - max_depth: the longest of those distances
    - wheel_alignment, with shuffled_alignment_mean/std: the same statistic under shuffled labels
    """
    edges = list(graph.edges())
    depth = _depths_from_roots(graph)
    leaves = [n for n in graph if graph.out_degree(n) == 0 and graph.in_degree(n) > 0]
    leaf_depths = [depth[n] for n in leaves if n in depth]
    total_path = sum(sum(lengths.values()) for _, lengths in nx.all_pairs_shortest_path_length(graph))
    baseline_mean, baseline_std = shuffled_alignment(edges, wheel, samples, seed)
    return {
        "edges": len(edges),
        "nodes": graph.number_of_nodes(),
        "roots": sum(1 for n in graph if graph.in_degree(n) == 0),
        "leaves": len(leaves),
        "total_path_length": int(total_path),
        "average_depth": float(np.mean(leaf_depths)) if leaf_depths else 0.0,
        "max_depth": int(max(leaf_depths)) if leaf_depths else 0,
        "wheel_alignment": alignment(edges, wheel),
        "shuffled_alignment_mean": baseline_mean,
        "shuffled_alignment_std": baseline_std,
    }


@dataclass
class Hierarchy:
    """The result of `build_hierarchy`."""

    words: list[str]
    matching: np.ndarray  # [K, K], matching[a, b] = P(b | a)
    graph: nx.DiGraph  # parent -> child
    edges: list[tuple[str, str]]
    metrics: dict[str, float]
    threshold: float
    method: str
    extra: dict = field(default_factory=dict)

    def matching_frame(self) -> pd.DataFrame:
        """matching as a labelled table: rows = given word a, columns = b, values P(b | a)."""
        return pd.DataFrame(self.matching, index=pd.Index(self.words, name="given"), columns=self.words)

    def edges_frame(self) -> pd.DataFrame:
        index = {w: i for i, w in enumerate(self.words)}
        return pd.DataFrame(
            [
                {"parent": p, "child": c, "p_parent_given_child": self.matching[index[c], index[p]],
                 "p_child_given_parent": self.matching[index[p], index[c]]}
                for p, c in self.edges
            ],
            columns=["parent", "child", "p_parent_given_child", "p_child_given_parent"],
        )


def build_hierarchy(
    distributions: np.ndarray,
    wheel: EmotionWheel,
    threshold: float = 0.3,
    method: Method = "exact",
    top_k: int = 10,
    baseline_samples: int = 1000,
    seed: int = 0,
) -> Hierarchy:
    """Matching matrix, parent graph and metrics from a probe's [N, K] distribution matrix."""
    P = np.asarray(distributions, dtype=np.float64)
    if P.ndim != 2 or P.shape[1] != len(wheel.words):
        raise ConfigError(f"distributions must be [N, {len(wheel.words)}] for the {wheel.name!r} wheel, got {P.shape}")
    if np.isnan(P).any():
        raise ConfigError("distributions contain NaN rows (prompts where no wheel word was seen); drop them first")
    if not 0.0 < threshold < 1.0:
        raise ConfigError(f"hierarchy.threshold must be in (0, 1), got {threshold}")
    if method == "exact":
        C = cooccurrence(P)
    elif method == "paper":
        C = topk_cooccurrence(P, top_k)
    else:
        raise ConfigError(f"hierarchy.method: expected exact or paper, got {method!r}")
    matching = matching_matrix(C)
    edges = parent_edges(matching, wheel.words, threshold)
    graph = nx.DiGraph()
    graph.add_edges_from(edges)
    metrics = tree_metrics(graph, wheel, baseline_samples, seed)
    return Hierarchy(wheel.words, matching, graph, edges, metrics, threshold, method)
