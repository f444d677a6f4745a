"""`emolab experiment=compare_tree run_dir=<hierarchy run> reference=<tree .json or run dir>`.

Compares the emotion tree of one hierarchy run with a reference: the authors' published trees
(phys-ai/Emotion-Hierarchy-LLMs, reference/hierarchies/*.json, nested name/children under a
synthetic root) or another run. Prints edge precision, recall and F1 and the metrics side by side,
writes comparison.json, and draws both trees in one figure (comparison.png/.svg).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import networkx as nx
import pandas as pd
from omegaconf import DictConfig
from rich.console import Console
from rich.table import Table

from emotion_probe.errors import ConfigError
from emotion_probe.analysis.hierarchy import edge_agreement, tree_from_nested, tree_metrics
from emotion_probe.analysis.plots import draw_trees
from emotion_probe.probe import ProbeSettings
from emotion_probe.wheel import EmotionWheel
from experiments.common import output_dir, validated, write_json_atomic
from experiments.hierarchy import HierarchySettings

METRICS = ["edges", "nodes", "roots", "leaves", "isolated", "total_path_length", "average_depth",
           "average_root_to_leaf_depth", "max_depth", "wheel_alignment", "shuffled_alignment_mean",
           "shuffled_alignment_p_value"]


def load_tree(where: str | Path, what: str) -> nx.DiGraph:
    """A tree from a nested JSON file, or from a hierarchy run dir (its tree.json, else its edges.csv)."""
    path = Path(where).expanduser()
    if path.is_dir():
        if (path / "tree.json").is_file():
            return load_tree(path / "tree.json", what)
        if (path / "edges.csv").is_file():
            edges = pd.read_csv(path / "edges.csv")
            if not {"parent", "child"} <= set(edges.columns):
                raise ConfigError(f"{what}: {path / 'edges.csv'} has no parent and child columns")
            graph = nx.DiGraph()
            graph.add_edges_from(zip(edges["parent"].astype(str).str.strip(), edges["child"].astype(str).str.strip()))
            return graph
        raise ConfigError(f"{what}: {path} holds neither tree.json nor edges.csv; is it a hierarchy run?")
    if not path.is_file():
        raise ConfigError(f"{what}: no such file or directory: {path}")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ConfigError(f"{what}: {path} is not valid JSON ({err})") from None
    return tree_from_nested(data, f"{what}: {path}")


def _metrics(graph: nx.DiGraph, wheel: EmotionWheel, what: str, samples: int, seed: int) -> dict:
    unknown = sorted(n for n in graph if n not in wheel.index)
    if unknown:
        raise ConfigError(f"{what}: {len(unknown)} names are not words of the {wheel.name!r} wheel "
                          f"(first: {unknown[0]!r}); set probe.wheel to the wheel the tree was built on")
    return tree_metrics(graph, wheel, samples=samples, seed=seed)


def run(cfg: DictConfig) -> dict:
    if cfg.run_dir is None or cfg.reference is None:
        raise ConfigError("compare_tree needs run_dir=<hierarchy run> and reference=<tree .json or run dir>")
    # Validated like every run's settings (this run reads only the wheel and the baseline sample count).
    wheel = EmotionWheel.load(validated(ProbeSettings, cfg.probe, "probe").wheel)
    samples = validated(HierarchySettings, cfg.hierarchy, "hierarchy").baseline_samples
    ours = load_tree(cfg.run_dir, "run_dir")
    reference = load_tree(cfg.reference, "reference")
    agreement = edge_agreement(ours, reference)
    ours_metrics = _metrics(ours, wheel, "run_dir", samples, cfg.seed)
    reference_metrics = _metrics(reference, wheel, "reference", samples, cfg.seed)
    out_dir = output_dir(cfg)
    result = {"run_dir": str(cfg.run_dir), "reference": str(cfg.reference), **agreement,
              "only_ours": sorted(set(ours.edges()) - set(reference.edges())),
              "only_reference": sorted(set(reference.edges()) - set(ours.edges())),
              "metrics": {"ours": ours_metrics, "reference": reference_metrics}}
    write_json_atomic(out_dir / "comparison.json", result)
    draw_trees([(ours, f"{Path(cfg.run_dir).name}: {ours.number_of_edges()} edges"),
                (reference, f"{Path(cfg.reference).stem}: {reference.number_of_edges()} edges")],
               wheel, out_dir / "comparison")
    _print(result, Console())
    Console().print(f"wrote {out_dir}/comparison.{{json,png,svg}}")
    return result


def _print(result: dict, console: Console) -> None:
    def show(value) -> str:
        if value is None or (isinstance(value, float) and math.isnan(value)):
            return "-"
        return f"{value:.3f}" if isinstance(value, float) else str(value)

    console.print(f"edges: {result['common_edges']} shared of {result['edges']} (ours) and "
                  f"{result['reference_edges']} (reference): precision {show(result['precision'])}, "
                  f"recall {show(result['recall'])}, F1 {show(result['f1'])}")
    table = Table(title="Hierarchy metrics")
    for column in ("metric", "ours", "reference"):
        table.add_column(column, justify="left" if column == "metric" else "right")
    for key in METRICS:
        table.add_row(key, show(result["metrics"]["ours"][key]), show(result["metrics"]["reference"][key]))
    console.print(table)
