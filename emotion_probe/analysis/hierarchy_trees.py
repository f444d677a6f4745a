"""Hierarchies as files and against each other: the authors' nested name/children trees, trees from
(parent, child) edges, and the edge agreement of two trees."""

from __future__ import annotations

import networkx as nx
import numpy as np

from emotion_probe.errors import ConfigError

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
