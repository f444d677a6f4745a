"""Emotion hierarchies from next-word distributions (Zhao et al. 2024, Sec. 3).

Given P [N scenarios, K words] from the probe:
- co-occurrence   C[a, b] = sum_n P[n, a] * P[n, b]   (a != b)
- matching        M[a, b] = P(b | a) = C[a, b] / sum_b' C[a, b']
- b is a parent of a when M[a, b] > threshold and M[b, a] < M[a, b]:
  b is likely whenever a is, but not the reverse.

method="exact" stops there. method="paper" is the authors' released pipeline
(phys-ai/Emotion-Hierarchy-LLMs, docs/legacy_semantics.md) number for number:
the same sums taken over the top-k words of each row in float32 and in their
loop order, then their graph cleanup (the two-parent rule and the bounded
removal of grandparent and great-grandparent edges); see `paper_graph`.
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


# --------------------------------------------------------------------------- the authors' pipeline
@dataclass
class PaperCooccurrence:
    """The authors' co-occurrence, kept in the order their dictionaries were filled.

    - weights[a, b]: sum over rows of p_a * p_b for two distinct words both in the row's top-k,
      accumulated in float32 row by row (their dtype and order, so sums round as theirs do);
    - frequencies[a]: float32 sum of weights[a, b] over a's neighbours, in `neighbors[a]` order;
    - nodes: words (column indices) in the order they first co-occurred with another word,
      row by row and, within a row, in rank order;
    - neighbors[a]: the words a co-occurred with, in the order of their first co-occurrence:
      row by row, then by the pair's ranks (i < j, i first).
    """

    weights: np.ndarray
    frequencies: np.ndarray
    nodes: list[int]
    neighbors: dict[int, list[int]]

    def matching(self) -> np.ndarray:
        """P(b | a) = weights[a, b] / frequencies[a], float32 division as theirs; zero rows where a never co-occurs."""
        with np.errstate(invalid="ignore", divide="ignore"):
            M = self.weights / self.frequencies[:, None]
        return np.where(np.isfinite(M), M, np.float32(0.0)).astype(np.float64)


def ranked_columns(distributions: np.ndarray, words: list[str], ranked: list[list[str]] | None = None) -> list[list[int]]:
    """Per row, the columns of the words found among the top-k tokens, in rank order.

    `ranked` is the probe's record (the `top_k_words` column of a paper run). Without it, the words
    with P > 0 are taken in descending P, ties in wheel order: the model's rank order except among
    exactly tied probabilities, which the model may have ranked otherwise.
    """
    P = np.asarray(distributions)
    if ranked is None:
        rows = []
        for values in P:
            present = np.flatnonzero(values > 0)
            rows.append(present[np.argsort(-values[present], kind="stable")].tolist())
        return rows
    if len(ranked) != len(P):
        raise ConfigError(f"ranked: {len(ranked)} rows for {len(P)} rows of distributions")
    index = {word: i for i, word in enumerate(words)}
    rows = []
    for n, row in enumerate(ranked):
        unknown = [word for word in row if word not in index]
        if unknown:
            raise ConfigError(f"ranked: row {n} names {unknown[0]!r}, which is not a word of the wheel")
        if len(set(row)) != len(row):
            raise ConfigError(f"ranked: row {n} lists a word twice; each word has one rank per row")
        rows.append([index[word] for word in row])
    return rows


def paper_cooccurrence(distributions: np.ndarray, rows: list[list[int]]) -> PaperCooccurrence:
    """The authors' weighted co-occurrence over each row's top-k words (see PaperCooccurrence)."""
    P32 = np.asarray(distributions).astype(np.float32)
    K = P32.shape[1]
    weights = np.zeros((K, K), dtype=np.float32)
    met = np.zeros((K, K), dtype=bool)
    nodes: list[int] = []
    is_node = np.zeros(K, dtype=bool)
    neighbors: dict[int, list[int]] = {}
    for n, columns in enumerate(rows):
        if len(columns) < 2:
            continue  # a lone word has no pair, so it never enters their dictionary
        idx = np.asarray(columns)
        p = P32[n, idx]
        pair_weights = np.outer(p, p)  # float32 products, as theirs
        np.fill_diagonal(pair_weights, 0.0)  # only distinct ranks pair up: no self co-occurrence
        # Each pair occurs once per row, so one float32 add per row keeps their rounding exactly.
        weights[np.ix_(idx, idx)] += pair_weights
        for column in columns:
            if not is_node[column]:
                is_node[column] = True
                nodes.append(column)
                neighbors[column] = []
        first, second = np.triu_indices(len(idx), 1)  # (i, j), i < j, i-major: their loop order
        new = ~met[idx[first], idx[second]]
        for a, b in zip(idx[first[new]].tolist(), idx[second[new]].tolist()):
            neighbors[a].append(b)
            neighbors[b].append(a)
            met[a, b] = met[b, a] = True
    frequencies = np.zeros(K, dtype=np.float32)
    for a, others in neighbors.items():
        total = np.float32(0.0)
        for b in others:  # a sequential float32 sum, in their order
            total = np.float32(total + weights[a, b])
        frequencies[a] = total
    return PaperCooccurrence(weights, frequencies, nodes, neighbors)


def paper_candidates(co: PaperCooccurrence, threshold: float) -> list[tuple[int, int, float]]:
    """(parent, child, P(parent | child)) for every pair that passes the conditional rule, in their order:
    children in `co.nodes` order, each child's parents in its `neighbors` order."""
    # NumPy compares a float32 with a Python float in float32 (NEP 50), so the threshold is float32 too.
    limit = np.float32(threshold)
    found = []
    with np.errstate(invalid="ignore", divide="ignore"):
        for child in co.nodes:
            for parent in co.neighbors[child]:
                parent_given_child = co.weights[child, parent] / co.frequencies[child]
                child_given_parent = co.weights[parent, child] / co.frequencies[parent]
                if parent_given_child > limit and child_given_parent < parent_given_child:
                    found.append((parent, child, float(parent_given_child)))
    return found


