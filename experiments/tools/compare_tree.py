"""`emolab experiment=compare_tree run_dir=<hierarchy run> reference=<tree .json, edges.csv or run dir>`.

Compares the emotion tree of one hierarchy run with a reference: the authors' published trees
(phys-ai/Emotion-Hierarchy-LLMs, reference/hierarchies/*.json, nested name/children under a
synthetic root), the edges.csv their analysis writes (the file, or its output folder), or another
run. A tree must be acyclic. Prints edge precision, recall and F1 and the metrics side by side,
writes comparison.json, and draws both trees in one figure (comparison.png/.svg).
"""

from __future__ import annotations

import csv
from pathlib import Path

import networkx as nx
from omegaconf import DictConfig
from rich.console import Console
from rich.table import Table

from emotion_probe.errors import ConfigError
from emotion_probe.analysis.hierarchy_metrics import tree_metrics
from emotion_probe.analysis.hierarchy_trees import edge_agreement, tree_from_edges, tree_from_nested
from emotion_probe.analysis.plots import draw_trees
from emotion_probe.limits import InputLimits
from emotion_probe.probe import ProbeSettings
from emotion_probe.terminal import format_cell
from emotion_probe.wheel import EmotionWheel
from experiments.app.common import output_dir, validated, write_json_atomic
from experiments.runs.hierarchy import HierarchySettings

METRICS = ["edges", "nodes", "roots", "leaves", "isolated", "total_path_length", "average_depth",
           "average_root_to_leaf_depth", "max_depth", "wheel_alignment", "shuffled_alignment_mean",
           "shuffled_alignment_p_value"]


def load_tree(where: str | Path, what: str, limits: InputLimits | None = None) -> nx.DiGraph:
    """A tree from a nested JSON file, an edges.csv file (a hierarchy run's, or the authors'), or a folder
    holding either (a hierarchy run dir, or the authors' output folder: its tree.json, else its edges.csv).

    Read under `limits` (None: conf/limits/default.yaml's); every problem is a ConfigError naming `what`.
    """
    limits = limits or InputLimits.shipped()
    path = Path(where).expanduser()
    if path.is_dir():
        for name in ("tree.json", "edges.csv"):
            if (path / name).is_file():
                return load_tree(path / name, what, limits)
        raise ConfigError(f"{what}: {path} holds neither tree.json nor edges.csv; is it a hierarchy run?")
    if not path.is_file():
        raise ConfigError(f"{what}: no such file or directory: {path}")
    if path.suffix.lower() == ".csv":
        return _edges_csv(path, what, limits)
    try:
        data = limits.loads(limits.read_text(path))
    except ConfigError as err:  # a line too long, or bytes that are not UTF-8
        raise ConfigError(f"{what}: {err}") from None
    except ValueError as err:  # a syntax error (json.JSONDecodeError is one), or nesting too deep
        raise ConfigError(f"{what}: {path} is not valid JSON ({err})") from None
    return tree_from_nested(data, f"{what}: {path}")


def _edges_csv(path: Path, what: str, limits: InputLimits) -> nx.DiGraph:
    """The (parent, child) rows of an edges.csv, found by the header's names; other columns are ignored."""
    where = f"{what}: {path}"
    reader = csv.reader((line for _, line, _ in limits.read_lines(path)), strict=True)
    edges = []
    try:
        header = [name.strip() for name in next(reader, [])]
        if "parent" not in header or "child" not in header:
            raise ConfigError(f"{where}: expected a header with parent and child columns, found {_shown(header)}")
        parent, child = header.index("parent"), header.index("child")
        for row in reader:
            if not any(cell.strip() for cell in row):
                continue  # a blank line
            if len(row) <= max(parent, child) or not row[parent].strip() or not row[child].strip():
                raise ConfigError(f"{where}: line {reader.line_num}: expected a parent and a child, found {_shown(row)}")
            edges.append((row[parent], row[child]))
    except csv.Error as err:
        raise ConfigError(f"{where}: line {reader.line_num}: not valid CSV ({err})") from None
    except ConfigError as err:
        if str(err).startswith(where):
            raise
        # limits.read_lines names the file and line (not UTF-8, too long), not which input it is.
        raise ConfigError(f"{what}: {err}") from None
    return tree_from_edges(edges, where)


def _shown(cells: list[str]) -> list[str]:
    """The first cells of a CSV row, each cut short, for an error message that stays one readable line."""
    return [cell if len(cell) <= 40 else cell[:40] + "..." for cell in cells[:4]]


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
    limits = validated(InputLimits, cfg.limits, "limits")
    ours = load_tree(cfg.run_dir, "run_dir", limits)
    reference = load_tree(cfg.reference, "reference", limits)
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
        return format_cell(value, ".3f" if isinstance(value, float) else "")

    console.print(f"edges: {result['common_edges']} shared of {result['edges']} (ours) and "
                  f"{result['reference_edges']} (reference): precision {show(result['precision'])}, "
                  f"recall {show(result['recall'])}, F1 {show(result['f1'])}")
    table = Table(title="Hierarchy metrics")
    for column in ("metric", "ours", "reference"):
        table.add_column(column, justify="left" if column == "metric" else "right")
    for key in METRICS:
        table.add_row(key, show(result["metrics"]["ours"][key]), show(result["metrics"]["reference"][key]))
    console.print(table)
