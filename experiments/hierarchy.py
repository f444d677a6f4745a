"""`emolab experiment=hierarchy` (one model's emotion tree) and `experiment=hierarchy_report` (scaling)."""

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
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

from emotion_probe.errors import ConfigError, first_validation_problem
from emotion_probe.files import write_frame
from emotion_probe.analysis.hierarchy import (
    BOOTSTRAP_METRICS,
    HierarchyBootstrap,
    bootstrap_hierarchy,
    build_hierarchy,
    nested_tree,
    threshold_sweep,
)
from emotion_probe.analysis.plots import draw_tree, save_png_and_svg
from emotion_probe.probe import RANKED_COLUMN
from emotion_probe.terminal import printable_text
from experiments.callbacks import reads_config
from experiments.common import output_dir, probe_scenario_file, validated, write_json_atomic, write_manifest
from experiments.reporting import (
    Block,
    ExperimentReport,
    JobTable,
    Section,
    SectionInput,
    figures_block,
    jobs_of,
    register,
    table_block,
)

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
    # The paper probe's rank order decides the authors' insertion order (see emotion_probe.analysis.hierarchy).
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
        if value is None or (isinstance(value, float) and np.isnan(value)):
            return "-"
        return f"{value:.3f}" if isinstance(value, float) else f"{value:,}"

    # The model's name comes from its config file: escaped, and shown as text.
    table = Table(title=printable_text(f"Emotion hierarchy of {metrics['model']}"))
    table.add_column("metric")
    table.add_column("value", justify="right")
    table.add_column("95% CI / p", justify="right")
    # Every metric the analysis computed gets a row, so a new one in emotion_probe/analysis/hierarchy.py
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


def report(cfg: DictConfig) -> pd.DataFrame:
    sweep_dir = Path(cfg.sweep_dir)
    if not sweep_dir.is_dir():
        raise ConfigError(f"sweep_dir: {sweep_dir} is not a directory")
    out_dir = output_dir(cfg)
    rows = [{**load_metrics(job.path / "metrics.json").model_dump(), "job_dir": str(job.path)}
            for job in jobs_of(sweep_dir, "experiments.hierarchy.run", exclude=out_dir)
            if (job.path / "metrics.json").is_file()]
    if not rows:
        raise ConfigError(f"sweep_dir: no hierarchy job with a metrics.json under {sweep_dir}; run a hierarchy "
                          "sweep first")
    frame = write_scaling(rows, out_dir)
    table = Table(title=f"Hierarchy metrics across {len(frame)} runs")
    for column in ["model", "parameters", "edges", "nodes", "total_path_length", "average_depth", "wheel_alignment"]:
        table.add_column(column, justify="left" if column == "model" else "right")
    # Every cell was read from a job's metrics.json (the model's name from its config): escaped, shown as text.
    for _, row in frame.iterrows():
        cells = [row["model"], _number(row["parameters"], ",.0f"), row["edges"], row["nodes"], row["total_path_length"],
                 _number(row["average_depth"], ".2f"), _number(row["wheel_alignment"], ".2f")]
        table.add_row(*(printable_text(cell) for cell in cells))
    Console().print(table)
    Console().print(printable_text(f"wrote {out_dir}/scaling.{{parquet,csv,png,svg}}"))
    return frame


def load_metrics(path: Path) -> HierarchyMetrics:
    """Read back a hierarchy job's metrics.json; a bad file is one ConfigError naming it and the field."""
    try:
        return HierarchyMetrics.model_validate_json(path.read_text(encoding="utf-8"))
    except ValidationError as err:
        raise ConfigError(f"{path}: {first_validation_problem(err)}") from None


def _number(value: object, spec: str) -> str:
    """A table cell: "-" for a value a job could not have (no parameter count behind an API, no alignment
    without edges)."""
    if value is None or (isinstance(value, float) and not np.isfinite(value)):
        return "-"
    return format(value, spec)


def write_scaling(rows: list[dict], out_dir: Path) -> pd.DataFrame:
    """The scaling table (one row per job's metrics, by parameter count) and its figure: scaling.{parquet,csv,png,svg}."""
    frame = pd.DataFrame(rows).sort_values("parameters").reset_index(drop=True)
    write_frame(frame, out_dir / "scaling.parquet", index=False)
    write_frame(frame, out_dir / "scaling.csv", index=False)
    _plot_scaling(frame, out_dir / "scaling")
    return frame


