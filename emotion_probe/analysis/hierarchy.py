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

What a reviewer asks of one tree: `bootstrap_hierarchy` (intervals for the metrics over resampled
scenarios, and each edge's stability), `threshold_sweep` (the tree against its one free
parameter), and two chance levels for wheel alignment (`shuffled_alignment`,
`frequency_matched_alignment`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import networkx as nx
import numpy as np
import pandas as pd

from emotion_probe.errors import ConfigError
from emotion_probe.analysis.stats import CONFIDENCE, percentile_interval, resample_rows, upper_tail_p
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


def _aligned_counts(parents: np.ndarray, children: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Aligned edges per labelling: labels is [samples, K] (a primary index per word per sample)."""
    return (labels[:, parents] == labels[:, children]).sum(axis=1)


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
    index = wheel.index
    groups = wheel.primary_index
    parents = np.array([index[p] for p, _ in edges])
    children = np.array([index[c] for _, c in edges])
    labels = np.stack([rng.permutation(groups) for _ in range(samples)])
    scores = _aligned_counts(parents, children, labels) / len(edges)
    observed = float(np.mean(groups[parents] == groups[children]))
    return float(scores.mean()), float(scores.std()), upper_tail_p(observed, scores)


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
    index = wheel.index
    groups = wheel.primary_index
    parents = np.array([index[p] for p, _ in edges])
    children = np.array([index[c] for _, c in edges])
    partition = mass_bins(mass, bins)
    labels = np.empty((samples, len(groups)), dtype=groups.dtype)
    for s in range(samples):
        for members in partition:
            labels[s, members] = rng.permutation(groups[members])
    scores = _aligned_counts(parents, children, labels) / len(edges)
    observed = float(np.mean(groups[parents] == groups[children]))
    return float(scores.mean()), float(scores.std()), upper_tail_p(observed, scores)


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
    Names are stripped; a name met twice is one node (with one parent per appearance), so a name
    below itself makes a cycle, which is refused (`require_acyclic`)."""
    if not isinstance(data, dict) or not isinstance(data.get("children", []), list):
        raise ConfigError(f"{source}: expected an object with \"name\" and \"children\" (a nested tree)")
    graph = nx.DiGraph()
    # Depth first, in file order, on a stack of its own: a tree of any depth is read without recursion.
    stack: list[tuple[object, str | None, int]] = [(top, None, 1) for top in reversed(data.get("children", []))]
    while stack:
        node, parent, depth = stack.pop()
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
        stack.extend((child, name, depth + 1) for child in reversed(children))
    return require_acyclic(graph, source)


def tree_from_edges(edges: list[tuple[str, str]], source: str = "tree") -> nx.DiGraph:
    """A tree from (parent, child) pairs, names stripped (the authors' edges.csv keeps their tokens' spaces)."""
    graph = nx.DiGraph()
    graph.add_edges_from((parent.strip(), child.strip()) for parent, child in edges)
    return require_acyclic(graph, source)


def require_acyclic(graph: nx.DiGraph, source: str = "tree") -> nx.DiGraph:
    """`graph` when no parent -> child path leads back to where it started, else a ConfigError naming one
    cycle: a cyclic "tree" has no roots or leaves to measure, and its metrics would read as an empty tree."""
    try:
        cycle = nx.find_cycle(graph)
    except nx.NetworkXNoCycle:
        return graph
    path = " -> ".join([str(cycle[0][0]), *(str(child) for _, child in cycle)])
    raise ConfigError(f"{source}: not a hierarchy, it has a cycle: {path}")


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
    #: method=paper only: the (parent, child, P(parent | child)) pairs that passed the conditional rule,
    #: before the authors' cleanup; None for the other methods.
    candidates: list[tuple[str, str, float]] | None = None

    @property
    def isolated(self) -> list[str]:
        """Nodes left without an edge (the paper method's two-parent rule can leave them so)."""
        return [n for n in self.graph if self.graph.degree(n) == 0]

    def matching_frame(self) -> pd.DataFrame:
        """matching as a labelled table: rows = given word a, columns = b, values P(b | a)."""
        return pd.DataFrame(self.matching, index=pd.Index(self.words, name="given"), columns=self.words)

    def edges_frame(self, bootstrap: HierarchyBootstrap | None = None) -> pd.DataFrame:
        """One row per edge with both conditional probabilities; with a bootstrap, its `stability`
        (the share of resamples whose tree has the edge)."""
        index = {w: i for i, w in enumerate(self.words)}
        frame = pd.DataFrame(
            [
                {"parent": p, "child": c, "p_parent_given_child": self.matching[index[c], index[p]],
                 "p_child_given_parent": self.matching[index[p], index[c]]}
                for p, c in self.edges
            ],
            columns=["parent", "child", "p_parent_given_child", "p_child_given_parent"],
        )
        if bootstrap is not None:
            frame["stability"] = [bootstrap.edge_share(p, c) for p, c in self.edges]
        return frame


def _checked(distributions: np.ndarray, wheel: EmotionWheel) -> np.ndarray:
    P = np.asarray(distributions, dtype=np.float64)
    if P.ndim != 2 or P.shape[1] != len(wheel.words):
        raise ConfigError(f"distributions must be [N, {len(wheel.words)}] for the {wheel.name!r} wheel, got {P.shape}")
    if np.isnan(P).any():
        raise ConfigError("distributions contain NaN rows (prompts where no wheel word was seen); drop them first")
    return P


def _check_threshold(threshold: float) -> None:
    if not 0.0 < threshold < 1.0:
        raise ConfigError(f"hierarchy.threshold must be in (0, 1), got {threshold}")


class _Scores:
    """What does not depend on the threshold: the co-occurrence and matching of one set of rows.
    `graph(threshold)` then applies the parent rule (and, for the paper method, its cleanup), so a
    threshold sweep computes the co-occurrence once."""

    def __init__(self, P: np.ndarray, wheel: EmotionWheel, method: str, rows: list[list[int]] | None):
        self.words = wheel.words
        self.method = method
        if method == "exact":
            self.matching = matching_matrix(cooccurrence(P))
        elif method == "paper":
            self.co = paper_cooccurrence(P, rows if rows is not None else ranked_columns(P, wheel.words))
            self.matching = self.co.matching()
        else:
            raise ConfigError(f"hierarchy.method: expected exact or paper, got {method!r}")

    def graph(self, threshold: float) -> tuple[nx.DiGraph, list[tuple[str, str, float]] | None]:
        """The parent graph at `threshold`, and the paper method's candidate pairs (None for exact)."""
        if self.method == "exact":
            graph = nx.DiGraph()
            graph.add_edges_from(parent_edges(self.matching, self.words, threshold))
            return graph, None
        words = self.words
        candidates = [(words[p], words[c], prob) for p, c, prob in paper_candidates(self.co, threshold)]
        return paper_graph(candidates), candidates


def build_hierarchy(
    distributions: np.ndarray,
    wheel: EmotionWheel,
    threshold: float = 0.3,
    method: Method = "exact",
    ranked: list[list[str]] | None = None,
    baseline_samples: int = 1000,
    seed: int = 0,
    frequency_bins: int = 10,
) -> Hierarchy:
    """Matching matrix, parent graph and metrics from a probe's [N, K] distribution matrix.

    method="paper" expects the paper probe's raw top-k probabilities (zero outside the top-k) and,
    to follow the model's rank order exactly, its `ranked` words per row (see `ranked_columns`).
    Wheel alignment comes with two chance levels of `baseline_samples` shuffles each: labels
    permuted over all words (`shuffled_alignment_*`) and within `frequency_bins` bins of total mass
    (`frequency_matched_alignment_*`, see `frequency_matched_alignment`).
    """
    P = _checked(distributions, wheel)
    _check_threshold(threshold)
    rows = ranked_columns(P, wheel.words, ranked) if method == "paper" else None
    scores = _Scores(P, wheel, method, rows)
    graph, candidates = scores.graph(threshold)
    edges = list(graph.edges())
    metrics = tree_metrics(graph, wheel, baseline_samples, seed)
    mean, std, p_value = frequency_matched_alignment(edges, wheel, P.sum(axis=0), frequency_bins,
                                                     baseline_samples, seed)
    metrics.update(frequency_matched_alignment_mean=mean, frequency_matched_alignment_std=std,
                   frequency_matched_p_value=p_value)
    return Hierarchy(wheel.words, scores.matching, graph, edges, metrics, threshold, method, candidates)


# --------------------------------------------------------------------------- uncertainty and sensitivity
#: The metrics `bootstrap_hierarchy` gives intervals for.
BOOTSTRAP_METRICS = ("edges", "total_path_length", "average_depth", "average_root_to_leaf_depth")


@dataclass
class HierarchyBootstrap:
    """The result of `bootstrap_hierarchy`."""

    resamples: int
    metrics: pd.DataFrame  # one row per resample, one column per BOOTSTRAP_METRICS
    edge_counts: dict[tuple[str, str], int]  # (parent, child) -> resamples whose graph has the edge

    def edge_share(self, parent: str, child: str) -> float:
        """Edge stability: the share of resamples whose graph contains parent -> child."""
        return self.edge_counts.get((parent, child), 0) / self.resamples if self.resamples else float("nan")

    def intervals(self, confidence: float = CONFIDENCE) -> dict[str, float]:
        """`<metric>_ci_low` and `<metric>_ci_high`: percentile intervals over the resamples."""
        result = {}
        for name in BOOTSTRAP_METRICS:
            result[f"{name}_ci_low"], result[f"{name}_ci_high"] = percentile_interval(
                self.metrics[name].to_numpy(), confidence)
        return result

    def edges_frame(self, tree_edges: set[tuple[str, str]] = frozenset()) -> pd.DataFrame:
        """Every edge seen in some resample, with its share and whether the full-data tree has it."""
        rows = [{"parent": p, "child": c, "stability": n / self.resamples, "in_tree": (p, c) in tree_edges}
                for (p, c), n in self.edge_counts.items()]
        frame = pd.DataFrame(rows, columns=["parent", "child", "stability", "in_tree"])
        return frame.sort_values(["stability", "parent", "child"], ascending=[False, True, True],
                                 kind="stable").reset_index(drop=True)


def bootstrap_hierarchy(
    distributions: np.ndarray,
    wheel: EmotionWheel,
    threshold: float = 0.3,
    method: Method = "exact",
    ranked: list[list[str]] | None = None,
    resamples: int = 200,
    seed: int = 0,
    on_resample: Callable[[], None] | None = None,
) -> HierarchyBootstrap:
    """Rebuild the hierarchy on `resamples` bootstrap samples of the scenarios (rows drawn with
    replacement) and record its metrics and edges each time.

    The drawn rows are put back in file order before building: the paper method's insertion order
    (which parent a two-parent node keeps) follows the row order, and a bootstrap sample is a
    multiset of the original rows, not a reshuffle of them. `on_resample` is called after each
    resample (a progress bar).
    """
    P = _checked(distributions, wheel)
    _check_threshold(threshold)
    if resamples < 1:
        raise ConfigError(f"hierarchy.bootstrap: need at least 1 resample, got {resamples}")
    if len(P) == 0:
        raise ConfigError("bootstrap: no scenarios to resample")
    columns = ranked_columns(P, wheel.words, ranked) if method == "paper" else None
    rng = np.random.default_rng(seed)
    values = []
    counts: dict[tuple[str, str], int] = {}
    for draw in resample_rows(len(P), resamples, rng):
        rows = np.sort(draw)
        scores = _Scores(P[rows], wheel, method, [columns[i] for i in rows] if columns is not None else None)
        graph, _ = scores.graph(threshold)
        metrics = structure_metrics(graph)
        values.append({name: metrics[name] for name in BOOTSTRAP_METRICS})
        for edge in graph.edges():
            counts[edge] = counts.get(edge, 0) + 1
        if on_resample is not None:
            on_resample()
    return HierarchyBootstrap(resamples, pd.DataFrame(values, columns=list(BOOTSTRAP_METRICS)), counts)


#: The columns of `threshold_sweep`.
SWEEP_COLUMNS = ("threshold", "edges", "nodes", "isolated", "roots", "leaves", "total_path_length",
                 "average_depth", "max_depth", "average_root_to_leaf_depth", "wheel_alignment")


def threshold_sweep(
    distributions: np.ndarray,
    wheel: EmotionWheel,
    thresholds: list[float],
    method: Method = "exact",
    ranked: list[list[str]] | None = None,
) -> pd.DataFrame:
    """The hierarchy's size and depth at each threshold (one row per threshold, ascending).

    The co-occurrence does not depend on the threshold and is computed once; only the parent rule
    (and the paper method's cleanup) is applied per threshold. No shuffled baselines: the sweep shows
    how much of the tree the one free parameter decides, not its alignment's significance.
    """
    P = _checked(distributions, wheel)
    for threshold in thresholds:
        _check_threshold(threshold)
    columns = ranked_columns(P, wheel.words, ranked) if method == "paper" else None
    scores = _Scores(P, wheel, method, columns)
    rows = []
    for threshold in sorted({float(t) for t in thresholds}):
        graph, _ = scores.graph(threshold)
        rows.append({"threshold": threshold, **structure_metrics(graph),
                     "wheel_alignment": alignment(list(graph.edges()), wheel)})
    return pd.DataFrame(rows, columns=list(SWEEP_COLUMNS))
