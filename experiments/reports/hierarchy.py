"""`emolab experiment=hierarchy_report sweep_dir=...` (how the tree grows with model size), and the
hierarchy section of the sweep report."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from omegaconf import DictConfig
from pydantic import ValidationError
from rich.console import Console
from rich.table import Table

from emotion_probe.analysis.plots import save_png_and_svg
from emotion_probe.errors import ConfigError, first_validation_problem
from emotion_probe.files import write_frame
from emotion_probe.terminal import format_cell, printable_text
from experiments.app.common import output_dir
from experiments.reports.common import (
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
from experiments.runs.hierarchy import HierarchyMetrics


def report(cfg: DictConfig) -> pd.DataFrame:
    sweep_dir = Path(cfg.sweep_dir)
    if not sweep_dir.is_dir():
        raise ConfigError(f"sweep_dir: {sweep_dir} is not a directory")
    out_dir = output_dir(cfg)
    rows = [{**load_metrics(job.path / "metrics.json").model_dump(), "job_dir": str(job.path)}
            for job in jobs_of(sweep_dir, "hierarchy", exclude=out_dir)
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
        cells = [row["model"], format_cell(row["parameters"], ",.0f"), row["edges"], row["nodes"], row["total_path_length"],
                 format_cell(row["average_depth"], ".2f"), format_cell(row["wheel_alignment"], ".2f")]
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


REPORT = register("hierarchy", ExperimentReport(
    order=30,
    tables=(JobTable("metrics", "metrics.json", _read_metrics,
                     "metrics.json, one row per job (edges, nodes, depths, wheel alignment)"),),
    section=hierarchy_section,
))
