"""`emolab experiment=hierarchy`: one model's emotion tree (the scaling report is experiments.reports.hierarchy)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Annotated, Literal

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from omegaconf import DictConfig
from pydantic import BaseModel, ConfigDict, Field
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

from emotion_probe.files import write_frame
from emotion_probe.analysis.hierarchy import build_hierarchy
from emotion_probe.analysis.hierarchy_robustness import (
    BOOTSTRAP_METRICS,
    HierarchyBootstrap,
    bootstrap_hierarchy,
    threshold_sweep,
)
from emotion_probe.analysis.hierarchy_trees import nested_tree
from emotion_probe.analysis.plots import draw_tree, save_png_and_svg
from emotion_probe.probe import RANKED_COLUMN
from emotion_probe.terminal import format_cell, printable_text
from experiments.app.common import probe_scenario_file, validated, write_json_atomic
from experiments.app.fingerprints import reads_config
from experiments.app.manifest import write_manifest

log = logging.getLogger(__name__)


class HierarchySettings(BaseModel):
    """conf/hierarchy/*.yaml (the `hierarchy:` group); no defaults here, they live in the YAML."""

    model_config = ConfigDict(extra="forbid")

    threshold: float = Field(gt=0.0, lt=1.0, description="b is a parent of a when P(b | a) > threshold "
                                                         "and P(a | b) < P(b | a)")
    method: Literal["exact", "paper"] = Field(description="exact: co-occurrence of the full distributions | "
                                                          "paper: the authors' pipeline, graph cleanup included")
    baseline_samples: int = Field(ge=10, description="shuffled-label samples for each chance level of wheel alignment")
    frequency_bins: int = Field(ge=1, description="equal-count bins of word mass for the frequency-matched chance level")
    bootstrap: int = Field(ge=0, description="bootstrap resamples of the scenarios for intervals and edge stability; 0 = off")
    sweep_thresholds: list[Annotated[float, Field(gt=0.0, lt=1.0)]] = Field(
        description="thresholds at which to rebuild the tree for threshold_sweep.csv; [] = no sweep")


class HierarchyMetrics(BaseModel):
    """metrics.json as the report reads it back."""

    model_config = ConfigDict(extra="allow")

    model: str
    parameters: int | None
    edges: int
    nodes: int
    total_path_length: int
    average_depth: float | None
    wheel_alignment: float | None
    shuffled_alignment_mean: float | None


@reads_config("model", "probe", "hierarchy", "scenarios", "limit", "keep_empty", "limits", "cache", "retry", "seed",
              "paths", "progress")
def run(cfg: DictConfig) -> dict:
    settings = validated(HierarchySettings, cfg.hierarchy, "hierarchy")
    probe, table, out_dir = probe_scenario_file(cfg)
    model, wheel = probe.model, probe.wheel
    P = table[wheel.words].to_numpy(dtype=np.float64)
    seen = ~np.isnan(P).any(axis=1)
    if not seen.all():
        log.warning("dropping %d scenarios where no wheel word was seen", int((~seen).sum()))
    # The paper probe's rank order decides the authors' insertion order (see emotion_probe.analysis.hierarchy_paper).
    ranked = None
    if settings.method == "paper" and RANKED_COLUMN in table.columns:
        ranked = [[str(word) for word in words] for words, keep in zip(table[RANKED_COLUMN], seen) if keep]
    elif settings.method == "paper":
        log.warning("hierarchy.method=paper on probe.method=%s: every word with P > 0 counts as ranked, in "
                    "descending P; use probe.method=paper for the authors' top-k", probe.settings.method)
    P = P[seen]
    result = build_hierarchy(P, wheel, threshold=settings.threshold, method=settings.method, ranked=ranked,
                             baseline_samples=settings.baseline_samples, seed=cfg.seed,
                             frequency_bins=settings.frequency_bins)
    # No scenario left (every row unseen) has nothing to resample: the tree is empty, and so are its intervals.
    resample = settings.bootstrap and len(P)
    bootstrap = _bootstrap(P, wheel, settings, ranked, cfg.seed, cfg.progress) if resample else None
    write_frame(result.matching_frame(), out_dir / "matching.parquet")
    write_frame(result.edges_frame(bootstrap), out_dir / "edges.csv", index=False)
    if result.candidates is not None:  # the paper method's pairs before its graph cleanup
        write_frame(pd.DataFrame(result.candidates, columns=["parent", "child", "p_parent_given_child"]),
                    out_dir / "candidate_edges.csv", index=False)
    metrics = {
        "model": model.name,
        "parameters": model.num_parameters(),
        "scenarios": int(seen.sum()),
        "wheel": wheel.name,
        "threshold": settings.threshold,
        "method": settings.method,
        "probe_method": probe.last_method,
        **result.metrics,
        "bootstrap_resamples": settings.bootstrap if bootstrap is not None else 0,
    }
    if bootstrap is not None:
        metrics.update(bootstrap.intervals())
        write_frame(bootstrap.metrics, out_dir / "bootstrap_metrics.csv", index_label="resample")
        write_frame(bootstrap.edges_frame(set(result.edges)), out_dir / "bootstrap_edges.csv", index=False)
    if settings.sweep_thresholds:
        # The run's own threshold is always a point of the sweep, so the figure marks where the tree sits.
        sweep = threshold_sweep(P, wheel, [*settings.sweep_thresholds, settings.threshold], settings.method, ranked)
        write_frame(sweep, out_dir / "threshold_sweep.csv", index=False)
        _plot_sweep(sweep, settings.threshold, out_dir / "threshold_sweep", f"{model.name}, {settings.method} method")
    write_json_atomic(out_dir / "metrics.json", metrics)  # strict JSON: an undefined metric is null
    # The tree in the authors' nested format (isolated nodes included), for experiment=compare_tree.
    write_json_atomic(out_dir / "tree.json", nested_tree(result.graph))
    draw_tree(result.graph, wheel, out_dir / "tree",
              title=f"{model.name}: {result.metrics['edges']} edges, threshold {settings.threshold}")
    write_manifest(out_dir, cfg, models={"model": model}, probe=probe.describe(),
                   dropped_rows=table.attrs.get("dropped_rows"), inputs=table.attrs.get("inputs"))
    _print_metrics(metrics, list(result.metrics), out_dir)
    return metrics


def _bootstrap(P: np.ndarray, wheel, settings: HierarchySettings, ranked, seed: int,
               show_progress: bool) -> HierarchyBootstrap:
    """bootstrap_hierarchy with a progress bar: the paper method on 5,000 rows takes a while per resample."""
    with Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  TimeRemainingColumn(), disable=not show_progress) as progress:
        task = progress.add_task(f"bootstrap over {len(P)} scenarios", total=settings.bootstrap)
        return bootstrap_hierarchy(P, wheel, settings.threshold, settings.method, ranked, settings.bootstrap, seed,
                                   on_resample=lambda: progress.advance(task))


def _plot_sweep(sweep: pd.DataFrame, threshold: float, out_base: Path, title: str) -> None:
    """Edges and depth against the threshold, the run's threshold dashed: threshold_sweep.{png,svg}."""
    fig, (left, right) = plt.subplots(1, 2, figsize=(8.5, 3.4))
    left.plot(sweep["threshold"], sweep["edges"], marker="o")
    left.set_ylabel("parent-child edges")
    right.plot(sweep["threshold"], sweep["average_depth"], marker="o", label="nearest root to leaf")
    right.plot(sweep["threshold"], sweep["average_root_to_leaf_depth"], marker="x", ls="--",
               label="every root-to-leaf path (authors')")
    right.set_ylabel("average depth")
    right.legend(fontsize=7, frameon=False)
    for ax in (left, right):
        ax.axvline(threshold, color="grey", ls=":", lw=1)
        ax.set_xlabel("threshold")
    fig.suptitle(title, fontsize=10)
    save_png_and_svg(fig, out_base)


#: Null-model statistics shown beside their mean in the console table, not on rows of their own (their
#: standard deviations are in metrics.json only).
_BESIDE = {"shuffled_alignment_mean": "shuffled_alignment_p_value",
           "frequency_matched_alignment_mean": "frequency_matched_p_value"}
_HIDDEN = {*_BESIDE.values(), "shuffled_alignment_std", "frequency_matched_alignment_std"}


def _print_metrics(metrics: dict, tree_keys: list[str], out_dir: Path) -> None:
    """The console table: `tree_keys` are the analysis' metrics (Hierarchy.metrics), in its order."""
    def show(value) -> str:
        return format_cell(value, ".3f" if isinstance(value, float) else ",")

    # The model's name comes from its config file: escaped, and shown as text.
    table = Table(title=printable_text(f"Emotion hierarchy of {metrics['model']}"))
    table.add_column("metric")
    table.add_column("value", justify="right")
    table.add_column("95% CI / p", justify="right")
    # Every metric the analysis computed gets a row, so a new one in emotion_probe/analysis/hierarchy_metrics.py
    # shows here untouched; spreads and p-values sit beside the value they belong to.
    for key in ["parameters", "scenarios", *(k for k in tree_keys if k not in _HIDDEN)]:
        beside = ""
        if key in BOOTSTRAP_METRICS and f"{key}_ci_low" in metrics:
            beside = f"[{show(metrics[f'{key}_ci_low'])}, {show(metrics[f'{key}_ci_high'])}]"
        elif key in _BESIDE:
            beside = f"p = {show(metrics[_BESIDE[key]])}"
        table.add_row(key, show(metrics[key]), beside)
    console = Console()
    console.print(table)
    written = ["distributions.parquet", "matching.parquet", "edges.csv", "metrics.json", "tree.json", "tree.png",
               "tree.svg"]
    if metrics.get("bootstrap_resamples"):
        written += ["bootstrap_metrics.csv", "bootstrap_edges.csv"]
    if (out_dir / "threshold_sweep.csv").is_file():
        written += ["threshold_sweep.csv", "threshold_sweep.png", "threshold_sweep.svg"]
    console.print(printable_text(f"wrote {out_dir}/{{{', '.join(written)}}}"))
