"""The authors' hierarchy pipeline (phys-ai/Emotion-Hierarchy-LLMs, docs/legacy_semantics.md), number for number.

The co-occurrence sums of `emotion_probe.analysis.hierarchy`, taken over the top-k words of each row in
float32 and in their loop order (`paper_cooccurrence`), the conditional rule applied in that order
(`paper_candidates`), then their graph cleanup: the two-parent rule and the bounded removal of
grandparent and great-grandparent edges (`paper_graph`).
"""

from __future__ import annotations

from dataclasses import dataclass

import networkx as nx
import numpy as np

from emotion_probe.errors import ConfigError


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
