"""`emolab experiment=report sweep_dir=...`: one report over a finished sweep, whichever experiments it holds.

It finds every job under `sweep_dir` (a dir with `.hydra/config.yaml`, or with a `manifest.json`
that records a run's `config`), reads back what each job wrote, and writes into its own run dir
(`cfg.paths.output_dir`):

- `results.parquet`: every job's main tables, concatenated (schema below);
- `jobs.csv`: one row per job: experiment, status, overrides, wall time and tokens where manifests have them;
- the figures of each experiment the sweep holds, in a folder named after it (`negotiation/`,
  `persona_bias/`, `hierarchy/`);
- `report.html`: all of it in one self-contained file, images inlined as data URIs, no scripts and
  no external resources, so it opens offline and a Content-Security-Policy forbids anything else.

What an experiment's jobs wrote and how its section reads are that experiment's own: each module
registers an `ExperimentReport` (experiments/reports/common.py), found by the task a job ran. This module
keeps discovery, the merge and the page; it names no experiment.

Schema of results.parquet
-------------------------
One row per row of a job's main table. The first columns are the same for every experiment:

- `job` (str): the job's run dir relative to `sweep_dir` (`"0"`, `"1"`, ...; `"."` when `sweep_dir`
  is itself one run dir);
- `experiment` (str): the `experiment=` config the job ran (`negotiation`, `persona_bias`, ...);
- `table` (str): which of the experiment's JobTables the row comes from (`trials`, `predictions`,
  `metrics`, `distributions`, ...; each JobTable's `description` says what a row is);
- one column per override key given to any job, named exactly as typed on the command line
  (`customer/persona`, `seed`, `hierarchy.threshold`): int, float or bool when every job's value
  parses as one, else the text as typed; null for jobs that did not set it. `experiment` itself is
  the column above.

The job's own columns follow. One that is named like an override key or like the three columns
above is kept as `<name>_reported` (e.g. negotiation's own `seed` column when `seed` was swept).
A column whose values mix types across experiments is stored as text, so that the file always writes.
"""

from __future__ import annotations

import json
from datetime import datetime, timezone
from typing import Any

import numpy as np
import pandas as pd
from omegaconf import DictConfig, OmegaConf
from pydantic import BaseModel
from rich.console import Console
from rich.table import Table

from emotion_probe.errors import ConfigError
from emotion_probe.files import write_frame, write_text_atomic
from emotion_probe.terminal import printable_text
from experiments.app.common import output_dir, validated
from experiments.reports.common import (
    COMPLETED,
    LEADING_COLUMNS,
    Block,
    ExperimentReport,
    Job,
    Loaded,
    ReportSettings,
    Section,
    SectionInput,
    SweepManifest,
    find_jobs,
    override_column,
    override_keys,
    render_html,
    report_for,
    table_block,
    varying_keys,
)


# --- merging the tables ------------------------------------------------------------------------


def _main_tables(jobs: list[Job], settings: ReportSettings) -> dict[str, tuple[ExperimentReport, Loaded]]:
    """Per task with a registered report: the report, and its jobs' tables as read (sections in `order`)."""
    loaded: dict[str, tuple[ExperimentReport, Loaded]] = {}
    for job in jobs:
        if job.path is None or (experiment := report_for(job.task)) is None:
            continue
        entry = loaded.setdefault(job.task, (experiment, Loaded()))[1]
        for table in experiment.tables:
            if not (job.path / table.file).is_file():
                entry.notes.append(f"job {job.name}: no {table.file}")
                continue
            entry.tables.append((job, table.name, table.read(job.path / table.file)))
    for experiment, entry in loaded.values():
        if experiment.trim is not None:
            experiment.trim(entry, settings)
    return dict(sorted(loaded.items(), key=lambda item: (item[1][0].order, item[0])))


def merge_tables(jobs: list[Job], loaded: list[Loaded]) -> pd.DataFrame:
    """One frame: LEADING_COLUMNS, one column per override key, then each table's own columns."""
    keys = override_keys(jobs)
    reserved = set(LEADING_COLUMNS) | set(keys)
    per_key = {key: dict(zip([j.name for j in jobs], override_column(jobs, key))) for key in keys}
    frames = []
    for entry in loaded:
        for job, table_name, frame in entry.tables:
            frame = frame.drop(columns=[c for c in entry.left_out.get(table_name, []) if c in frame.columns])
            frame = frame.rename(columns={c: f"{c}_reported" for c in frame.columns if c in reserved})
            leading = pd.DataFrame({"job": job.name, "experiment": job.experiment, "table": table_name,
                                    **{key: [per_key[key][job.name]] for key in keys}}, index=[0])
            leading = leading.loc[leading.index.repeat(len(frame))].reset_index(drop=True)
            frames.append(pd.concat([leading, frame.reset_index(drop=True)], axis=1))
    if not frames:
        return pd.DataFrame(columns=[*LEADING_COLUMNS, *keys])
    return _arrow_safe(pd.concat(frames, ignore_index=True))


def _is_missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and np.isnan(value))


def _arrow_safe(frame: pd.DataFrame) -> pd.DataFrame:
    """Columns whose values mix types across experiments: numbers become numeric, anything else text."""
    for column in frame.columns:
        if frame[column].dtype != object:
            continue
        kinds = {type(v) for v in frame[column] if not _is_missing(v)}
        if len(kinds) <= 1:
            continue
        if kinds <= {int, float, np.int64, np.float64}:
            frame[column] = pd.to_numeric(frame[column])
        else:
            frame[column] = frame[column].map(lambda v: None if _is_missing(v) else str(v))
    return frame


