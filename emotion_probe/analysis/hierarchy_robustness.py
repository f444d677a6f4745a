"""How much of a hierarchy the data and its one free parameter decide.

`bootstrap_hierarchy` rebuilds the tree on resampled scenarios (intervals for its metrics, and each
edge's stability); `threshold_sweep` builds it at several thresholds from one co-occurrence.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pandas as pd

from emotion_probe.analysis.hierarchy import HierarchyScores, Method, checked_input
from emotion_probe.analysis.hierarchy_metrics import alignment, structure_metrics
from emotion_probe.analysis.stats import CONFIDENCE, percentile_interval, resample_rows
from emotion_probe.errors import ConfigError
from emotion_probe.wheel import EmotionWheel

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
    P, columns = checked_input(distributions, wheel, [threshold], method, ranked)
    if resamples < 1:
        raise ConfigError(f"hierarchy.bootstrap: need at least 1 resample, got {resamples}")
    if len(P) == 0:
        raise ConfigError("bootstrap: no scenarios to resample")
    rng = np.random.default_rng(seed)
    values = []
    counts: dict[tuple[str, str], int] = {}
    for draw in resample_rows(len(P), resamples, rng):
        rows = np.sort(draw)
        scores = HierarchyScores(P[rows], wheel, method, [columns[i] for i in rows] if columns is not None else None)
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
    P, columns = checked_input(distributions, wheel, thresholds, method, ranked)
    scores = HierarchyScores(P, wheel, method, columns)
    rows = []
    for threshold in sorted({float(t) for t in thresholds}):
        graph, _ = scores.graph(threshold)
        rows.append({"threshold": threshold, **structure_metrics(graph),
                     "wheel_alignment": alignment(list(graph.edges()), wheel)})
    return pd.DataFrame(rows, columns=list(SWEEP_COLUMNS))