def paper_graph(candidates: list[tuple[str, str, float]]) -> nx.DiGraph:
    """The authors' graph from their candidate pairs (parent, child, P(parent | child)), quirks kept.

    1. Edges are added parent -> child in candidate order, so a node's parents are listed in the
       order the child first co-occurred with each of them.
    2. Two-parent rule: a node with exactly two parents keeps one. Their code compares
       P(node | parent) looked up under the key (child=parent, parent=node), the reverse of how it
       was stored. That key exists only if node were also a parent of its parent, which the
       conditional rule never allows (a parent always has the larger total weight), so both lookups
       give 0, 0 < 0 is false, and the *first-inserted* parent is kept whatever the probabilities.
       Nodes with three or more parents keep them all.
    3. Cleanup: for each node (in insertion order) and each of its parents at that moment, an edge
       into the node from a grandparent or great-grandparent (found through the graph as it is
       then) is removed. Deeper shortcuts stay; this is not a transitive reduction.
    4. Nodes are never removed: a parent whose only edge the two-parent rule dropped stays,
       isolated, and counts as a root (and a zero-length root-to-leaf path) in the metrics.
    """
    graph = nx.DiGraph()
    stored: dict[tuple[str, str], float] = {}  # keyed (child, parent), as theirs
    for parent, child, probability in candidates:
        graph.add_edge(parent, child)
        stored[(child, parent)] = probability
    for node in list(graph.nodes):
        parents = list(graph.predecessors(node))
        if len(parents) != 2:
            continue
        first, second = parents
        # Their reversed lookup, kept on purpose (see 2. above).
        if stored.get((first, node), 0) < stored.get((second, node), 0):
            graph.remove_edge(first, node)
        else:
            graph.remove_edge(second, node)
    for node in list(graph.nodes):
        for parent in list(graph.predecessors(node)):
            for grandparent in list(graph.predecessors(parent)):
                if graph.has_edge(grandparent, node):
                    graph.remove_edge(grandparent, node)
                for great_grandparent in list(graph.predecessors(grandparent)):
                    if graph.has_edge(great_grandparent, node):
                        graph.remove_edge(great_grandparent, node)
    return graph


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

    - edges, nodes: parent-child edges, and the words in the graph (the paper method keeps words
      its cleanup left without an edge: `isolated`)
    - total_path_length: sum of shortest-path lengths over all ordered (ancestor, descendant) pairs
    - average_depth: mean distance from the nearest root to each leaf
    - max_depth: the longest of those distances
    - average_root_to_leaf_depth: the authors' depth, the mean length over every root-to-leaf path
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
        "isolated": sum(1 for n in graph if graph.degree(n) == 0),
        "roots": sum(1 for n in graph if graph.in_degree(n) == 0),
        "leaves": len(leaves),
        "total_path_length": int(total_path),
        "average_depth": float(np.mean(leaf_depths)) if leaf_depths else 0.0,
        "max_depth": int(max(leaf_depths)) if leaf_depths else 0,
        "average_root_to_leaf_depth": average_root_to_leaf_depth(graph),
        "wheel_alignment": alignment(edges, wheel),
        "shuffled_alignment_mean": baseline_mean,
        "shuffled_alignment_std": baseline_std,
    }


