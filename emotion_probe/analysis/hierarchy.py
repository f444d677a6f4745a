"""Emotion hierarchies from next-word distributions (Zhao et al. 2024, Sec. 3).

Given P [N scenarios, K words] from the probe:
- co-occurrence   C[a, b] = sum_n P[n, a] * P[n, b]   (a != b)
- matching        M[a, b] = P(b | a) = C[a, b] / sum_b' C[a, b']
- b is a parent of a when M[a, b] > threshold and M[b, a] < M[a, b]:
  b is likely whenever a is, but not the reverse.

method="exact" stops there. method="paper" is the authors' released pipeline number for number
(`emotion_probe.analysis.hierarchy_paper`). `build_hierarchy` gives the tree and its metrics
(`emotion_probe.analysis.hierarchy_metrics`); what a reviewer asks of one tree, its intervals and its
dependence on the threshold, is in `emotion_probe.analysis.hierarchy_robustness`; trees as files and
their comparison in `emotion_probe.analysis.hierarchy_trees`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

import networkx as nx
import numpy as np
import pandas as pd

from emotion_probe.analysis.hierarchy_metrics import frequency_matched_alignment, tree_metrics
from emotion_probe.analysis.hierarchy_paper import paper_candidates, paper_cooccurrence, paper_graph, ranked_columns
from emotion_probe.errors import ConfigError
from emotion_probe.wheel import EmotionWheel

if TYPE_CHECKING:
    from emotion_probe.analysis.hierarchy_robustness import HierarchyBootstrap

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


def checked_input(
    distributions: np.ndarray, wheel: EmotionWheel, thresholds: list[float], method: str,
    ranked: list[list[str]] | None,
) -> tuple[np.ndarray, list[list[int]] | None]:
    """The [N, K] matrix as float64 and, for the paper method, each row's columns in rank order
    (`ranked_columns`), once the matrix fits the wheel and every threshold is in (0, 1)."""
    P = np.asarray(distributions, dtype=np.float64)
    if P.ndim != 2 or P.shape[1] != len(wheel.words):
        raise ConfigError(f"distributions must be [N, {len(wheel.words)}] for the {wheel.name!r} wheel, got {P.shape}")
    if np.isnan(P).any():
        raise ConfigError("distributions contain NaN rows (prompts where no wheel word was seen); drop them first")
    for threshold in thresholds:
        if not 0.0 < threshold < 1.0:
            raise ConfigError(f"hierarchy.threshold must be in (0, 1), got {threshold}")
    return P, ranked_columns(P, wheel.words, ranked) if method == "paper" else None


class HierarchyScores:
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
    P, rows = checked_input(distributions, wheel, [threshold], method, ranked)
    scores = HierarchyScores(P, wheel, method, rows)
    graph, candidates = scores.graph(threshold)
    edges = list(graph.edges())
    metrics = tree_metrics(graph, wheel, baseline_samples, seed)
    mean, std, p_value = frequency_matched_alignment(edges, wheel, P.sum(axis=0), frequency_bins,
                                                     baseline_samples, seed)
    metrics.update(frequency_matched_alignment_mean=mean, frequency_matched_alignment_std=std,
                   frequency_matched_p_value=p_value)
    return Hierarchy(wheel.words, scores.matching, graph, edges, metrics, threshold, method, candidates)