# --- the overview ------------------------------------------------------------------------------


def overview(jobs: list[Job]) -> pd.DataFrame:
    """One row per job: experiment, status, the overrides that vary, and wall time and tokens where recorded."""
    keys = varying_keys(jobs)
    rows = []
    for job in jobs:
        row: dict[str, Any] = {"job": job.name, "experiment": job.experiment, "status": job.status}
        row.update({key: job.overrides[key].text if key in job.overrides else None for key in keys})
        if job.wall_time_s is not None:
            row["wall time (s)"] = job.wall_time_s
        if job.record is not None and job.record.error:
            row["error"] = job.record.error
        if job.manifest is not None:
            for role, model in (job.manifest.models or {}).items():
                for name, value in _flatten(model.usage or {}).items():
                    if "token" in name and isinstance(value, (int, float)):
                        row[f"{role} {name}"] = value
        rows.append(row)
    return pd.DataFrame(rows)


def _flatten(data: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    flat = {}
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(_flatten(value, f"{name}."))
        else:
            flat[name] = value
    return flat


# --- the manifests ------------------------------------------------------------------------------


def _pretty(record: BaseModel) -> str:
    # exclude_unset: show the file as written, without the defaults this report fills in for keys it lacks.
    return json.dumps(record.model_dump(exclude_unset=True), indent=2, default=str)


def _manifest_section(jobs: list[Job], sweep_manifest: SweepManifest | None) -> Section:
    section = Section("Manifests", "manifests")
    if sweep_manifest is not None:
        section.blocks.append(Block("details", title="sweep manifest.json",
                                    text=_pretty(sweep_manifest)))
    for job in jobs:
        if job.manifest is None:
            section.blocks.append(Block("text", text=f"job {job.name}: no manifest.json"))
            continue
        section.blocks.append(Block("details", title=f"job {job.name} ({job.experiment})",
                                    text=_pretty(job.manifest)))
    return section


# --- entry point -------------------------------------------------------------------------------


def run(cfg: DictConfig) -> pd.DataFrame:
    if OmegaConf.is_missing(cfg, "sweep_dir"):
        raise ConfigError("sweep_dir: required (the directory of a finished sweep, e.g. multirun/negotiation/<time>)")
    settings = validated(ReportSettings, OmegaConf.masked_copy(cfg, list(ReportSettings.model_fields)), "")
    sweep_dir = settings.sweep_dir
    if not sweep_dir.is_dir():
        raise ConfigError(f"sweep_dir: {sweep_dir} is not a directory")
    out_dir = output_dir(cfg)
    if sweep_dir.resolve().is_relative_to(out_dir.resolve()):
        raise ConfigError(f"sweep_dir: {sweep_dir} lies inside the report's own run dir {out_dir}; "
                          "write the report elsewhere (hydra.run.dir=<sweep_dir>/report)")
    jobs, sweep_manifest = find_jobs(sweep_dir, exclude=out_dir)
    if not jobs:
        raise ConfigError(f"sweep_dir: no job dirs (.hydra/config.yaml or manifest.json) under {sweep_dir}")
    console = Console()
    loaded = _main_tables(jobs, settings)
    results = merge_tables(jobs, [entry for _, entry in loaded.values()])
    write_frame(results, out_dir / "results.parquet", index=False)
    jobs_table = overview(jobs)
    write_frame(jobs_table, out_dir / "jobs.csv", index=False)

    sections = [Section("Jobs", "jobs", [table_block("", jobs_table)])]
    if sweep_manifest is not None:
        sections[0].blocks.insert(0, Block("text", text=f"sweep {sweep_manifest.status}, launched with: "
                                                         f"{' '.join(sweep_manifest.command_overrides)}"))
    for task, (experiment, entry) in loaded.items():  # in each experiment's declared order
        members = [job for job in jobs if job.task == task]
        sections.append(experiment.section(SectionInput(members, entry, settings, out_dir, console)))
    sections.append(_manifest_section(jobs, sweep_manifest))
    written = datetime.now(timezone.utc).isoformat(timespec="seconds")
    subtitle = (f"{len(jobs)} jobs under {sweep_dir} ({', '.join(sorted({j.experiment for j in jobs}))}); "
                f"written {written}")
    html_path = out_dir / "report.html"
    write_text_atomic(html_path, render_html(f"Sweep report: {sweep_dir.name}", subtitle, sections))

    # Experiment names are read from the jobs' files (.hydra/hydra.yaml, a sweep manifest): every cell is
    # escaped and shown as text.
    view = Table(title=f"Sweep report: {len(jobs)} jobs")
    for column in ["experiment", "jobs", "completed", "rows in results.parquet"]:
        view.add_column(column, justify="left" if column == "experiment" else "right")
    by_experiment: dict[str, list[Job]] = {}
    for job in jobs:
        by_experiment.setdefault(job.experiment, []).append(job)
    for experiment, members in sorted(by_experiment.items()):
        rows = int((results["experiment"] == experiment).sum()) if len(results) else 0
        cells = [experiment, len(members), sum(job.status == COMPLETED for job in members), f"{rows:,}"]
        view.add_row(*(printable_text(cell) for cell in cells))
    console.print(view)
    console.print(printable_text(f"wrote {out_dir}/{{results.parquet, jobs.csv}} and"))
    console.print(printable_text(html_path, style="bold"))
    return results