# --------------------------------------------------------------------------- nested trees and comparison
SYNTHETIC_ROOT = "Emotion Hierarchy"


def nested_tree(graph: nx.DiGraph, root_name: str = SYNTHETIC_ROOT) -> dict:
    """The graph as the authors publish trees (reference/hierarchies/*.json): nested name/children under a
    synthetic root whose children are the graph's roots (isolated nodes included). A node with several
    parents appears under each of them, as a nested tree must."""

    def subtree(node: str) -> dict:
        children = [subtree(child) for child in graph.successors(node)]
        return {"name": node, "children": children} if children else {"name": node, "size": 1}

    if not nx.is_directed_acyclic_graph(graph):
        raise ConfigError("the hierarchy has a cycle; it cannot be written as a nested tree")
    return {"name": root_name, "children": [subtree(n) for n in graph if graph.in_degree(n) == 0]}


def tree_from_nested(data: object, source: str = "tree") -> nx.DiGraph:
    """Read a nested name/children tree: the top object is the synthetic root, never a node itself.
    Names are stripped; a name met twice is one node (with one parent per appearance)."""
    graph = nx.DiGraph()

    def walk(node: object, parent: str | None, depth: int) -> None:
        if not isinstance(node, dict) or not isinstance(node.get("name"), str) or not node["name"].strip():
            raise ConfigError(f"{source}: every node needs a non-empty \"name\" (at depth {depth})")
        children = node.get("children", [])
        if not isinstance(children, list):
            raise ConfigError(f"{source}: \"children\" of {node['name']!r} must be a list")
        name = node["name"].strip()
        if parent is None:
            graph.add_node(name)
        else:
            graph.add_edge(parent, name)
        for child in children:
            walk(child, name, depth + 1)

    if not isinstance(data, dict) or not isinstance(data.get("children", []), list):
        raise ConfigError(f"{source}: expected an object with \"name\" and \"children\" (a nested tree)")
    for top in data.get("children", []):
        walk(top, None, 1)
    return graph


def edge_agreement(ours: nx.DiGraph, reference: nx.DiGraph) -> dict[str, float | int]:
    """Directed parent -> child edges: precision (share of ours in the reference), recall (share of the
    reference's in ours), F1. Undefined (NaN) where a graph has no edge to divide by."""
    mine, theirs = set(ours.edges()), set(reference.edges())
    common = len(mine & theirs)
    precision = common / len(mine) if mine else float("nan")
    recall = common / len(theirs) if theirs else float("nan")
    if np.isnan(precision) or np.isnan(recall):
        f1 = float("nan")
    else:
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"edges": len(mine), "reference_edges": len(theirs), "common_edges": common,
            "precision": precision, "recall": recall, "f1": f1}


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
    ranked: list[list[str]] | None = None,
    baseline_samples: int = 1000,
    seed: int = 0,
) -> Hierarchy:
    """Matching matrix, parent graph and metrics from a probe's [N, K] distribution matrix.

    method="paper" expects the paper probe's raw top-k probabilities (zero outside the top-k) and,
    to follow the model's rank order exactly, its `ranked` words per row (see `ranked_columns`).
    """
    P = np.asarray(distributions, dtype=np.float64)
    if P.ndim != 2 or P.shape[1] != len(wheel.words):
        raise ConfigError(f"distributions must be [N, {len(wheel.words)}] for the {wheel.name!r} wheel, got {P.shape}")
    if np.isnan(P).any():
        raise ConfigError("distributions contain NaN rows (prompts where no wheel word was seen); drop them first")
    if not 0.0 < threshold < 1.0:
        raise ConfigError(f"hierarchy.threshold must be in (0, 1), got {threshold}")
    extra: dict = {}
    if method == "exact":
        matching = matching_matrix(cooccurrence(P))
        edges = parent_edges(matching, wheel.words, threshold)
        graph = nx.DiGraph()
        graph.add_edges_from(edges)
    elif method == "paper":
        co = paper_cooccurrence(P, ranked_columns(P, wheel.words, ranked))
        words = wheel.words
        candidates = [(words[p], words[c], prob) for p, c, prob in paper_candidates(co, threshold)]
        graph = paper_graph(candidates)
        matching = co.matching()
        edges = list(graph.edges())
        extra["candidates"] = candidates
        extra["isolated"] = [n for n in graph if graph.degree(n) == 0]
    else:
        raise ConfigError(f"hierarchy.method: expected exact or paper, got {method!r}")
    metrics = tree_metrics(graph, wheel, baseline_samples, seed)
    return Hierarchy(wheel.words, matching, graph, edges, metrics, threshold, method, extra)
