"""Figures: the layered emotion tree (pure-Python layout, no graphviz)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only; never needs a display
import matplotlib.pyplot as plt
import networkx as nx
from matplotlib.lines import Line2D

from emotion_probe.files import save_figure
from emotion_probe.wheel import EmotionWheel


def layered_positions(graph: nx.DiGraph, max_per_row: int = 14) -> dict[str, tuple[float, float]]:
    """Roots on top; each node one layer below its deepest parent; barycentre ordering within a layer.

    Placing a node under its *deepest* parent keeps every edge pointing down even when a
    word has parents at several levels (the transitive edges the paper's rule produces).
    """
    if graph.number_of_nodes() == 0:
        return {}
    # The parent rule is antisymmetric per pair but can still close a longer cycle;
    # drop one edge per cycle for layout purposes only (all edges are still drawn).
    condensed = graph.copy()
    while not nx.is_directed_acyclic_graph(condensed):
        condensed.remove_edge(*nx.find_cycle(condensed)[0][:2])
    layer: dict[str, int] = {}
    for node in nx.topological_sort(condensed):
        parents = list(condensed.predecessors(node))
        layer[node] = 1 + max(layer[p] for p in parents) if parents else 0
    for node in graph:
        layer.setdefault(node, 0)
    layers: dict[int, list[str]] = {}
    for node, depth in layer.items():
        layers.setdefault(depth, []).append(node)
    # A wide layer (a model with one hub word and 40 children) is wrapped onto several rows,
    # so that the figure stays readable instead of growing one label-width per node.
    x: dict[str, float] = {}
    y: dict[str, float] = {}
    row_y = 0.0
    for depth in sorted(layers):
        members = layers[depth]

        def barycentre(node: str) -> tuple[float, str]:
            parents = [x[p] for p in graph.predecessors(node) if p in x]
            return (sum(parents) / len(parents) if parents else float("inf"), node)

        members.sort(key=barycentre)
        rows = [members[i : i + max_per_row] for i in range(0, len(members), max_per_row)]
        for r, row in enumerate(rows):
            shift = 0.5 * (r % 2)  # stagger wrapped rows so labels do not stack
            for i, node in enumerate(row):
                x[node] = i - (len(row) - 1) / 2 + shift
                y[node] = row_y - 0.6 * r
        row_y -= 1 + 0.6 * (len(rows) - 1)
    return {node: (x[node], y[node]) for node in graph}


def draw_tree(graph: nx.DiGraph, wheel: EmotionWheel, out_base: str | Path, title: str = "") -> list[Path]:
    """Write `<out_base>.png` and `<out_base>.svg`: the tree coloured by the wheel's primary groups."""
    return draw_trees([(graph, title)], wheel, out_base)


def draw_trees(trees: list[tuple[nx.DiGraph, str]], wheel: EmotionWheel, out_base: str | Path) -> list[Path]:
    """Several (graph, title) trees side by side in one figure, `<out_base>.png` and `.svg`."""
    out_base = Path(out_base)
    layouts = [layered_positions(graph) for graph, _ in trees]
    sizes = []
    for positions in layouts:
        widest = max((sum(1 for p in positions.values() if p[1] == y) for y in {p[1] for p in positions.values()}),
                     default=1)
        sizes.append((widest, 1 - min((p[1] for p in positions.values()), default=0)))
    width = sum(max(8, 1.1 * widest) for widest, _ in sizes)
    height = max(max(4, 1.8 * depth) for _, depth in sizes)
    fig, axes = plt.subplots(1, len(trees), figsize=(width, height), squeeze=False,
                             gridspec_kw={"width_ratios": [max(8, 1.1 * w) for w, _ in sizes]})
    for ax, (graph, title), positions, (widest, _) in zip(axes[0], trees, layouts, sizes):
        for parent, child in graph.edges():
            (x0, y0), (x1, y1) = positions[parent], positions[child]
            ax.plot([x0, x1], [y0, y1], color="#999999", lw=0.8, zorder=1)
        for node, (px, py) in positions.items():
            color = wheel.color_of(node) if node in wheel.index else "#cccccc"
            ax.scatter([px], [py], s=260, color=color, edgecolor="black", lw=0.6, zorder=2)
            ax.annotate(node, (px, py), xytext=(0, -13), textcoords="offset points", ha="center", va="top",
                        fontsize=8, rotation=20 if widest > 10 else 0, zorder=3)
        handles = [Line2D([], [], marker="o", ls="", color=c, markeredgecolor="black", label=p)
                   for p, c in wheel.group_colors.items()]
        ax.legend(handles=handles, loc="upper right", fontsize=8, frameon=False, ncols=min(len(handles), 4))
        ax.set_title(title or f"Emotion hierarchy ({graph.number_of_edges()} edges)")
        ax.axis("off")
        ax.margins(x=0.05, y=0.2)
    return save_png_and_svg(fig, out_base)


def save_png_and_svg(fig: Any, out_base: Path) -> list[Path]:
    """Lay out, write `out_base`.png (150 dpi, for reports) and .svg (for papers), and close the figure."""
    fig.tight_layout()
    written = []
    for suffix in (".png", ".svg"):
        path = out_base.with_suffix(suffix)
        save_figure(fig, path, dpi=150 if suffix == ".png" else None)
        written.append(path)
    plt.close(fig)
    return written