def _plot_scaling(frame: pd.DataFrame, out_base: Path) -> None:
    panels = [("edges", "parent-child edges"), ("nodes", "nodes in the tree"),
              ("total_path_length", "total path length"), ("average_depth", "average depth"),
              ("wheel_alignment", "wheel alignment")]
    fig, axes = plt.subplots(1, len(panels), figsize=(4 * len(panels), 3.4))
    # A model behind an API has no parameter count: then the models stand side by side, in order.
    by_size = frame["parameters"].notna().all()
    x = frame["parameters"].astype(float) if by_size else pd.Series(np.arange(len(frame), dtype=float))
    for ax, (column, label) in zip(axes, panels):
        y = pd.to_numeric(frame[column], errors="coerce")  # None (e.g. no alignment without edges) -> NaN, a gap
        ax.plot(x, y, marker="o")
        if {f"{column}_ci_low", f"{column}_ci_high"} <= set(frame.columns):
            # Bootstrap intervals where the job computed them (hierarchy.bootstrap > 0); none elsewhere.
            value = frame[column].astype(float)
            low = (value - frame[f"{column}_ci_low"].astype(float)).fillna(0).clip(lower=0)
            high = (frame[f"{column}_ci_high"].astype(float) - value).fillna(0).clip(lower=0)
            ax.errorbar(x, value, yerr=np.vstack([low.to_numpy(), high.to_numpy()]), fmt="none",
                        ecolor="C0", capsize=2)
        for position, value, model in zip(x, y, frame["model"]):
            if np.isfinite(value):
                ax.annotate(model, (position, value), fontsize=6, xytext=(3, 3), textcoords="offset points")
        if column == "wheel_alignment":
            ax.plot(x, pd.to_numeric(frame["shuffled_alignment_mean"], errors="coerce"), ls="--", marker="x", color="grey",
                    label="shuffled labels")
            ax.legend(fontsize=7, frameon=False)
        if by_size:
            ax.set_xscale("log")
            ax.set_xlabel("parameters")
        else:
            ax.set_xticks(x.to_numpy(), list(frame["model"]), rotation=30, fontsize=6)
            ax.set_xlabel("model (parameter counts unknown)")
        ax.set_title(label, fontsize=10)
    save_png_and_svg(fig, out_base)


# --- the hierarchy section of the sweep report -------------------------------------------------


def hierarchy_section(part: SectionInput) -> Section:
    jobs, entry, out_dir = part.jobs, part.loaded, part.out_dir
    section = Section("Hierarchy", "hierarchy")
    rows = [{"job": job.name, **frame.iloc[0].to_dict()} for job, _, frame in entry.tables]
    if rows:
        section.blocks.append(table_block("Tree metrics per job", pd.DataFrame(rows)))
    known = [row for row in rows if pd.notna(row.get("parameters"))]
    if len(rows) > 1 and len(known) == len(rows):
        figure_dir = out_dir / "hierarchy"
        figure_dir.mkdir(exist_ok=True)
        write_scaling([{**row, "job_dir": row["job"]} for row in rows], figure_dir)
        section.blocks.append(figures_block("Scaling", [figure_dir / "scaling.png"], ["metrics against parameters"]))
    elif len(rows) > 1:
        section.blocks.append(Block("text", text="no scaling plot: some backends do not report a parameter count"))
    trees = [(job, job.path / "tree.png") for job in jobs if job.path is not None and (job.path / "tree.png").is_file()]
    if trees:
        section.blocks.append(figures_block("Emotion trees", [path for _, path in trees],
                                            [f"job {job.name}" for job, _ in trees]))
    section.blocks.extend(Block("text", text=note) for note in entry.notes)
    return section


def _read_metrics(path: Path) -> pd.DataFrame:
    return pd.DataFrame([load_metrics(path).model_dump()])


REPORT = register("experiments.hierarchy.run", ExperimentReport(
    order=30,
    tables=(JobTable("metrics", "metrics.json", _read_metrics,
                     "metrics.json, one row per job (edges, nodes, depths, wheel alignment)"),),
    section=hierarchy_section,
))
