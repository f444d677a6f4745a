"""`emolab experiment=report sweep_dir=...`: one report over a finished sweep, whichever experiments it holds.

It finds every job under `sweep_dir` (a dir with `.hydra/config.yaml`, or with a `manifest.json`
that records a run's `config`), reads back what each job wrote, and writes into its own run dir
(`cfg.paths.output_dir`):

- `results.parquet`: every job's main table, concatenated (schema below);
- `jobs.csv`: one row per job: experiment, status, overrides, wall time and tokens where manifests have them;
- the figures of each experiment the sweep holds, in a folder named after it (`negotiation/`,
  `persona_bias/`, `hierarchy/`);
- `report.html`: all of it in one self-contained file, images inlined as data URIs, no scripts and
  no external resources, so it opens offline and a Content-Security-Policy forbids anything else.

Schema of results.parquet
-------------------------
One row per row of a job's main table. The first columns are the same for every experiment:

- `job` (str): the job's run dir relative to `sweep_dir` (`"0"`, `"1"`, ...; `"."` when `sweep_dir`
  is itself one run dir);
- `experiment` (str): the `experiment=` config the job ran (`negotiation`, `persona_bias`, ...);
- `table` (str): the file the row comes from: `trials`, `predictions`, `metrics` or `distributions`;
- one column per override key given to any job, named exactly as typed on the command line
  (`customer/persona`, `seed`, `hierarchy.threshold`): int, float or bool when every job's value
  parses as one, else the text as typed; null for jobs that did not set it. `experiment` itself is
  the column above.

The job's own columns follow. One that is named like an override key or like the three columns
above is kept as `<name>_reported` (e.g. negotiation's own `seed` column when `seed` was swept).

- negotiation, `table=trials`: `trials.parquet`, one row per trial (status, deal, final_price,
  accept_price, closing_paid, price, over_budget, mean_abs_error_pp, js_divergence, scored_predictions,
  skipped_pairs, turns, parse_failures, truncated, ...);
- persona_bias, `table=predictions`: `predictions.parquet`, one row per scenario (id, text, emotion,
  primary, predicted, predicted_calibrated), with one probability column per wheel word only while
  the sweep's persona_bias rows times words stay within `max_probability_cells`; and
  `table=metrics`: `metrics.json`, one row per job (accuracy, primary_accuracy, calibrated_...);
- hierarchy, `table=metrics`: `metrics.json`, one row per job (edges, nodes, depths, wheel alignment);
- probe, `table=distributions`: `distributions.parquet`, one row per scenario with every word's probability.

A column whose values mix types across experiments is stored as text, so that the file always writes.
"""

from __future__ import annotations

import base64
import json
import re
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Literal, TypeVar

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import yaml
from jinja2 import Environment
from markupsafe import Markup
from omegaconf import DictConfig, OmegaConf
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError
from rich.console import Console
from rich.table import Table

from emotion_probe.errors import ConfigError, first_validation_problem
from emotion_probe.wheel import EmotionWheel
from experiments.callbacks import JOB_FILE, JobRecord, read_job_record
from experiments.common import output_dir, validated
from experiments.hierarchy import load_metrics as load_hierarchy_metrics
from experiments.hierarchy import write_scaling
from emotion_probe.analysis.negotiation import correlation_caption, draw_fit, error_price_correlation
from experiments.persona_report import write_persona_report

#: The experiments this report reads, by the task their config runs (an experiment file may be
#: copied under another name; its task still says what it wrote).
TASK_EXPERIMENTS = {
    "experiments.negotiation.run": "negotiation",
    "experiments.persona_bias.run": "persona_bias",
    "experiments.hierarchy.run": "hierarchy",
    "experiments.probe.run": "probe",
}
#: Columns every row of results.parquet starts with.
LEADING_COLUMNS = ("job", "experiment", "table")
#: Status of a job without job.json (run before the sweep callback existed): its manifest.json is
#: written last, so a job that has one completed.
COMPLETED = "COMPLETED"
UNKNOWN = "UNKNOWN (no job.json, no manifest.json)"

M = TypeVar("M", bound=BaseModel)


class ReportSettings(BaseModel):
    """conf/experiment/report.yaml."""

    model_config = ConfigDict(extra="forbid")

    sweep_dir: Path
    replicate_keys: list[str]
    max_probability_cells: int = Field(ge=0)
    max_trial_figures: int = Field(ge=0)
    comparison_rows: int = Field(ge=1)
    pairs: list[tuple[str, str]]
    pie_emotions: list[str]


# --- the files a job leaves behind, as this report reads them back -----------------------------


class ModelRecord(BaseModel):
    """One role's model in a job manifest; everything the backend described is kept."""

    model_config = ConfigDict(extra="allow")

    usage: dict[str, Any] | None = None  # absent from manifests written before calls were counted


class JobManifest(BaseModel):
    """A job's manifest.json (experiments.common.write_manifest). Fields beyond these are shown as they are."""

    model_config = ConfigDict(extra="allow")

    written_at: str
    config: dict[str, Any]
    wall_time_s: float | None = None  # absent from manifests written before wall time was recorded
    models: dict[str, ModelRecord] | None = None  # likewise


class SweepJobEntry(BaseModel):
    """One job in the sweep manifest: a copy of its job.json, with its dir relative to the sweep."""

    model_config = ConfigDict(extra="allow")

    dir: str
    status: str
    overrides: list[str]


class SweepManifest(BaseModel):
    """`<sweep_dir>/manifest.json`, written by experiments.callbacks.SweepCallback when the sweep starts and ends."""

    model_config = ConfigDict(extra="allow")

    status: str
    command_overrides: list[str]
    jobs: list[SweepJobEntry]


class HydraRuntime(BaseModel):
    model_config = ConfigDict(extra="allow")

    choices: dict[str, Any]


class HydraSection(BaseModel):
    model_config = ConfigDict(extra="allow")

    runtime: HydraRuntime


class HydraRecord(BaseModel):
    """`.hydra/hydra.yaml`: only the config-group choices are read (they name the experiment)."""

    model_config = ConfigDict(extra="allow")

    hydra: HydraSection


class NegotiationSummary(BaseModel):
    """A negotiation job's summary.json (experiments.negotiation._summary).

    The fields after `parse_failures` came with the paper's measurement (negotiation_metrics); files
    written before it lack them and read as None.
    """

    model_config = ConfigDict(extra="allow")

    scenario: str
    trials: int = Field(ge=0)
    deals: int = Field(ge=0)
    mean_price: float | None
    mean_abs_error_pp: float | None  # None: no trial had a scored prediction
    parse_failures: int = Field(ge=0)
    walk_aways: int | None = Field(default=None, ge=0)
    max_turns_reached: int | None = Field(default=None, ge=0)
    pairing: Literal["response", "previous"] | None = None
    no_sale_price: Literal[0, "exclude"] | None = None
    skip_first_prediction: bool | None = None
    sd_price: float | None = None
    mean_accept_price: float | None = None
    mean_closing_paid: float | None = None
    over_budget: int | None = Field(default=None, ge=0)
    sd_abs_error_pp: float | None = None
    mean_js_divergence: float | None = None
    scored_predictions: int | None = Field(default=None, ge=0)
    skipped_pairs: int | None = Field(default=None, ge=0)
    trials_without_error: int | None = Field(default=None, ge=0)
    truncated: int | None = Field(default=None, ge=0)
    report_sum_mean: float | None = None
    prediction_sum_mean: float | None = None
    correlation_n: int | None = Field(default=None, ge=0)
    pearson_r: float | None = None
    pearson_p: float | None = Field(default=None, ge=0, le=1)
    pearson_ci_low: float | None = None
    pearson_ci_high: float | None = None
    pearson_p_perm: float | None = Field(default=None, ge=0, le=1)
    spearman_rho: float | None = None
    spearman_p: float | None = Field(default=None, ge=0, le=1)
    spearman_ci_low: float | None = None
    spearman_ci_high: float | None = None
    spearman_p_perm: float | None = Field(default=None, ge=0, le=1)


class PersonaMetrics(BaseModel):
    """A persona_bias job's metrics.json."""

    model_config = ConfigDict(extra="allow")

    persona: str
    phrase: str | None
    model: str
    scenarios: int = Field(ge=0)
    accuracy: float | None
    primary_accuracy: float | None
    calibrated_accuracy: float | None
    calibrated_primary_accuracy: float | None


_OVERRIDE_LIST = TypeAdapter(list[str])


def _invalid(path: Path, err: ValidationError) -> ConfigError:
    return ConfigError(f"{path}: {first_validation_problem(err)}")


def _read_json(path: Path, model: type[M]) -> M:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ConfigError(f"{path}: not valid JSON ({err})") from None
    try:
        return model.model_validate(data)
    except ValidationError as err:
        raise _invalid(path, err) from None


def _read_yaml(path: Path) -> Any:
    try:
        return yaml.safe_load(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, yaml.YAMLError) as err:
        raise ConfigError(f"{path}: not valid YAML ({err})") from None


def _read_parquet(path: Path) -> pd.DataFrame:
    try:
        return pd.read_parquet(path)
    except Exception as err:  # pyarrow raises several types for truncated or foreign files
        raise ConfigError(f"{path}: not a readable Parquet file ({type(err).__name__}: {err})") from None


# --- finding the jobs --------------------------------------------------------------------------


@dataclass
class Override:
    """One `key=value` a job was launched with: the value as Hydra parsed it, and as typed."""

    value: Any
    text: str


@dataclass
class Job:
    name: str  # run dir relative to sweep_dir, "." for sweep_dir itself
    path: Path | None  # None: listed by the sweep manifest but absent from disk
    experiment: str
    task: str | None
    config: dict[str, Any]  # manifest.json's resolved config, else .hydra/config.yaml as saved
    overrides: dict[str, Override]
    manifest: JobManifest | None
    record: JobRecord | None  # job.json, from the sweep callback
    status: str  # COMPLETED | FAILED (job.json) or as the sweep manifest says; see COMPLETED and UNKNOWN

    @property
    def wall_time_s(self) -> float | None:
        # job.json times the whole job; the run manifest only the experiment's own function.
        if self.record is not None and self.record.wall_time_s is not None:
            return self.record.wall_time_s
        return self.manifest.wall_time_s if self.manifest is not None else None


def _natural_key(name: str) -> list[tuple[int, Any]]:
    # Job dirs are numbered: "10" sorts after "9".
    return [(0, int(part)) if part.isdigit() else (1, part) for part in re.split(r"[/\\]", name)]


def _parse_overrides(lines: list[str], where: Path | str) -> dict[str, Override]:
    from hydra.core.override_parser.overrides_parser import OverridesParser

    try:
        parsed = OverridesParser.create().parse_overrides(lines)
    except Exception as err:  # hydra's OverrideParseException, with the offending override in its message
        raise ConfigError(f"{where}: {err}") from None
    overrides = {}
    for override in parsed:
        if override.is_delete():
            continue  # `~key` removes a key; there is no value to group by
        key = override.key_or_group if override.package is None else f"{override.key_or_group}@{override.package}"
        value = override.value()
        text = override.get_value_element_as_str()
        overrides[key] = Override(value if isinstance(value, (str, int, float, bool)) or value is None else text, text)
    return overrides


def _is_run_manifest(path: Path) -> bool:
    """A run's manifest.json records its config; the probe's parts manifests do not."""
    try:
        return isinstance(data := json.loads(path.read_text(encoding="utf-8")), dict) and "config" in data
    except (UnicodeDecodeError, json.JSONDecodeError):
        return True  # unreadable: let the validation report it with its path


def _job_dirs(sweep_dir: Path, exclude: Path) -> list[Path]:
    found = {p.parent.parent for p in sweep_dir.rglob(".hydra/config.yaml")}
    found |= {p.parent for p in sweep_dir.rglob("manifest.json") if _is_run_manifest(p)}
    excluded = exclude.resolve()
    return [d for d in found if not d.resolve().is_relative_to(excluded)]


def _load_job(sweep_dir: Path, path: Path) -> Job | None:
    hydra_dir = path / ".hydra"
    manifest = _read_json(path / "manifest.json", JobManifest) if (path / "manifest.json").is_file() else None
    saved = _read_yaml(hydra_dir / "config.yaml") if (hydra_dir / "config.yaml").is_file() else None
    if saved is not None and not isinstance(saved, dict):
        raise ConfigError(f"{hydra_dir / 'config.yaml'}: not a mapping")
    config = manifest.config if manifest is not None else saved
    if config is None:
        raise ConfigError(f"{hydra_dir / 'config.yaml'}: empty")
    if "sweep_dir" in config:
        return None  # a report over other jobs (this one, persona_report, hierarchy_report), not a sweep job
    record = read_job_record(path)
    if (hydra_dir / "overrides.yaml").is_file():
        try:
            lines = _OVERRIDE_LIST.validate_python(_read_yaml(hydra_dir / "overrides.yaml") or [])
        except ValidationError as err:
            raise _invalid(hydra_dir / "overrides.yaml", err) from None
        overrides = _parse_overrides(lines, hydra_dir / "overrides.yaml")
    elif record is not None:
        overrides = _parse_overrides(record.overrides, path / JOB_FILE)
    else:
        overrides = {}
    task = config.get("task")
    experiment: str | None = None
    if (hydra_dir / "hydra.yaml").is_file():
        try:
            hydra_record = HydraRecord.model_validate(_read_yaml(hydra_dir / "hydra.yaml"))
        except ValidationError as err:
            raise _invalid(hydra_dir / "hydra.yaml", err) from None
        experiment = hydra_record.hydra.runtime.choices.get("experiment")
    experiment = experiment or TASK_EXPERIMENTS.get(task) or (str(task) if task else "unknown")
    overrides.pop("experiment", None)  # the `experiment` column already says it
    name = path.relative_to(sweep_dir).as_posix()
    status = record.status if record is not None else COMPLETED if manifest is not None else UNKNOWN
    return Job(name=name, path=path, experiment=experiment, task=task, config=config, overrides=overrides,
               manifest=manifest, record=record, status=status)


def find_jobs(sweep_dir: Path, exclude: Path) -> tuple[list[Job], SweepManifest | None]:
    """Every job under sweep_dir (not under `exclude`, the report's own dir), and the sweep manifest if any."""
    jobs = [job for path in _job_dirs(sweep_dir, exclude) if (job := _load_job(sweep_dir, path)) is not None]
    sweep_manifest_path = sweep_dir / "manifest.json"
    sweep_manifest = None
    if sweep_manifest_path.is_file() and not _is_run_manifest(sweep_manifest_path):
        sweep_manifest = _read_json(sweep_manifest_path, SweepManifest)
        by_name = {job.name: job for job in jobs}
        for entry in sweep_manifest.jobs:
            name = Path(entry.dir).as_posix()
            if name in by_name:
                if by_name[name].record is None:
                    by_name[name].status = entry.status
                continue
            if (sweep_dir / name).exists():
                continue  # on disk but not a sweep job: a report written into the sweep dir
            # Listed by the sweep but gone from disk (moved, or cleaned up): still a row in the overview.
            overrides = _parse_overrides(entry.overrides, f"{sweep_manifest_path}: job {entry.dir}")
            experiment = overrides.pop("experiment", Override("unknown", "unknown")).text
            jobs.append(Job(name=name, path=None, experiment=experiment, task=None, config={},
                            overrides=overrides, manifest=None, record=None, status=f"{entry.status} (dir missing)"))
    return sorted(jobs, key=lambda job: _natural_key(job.name)), sweep_manifest


def jobs_of(sweep_dir: Path, task: str, exclude: Path | None = None) -> list[Job]:
    """The jobs on disk under sweep_dir that ran `task` (e.g. "experiments.hierarchy.run"), found the
    way the sweep report finds every job: the per-experiment reports share this one discovery, so a
    mixed sweep's persona_bias jobs never pass for hierarchy jobs because both wrote a metrics.json."""
    return [job for job in find_jobs(sweep_dir, exclude or sweep_dir / ".no-report-dir")[0]
            if job.path is not None and job.task == task]


def varying_keys(jobs: list[Job]) -> list[str]:
    """Override keys whose value differs between the given jobs (a key some jobs lack counts as differing)."""
    keys = _override_keys(jobs)
    return [k for k in keys if len({job.overrides[k].text if k in job.overrides else None for job in jobs}) > 1]


def _override_keys(jobs: list[Job]) -> list[str]:
    keys: dict[str, None] = {}
    for job in jobs:
        keys.update(dict.fromkeys(job.overrides))
    return list(keys)


def _override_column(jobs: list[Job], key: str) -> list[Any]:
    """The key's value per job, typed when every job's value has one numeric or bool type, else as typed."""
    values = [job.overrides[key].value if key in job.overrides else None for job in jobs]
    present = [v for v in values if v is not None]
    kinds = {type(v) for v in present}
    if kinds <= {bool} or kinds <= {int} or kinds <= {int, float}:
        return values
    return [job.overrides[key].text if key in job.overrides else None for job in jobs]


def conditions(jobs: list[Job], replicate_keys: list[str]) -> dict[str, str]:
    """Job name -> its condition: the varying overrides that are not replicates (seeds), as `key=value, ...`."""
    keys = [k for k in varying_keys(jobs) if k not in replicate_keys]
    if not keys:
        return {job.name: "all jobs" for job in jobs}
    return {job.name: ", ".join(f"{k}={job.overrides[k].text if k in job.overrides else '(unset)'}" for k in keys)
            for job in jobs}


# --- merging the tables ------------------------------------------------------------------------


@dataclass
class Loaded:
    """What one experiment's jobs contributed: their tables as read, and notes for its report section."""

    tables: list[tuple[Job, str, pd.DataFrame]] = field(default_factory=list)  # (job, table name, frame)
    left_out: dict[str, list[str]] = field(default_factory=dict)  # table name -> columns kept out of results.parquet
    notes: list[str] = field(default_factory=list)


def _main_tables(jobs: list[Job], settings: ReportSettings) -> dict[str, Loaded]:
    loaded: dict[str, Loaded] = {}
    persona_rows, persona_words = 0, set()
    for job in jobs:
        if job.path is None or job.task not in TASK_EXPERIMENTS:
            continue
        kind = TASK_EXPERIMENTS[job.task]
        entry = loaded.setdefault(kind, Loaded())
        for table_name, path, reader in _JOB_FILES[kind]:
            if not (job.path / path).is_file():
                entry.notes.append(f"job {job.name}: no {path}")
                continue
            frame = reader(job.path / path)
            entry.tables.append((job, table_name, frame))
            if kind == "persona_bias" and table_name == "predictions":
                words = _job_wheel(job).words
                persona_rows += len(frame)
                persona_words |= set(words)
    if persona_words and persona_rows * len(persona_words) > settings.max_probability_cells:
        entry = loaded["persona_bias"]
        entry.left_out["predictions"] = sorted(persona_words)
        entry.notes.append(f"per-word probability columns left out of results.parquet: {persona_rows} rows x "
                           f"{len(persona_words)} words exceeds max_probability_cells={settings.max_probability_cells} "
                           "(they stay in each job's predictions.parquet)")
    return loaded


#: Per experiment: (table name in results.parquet, file in the job dir, reader).
_JOB_FILES = {
    "negotiation": [("trials", "trials.parquet", _read_parquet)],
    "persona_bias": [("predictions", "predictions.parquet", _read_parquet),
                     ("metrics", "metrics.json", lambda p: pd.DataFrame([_read_json(p, PersonaMetrics).model_dump()]))],
    "hierarchy": [("metrics", "metrics.json", lambda p: pd.DataFrame([load_hierarchy_metrics(p).model_dump()]))],
    "probe": [("distributions", "distributions.parquet", _read_parquet)],
}


def _job_wheel(job: Job) -> EmotionWheel:
    wheel = job.config.get("probe", {}).get("wheel")
    if not isinstance(wheel, str):
        raise ConfigError(f"{job.path}: the job's config has no probe.wheel")
    return EmotionWheel.load(wheel)


def merge_tables(jobs: list[Job], loaded: dict[str, Loaded]) -> pd.DataFrame:
    """One frame: LEADING_COLUMNS, one column per override key, then each table's own columns."""
    keys = _override_keys(jobs)
    reserved = set(LEADING_COLUMNS) | set(keys)
    per_key = {key: dict(zip([j.name for j in jobs], _override_column(jobs, key))) for key in keys}
    frames = []
    for entry in loaded.values():
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


# --- report.html -------------------------------------------------------------------------------


@dataclass
class Block:
    """One piece of a section: kind is text | table | figures | details."""

    kind: str
    title: str = ""
    text: str = ""
    html: Markup = Markup("")
    figures: list[tuple[str, str]] = field(default_factory=list)  # (caption, data URI)


@dataclass
class Section:
    title: str
    anchor: str
    blocks: list[Block] = field(default_factory=list)


def table_block(title: str, frame: pd.DataFrame, index: bool = False) -> Block:
    html = frame.to_html(index=index, escape=True, border=0, na_rep="–", classes="data",
                         float_format=lambda x: f"{x:.4g}")
    return Block("table", title=title, html=Markup(html))


def figures_block(title: str, paths: list[Path], captions: list[str] | None = None) -> Block:
    captions = captions or [p.stem for p in paths]
    return Block("figures", title=title, figures=[(c, _data_uri(p)) for c, p in zip(captions, paths)])


def _data_uri(path: Path) -> str:
    return "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode("ascii")


_PAGE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="default-src 'none'; img-src data:; style-src 'unsafe-inline'">
<meta name="viewport" content="width=device-width, initial-scale=1">
<link rel="icon" href="data:,">
<title>{{ title }}</title>
<style>
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1200px; padding: 0 1em; color: #222; }
h1 { font-size: 1.6em; } h2 { border-bottom: 1px solid #ccc; margin-top: 2em; } h3 { font-size: 1.05em; }
nav a { margin-right: 1em; }
table.data { border-collapse: collapse; font-size: 0.85em; margin: 0.5em 0 1em; }
table.data th, table.data td { border: 1px solid #ddd; padding: 2px 6px; text-align: right; }
table.data th { background: #f4f4f4; }
.scroll { overflow-x: auto; }
figure { display: inline-block; margin: 0.5em; vertical-align: top; }
figure img { max-width: 100%; border: 1px solid #eee; }
figcaption { font-size: 0.8em; color: #555; }
pre { background: #f7f7f7; padding: 0.8em; overflow-x: auto; font-size: 0.8em; }
.note { color: #666; font-size: 0.9em; }
</style>
</head>
<body>
<h1>{{ title }}</h1>
<p class="note">{{ subtitle }}</p>
<nav>{% for section in sections %}<a href="#{{ section.anchor }}">{{ section.title }}</a>{% endfor %}</nav>
{% for section in sections %}
<section id="{{ section.anchor }}">
<h2>{{ section.title }}</h2>
{% for block in section.blocks %}
{% if block.kind == "text" %}<p class="note">{{ block.text }}</p>
{% elif block.kind == "table" %}
{% if block.title %}<h3>{{ block.title }}</h3>{% endif %}
<div class="scroll">{{ block.html }}</div>
{% elif block.kind == "figures" %}
{% if block.title %}<h3>{{ block.title }}</h3>{% endif %}
<div>
{% for caption, uri in block.figures %}
<figure><img src="{{ uri }}" alt="{{ caption }}"><figcaption>{{ caption }}</figcaption></figure>
{% endfor %}
</div>
{% elif block.kind == "details" %}
<details><summary>{{ block.title }}</summary>
{% if block.html %}<div class="scroll">{{ block.html }}</div>{% else %}<pre>{{ block.text }}</pre>{% endif %}
</details>
{% endif %}
{% endfor %}
</section>
{% endfor %}
</body>
</html>
"""


def render_html(title: str, subtitle: str, sections: list[Section]) -> str:
    # Autoescape everything; only pandas' own (escaped) table HTML is passed through as Markup.
    environment = Environment(autoescape=True, keep_trailing_newline=True)
    return environment.from_string(_PAGE).render(title=title, subtitle=subtitle, sections=sections)


# --- per-experiment sections -------------------------------------------------------------------


def _model_label(job: Job, role: str) -> str:
    """Which model played `role` in a job: its `<role>/model` override and any `<role>.model.*`
    overrides as typed, else the model name its manifest recorded, else the config's."""
    parts = [job.overrides[f"{role}/model"].text] if f"{role}/model" in job.overrides else []
    parts += [f"{key.removeprefix(f'{role}.model.')}={override.text}" for key, override in job.overrides.items()
              if key.startswith(f"{role}.model.")]
    if parts:
        return ", ".join(parts)
    recorded = (job.manifest.models or {}).get(role) if job.manifest is not None else None
    if recorded is not None and recorded.model_dump().get("name"):
        return str(recorded.model_dump()["name"])
    node = job.config.get(role, {}).get("model", {}) if isinstance(job.config.get(role), dict) else {}
    return str(node.get("model") or node.get("path") or node.get("_target_") or "(unknown)")


def _trial_prices(frame: pd.DataFrame) -> pd.DataFrame:
    """A job's trials with a numeric `price`; jobs written before the column existed use final_price
    (their no-sale trials then have no price, as with `analysis.no_sale_price=exclude`)."""
    frame = frame.copy()
    if "price" not in frame.columns:
        frame["price"] = frame["final_price"]
    for column in ("price", "final_price", "mean_abs_error_pp"):
        # A job where no trial reported a price stores an all-null column; make it numeric for the statistics.
        frame[column] = pd.to_numeric(frame[column], errors="coerce")
    return frame


def _negotiation_section(jobs: list[Job], entry: Loaded, settings: ReportSettings, out_dir: Path) -> Section:
    section = Section("Negotiation", "negotiation")
    condition_of = conditions(jobs, settings.replicate_keys)
    salesperson_of = {job.name: _model_label(job, "salesperson") for job in jobs}
    customer_of = {job.name: _model_label(job, "customer") for job in jobs}
    if len(set(customer_of.values())) > 1:  # the paper compares salespeople against one customer model
        salesperson_of = {name: f"{label} vs {customer_of[name]}" for name, label in salesperson_of.items()}
    trials = pd.concat([_trial_prices(frame).assign(job=job.name, condition=condition_of[job.name],
                                                    salesperson=salesperson_of[job.name])
                        for job, _, frame in entry.tables], ignore_index=True) if entry.tables else pd.DataFrame()
    summaries = []
    for job in jobs:
        if job.path is not None and (job.path / "summary.json").is_file():
            summary = _read_json(job.path / "summary.json", NegotiationSummary)
            summaries.append({"job": job.name, "condition": condition_of[job.name], **summary.model_dump()})
    if summaries:
        section.blocks.append(table_block("Per job (summary.json)", _missing_as_nan(pd.DataFrame(summaries))))
        for key in ("pairing", "no_sale_price", "skip_first_prediction"):
            used = {str(s[key]) for s in summaries if s[key] is not None}
            if len(used) > 1:
                section.blocks.append(Block("text", text=f"jobs differ in analysis.{key} ({sorted(used)}): the pooled "
                                                         "statistics mix differently scored trials"))
    if not trials.empty:
        figure_dir = out_dir / "negotiation"
        figure_dir.mkdir(exist_ok=True)
        by_condition = _condition_table(trials)
        section.blocks.append(table_block("By condition", by_condition))
        section.blocks.append(table_block("Prediction error vs price, across trials", _correlation_table(trials)))
        section.blocks.append(Block("text", text=(
            "Error: a trial's mean absolute difference between predicted and self-reported percentages, in "
            "percentage points. r: Pearson, rho: Spearman, each with a 95% percentile bootstrap CI over trials "
            "and a two-sided permutation p-value (errors re-paired with prices at random).")))
        paths = [_price_by_condition(trials, figure_dir / "price_by_condition.png"),
                 _deal_rate_by_condition(by_condition, figure_dir / "deal_rate_by_condition.png"),
                 _error_vs_price(trials, figure_dir / "error_vs_price.png"),
                 _error_price_by_model(trials, figure_dir / "error_vs_price_by_model.png")]
        section.blocks.append(figures_block("Across jobs", paths, [
            "final price by condition", "deal rate by condition",
            "prediction error vs price: one point per trial, least-squares line over all trials",
            "prediction error vs price per salesperson model (mean ± sd over trials)"]))
    pies = [(job, p) for job in jobs if job.path is not None
            for p in sorted(job.path.glob("emotions_trial*.png"),
                            key=lambda p: _natural_key(p.stem.removeprefix("emotions_trial")))]
    if pies:
        shown = pies[: settings.max_trial_figures]
        section.blocks.append(figures_block(
            "Self-reported vs predicted emotions per turn", [p for _, p in shown],
            [f"job {job.name} ({condition_of[job.name]}), {p.stem.removeprefix('emotions_')}" for job, p in shown]))
        if len(pies) > len(shown):
            section.blocks.append(Block("text", text=f"{len(pies) - len(shown)} more per-trial figures are in the job "
                                                     f"dirs (max_trial_figures={settings.max_trial_figures})."))
    section.blocks.extend(Block("text", text=note) for note in entry.notes)
    return section


def _condition_table(trials: pd.DataFrame) -> pd.DataFrame:
    grouped = trials.groupby("condition", sort=True)
    table = pd.DataFrame({
        "jobs": grouped["job"].nunique(),
        "trials": grouped.size(),
        "deals": grouped["deal"].sum().astype(int),
        "deal rate": grouped["deal"].mean(),
        "mean final price": grouped["final_price"].mean(),
        "mean price": grouped["price"].mean(),
        "mean error (pp)": grouped["mean_abs_error_pp"].mean(),
        "parse failures": grouped["parse_failures"].sum(),
    })
    return table.reset_index()


def _colors(labels: list[str]) -> dict[str, Any]:
    palette = plt.get_cmap("tab10")
    return {label: palette(i % 10) for i, label in enumerate(labels)}


def _price_by_condition(trials: pd.DataFrame, path: Path) -> Path:
    labels = sorted(trials["condition"].unique())
    colors = _colors(labels)
    fig, ax = plt.subplots(figsize=(max(5, 1.6 * len(labels)), 3.6))
    rng = np.random.default_rng(0)  # jitter only, so that points at one price stay visible
    for position, label in enumerate(labels, start=1):
        values = trials.loc[(trials["condition"] == label) & trials["final_price"].notna(), "final_price"].to_numpy()
        if len(values):
            ax.boxplot([values], positions=[position], widths=0.5, showfliers=False)
            ax.scatter(position + rng.uniform(-0.12, 0.12, len(values)), values, color=colors[label], zorder=3, s=18)
    if trials["final_price"].isna().all():
        ax.text(0.5, 0.5, "no trial reported a price", ha="center", va="center", transform=ax.transAxes)
    ax.set_xticks(range(1, len(labels) + 1), labels)
    ax.set_xlim(0.5, len(labels) + 0.5)
    ax.set_ylabel("final price")
    ax.tick_params(axis="x", labelsize=7, rotation=20)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def _deal_rate_by_condition(by_condition: pd.DataFrame, path: Path) -> Path:
    labels = by_condition["condition"].tolist()
    colors = _colors(sorted(labels))
    fig, ax = plt.subplots(figsize=(max(5, 1.6 * len(labels)), 3.6))
    bars = ax.bar(range(len(labels)), by_condition["deal rate"], color=[colors[c] for c in labels])
    for bar, (deals, total) in zip(bars, zip(by_condition["deals"], by_condition["trials"])):
        ax.annotate(f"{deals}/{total}", (bar.get_x() + bar.get_width() / 2, bar.get_height()), ha="center",
                    va="bottom", fontsize=8)
    ax.set_xticks(range(len(labels)), labels, fontsize=7, rotation=20)
    ax.set_ylim(0, 1.1)
    ax.set_ylabel("deal rate")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def _correlation_table(trials: pd.DataFrame) -> pd.DataFrame:
    """error_price_correlation over all trials of the sweep, then within each condition and each
    salesperson model when there are several (one row each)."""
    groups: list[tuple[str, pd.DataFrame]] = [("all trials", trials)]
    same_partition = (trials.groupby("condition")["salesperson"].nunique().max() == 1
                      and trials.groupby("salesperson")["condition"].nunique().max() == 1)
    for column, prefix in (("condition", ""), ("salesperson", "salesperson: ")):
        if trials[column].nunique() > 1 and not (column == "salesperson" and same_partition):
            groups += [(f"{prefix}{label}", rows) for label, rows in trials.groupby(column, sort=True)]
    rows = []
    for label, group in groups:
        result = error_price_correlation(group["mean_abs_error_pp"], group["price"])
        rows.append({"trials": label, "n": result["n"], "Pearson r": result["pearson_r"],
                     "r 95% CI": _interval(result["pearson_ci_low"], result["pearson_ci_high"]),
                     "r p (perm.)": result["pearson_p_perm"], "r p (t)": result["pearson_p"],
                     "Spearman rho": result["spearman_rho"],
                     "rho 95% CI": _interval(result["spearman_ci_low"], result["spearman_ci_high"]),
                     "rho p (perm.)": result["spearman_p_perm"]})
    return _missing_as_nan(pd.DataFrame(rows))


def _missing_as_nan(frame: pd.DataFrame) -> pd.DataFrame:
    """None as NaN, so that the HTML table shows it as a dash (na_rep) rather than the word None."""
    return frame.map(lambda value: np.nan if value is None else value)


def _interval(low: float | None, high: float | None) -> str | None:
    return None if low is None or high is None else f"[{low:.3g}, {high:.3g}]"


def _error_vs_price(trials: pd.DataFrame, path: Path) -> Path:
    """One point per trial, coloured by condition, with the least-squares line over all trials."""
    labels = sorted(trials["condition"].unique())
    colors = _colors(labels)
    fig, ax = plt.subplots(figsize=(6.5, 4.4))
    for label in labels:
        rows = trials[trials["condition"] == label]
        ax.scatter(rows["mean_abs_error_pp"], rows["price"], color=colors[label], label=label, s=22, alpha=0.6)
    draw_fit(ax, trials["mean_abs_error_pp"], trials["price"])
    caption = correlation_caption(error_price_correlation(trials["mean_abs_error_pp"], trials["price"]))
    ax.set_title(caption.replace("; ", "\n"), fontsize=8)
    ax.set_xlabel("mean prediction error (percentage points)")
    ax.set_ylabel("price")
    ax.legend(fontsize=7, frameon=False)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def _error_price_by_model(trials: pd.DataFrame, path: Path) -> Path:
    """The paper's cross-model figure: per salesperson model, mean error ± sd against mean price ± sd
    over its trials (sd 0 for a single trial)."""
    labels = sorted(trials["salesperson"].unique())
    colors = _colors(labels)
    fig, ax = plt.subplots(figsize=(6, 4.4))
    for label in labels:
        rows = trials[trials["salesperson"] == label]
        error, price = rows["mean_abs_error_pp"].dropna(), rows["price"].dropna()
        if error.empty or price.empty:
            continue
        ax.errorbar(error.mean(), price.mean(), xerr=np.nan_to_num(error.std(ddof=1)),
                    yerr=np.nan_to_num(price.std(ddof=1)), fmt="o", capsize=4, markersize=8, color=colors[label],
                    label=f"{label} ({len(rows)} trials)")
        ax.annotate(label, (error.mean(), price.mean()), textcoords="offset points", xytext=(6, 6), fontsize=8)
    if not ax.has_data():
        ax.text(0.5, 0.5, "no model has both a scored error and a price", ha="center", va="center",
                transform=ax.transAxes)
    else:
        ax.legend(fontsize=7, frameon=False)
    ax.set_xlabel("emotion prediction error (percentage points)")
    ax.set_ylabel("price")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def _persona_section(jobs: list[Job], entry: Loaded, settings: ReportSettings, out_dir: Path,
                     console: Console) -> Section:
    section = Section("Persona bias", "persona_bias")
    tables: dict[str, dict[str, pd.DataFrame]] = {}
    for job, name, frame in entry.tables:
        tables.setdefault(job.name, {})[name] = frame
    complete = [job for job in jobs if {"predictions", "metrics"} <= set(tables.get(job.name, {}))]
    # Personas are compared within a group of jobs that agree on every other varying override (e.g. per model).
    group_keys = [k for k in varying_keys(complete) if not k.startswith("persona")]
    groups: dict[str, list[Job]] = {}
    for job in complete:
        label = ", ".join(f"{k}={job.overrides[k].text if k in job.overrides else '(unset)'}" for k in group_keys)
        groups.setdefault(label, []).append(job)
    for label, members in groups.items():
        wheels = {_job_wheel(job).name for job in members}
        if len(wheels) > 1:
            raise ConfigError(f"sweep_dir: persona_bias jobs {[j.name for j in members]} used different wheels "
                              f"{sorted(wheels)}; compare them in separate reports")
        wheel = _job_wheel(members[0])
        personas = [str(tables[j.name]["metrics"].loc[0, "persona"]) for j in members]
        persona_jobs = {}
        for job, persona in zip(members, personas):
            # Two jobs with one persona (e.g. two seeds) keep both, told apart by their job dir.
            key = persona if personas.count(persona) == 1 else f"{persona} (job {job.name.replace('/', '-')})"
            persona_jobs[key] = (tables[job.name]["metrics"].iloc[0].to_dict(), tables[job.name]["predictions"])
        slug = re.sub(r"[^A-Za-z0-9_.=-]+", "_", label) if label else ""
        group_dir = out_dir / "persona_bias" / slug if slug else out_dir / "persona_bias"
        group_dir.mkdir(parents=True, exist_ok=True)
        result = write_persona_report(persona_jobs, wheel, settings.pairs, settings.pie_emotions, group_dir, console)
        prefix = f"{label}: " if label else ""
        section.blocks.append(table_block(f"{prefix}Accuracy", result.accuracy, index=True))
        section.blocks.append(table_block(f"{prefix}Accuracy per primary", result.per_primary, index=True))
        section.blocks.append(figures_block(f"{prefix}Figures", result.figures))
        for persona, counts in result.primary_confusions.items():
            confusion = pd.DataFrame(counts, index=pd.Index(wheel.primaries, name="true \\ predicted"),
                                     columns=wheel.primaries)
            section.blocks.append(table_block(f"{prefix}Confusion over primaries: {persona}", confusion, index=True))
        if not result.accuracy_tests.empty:
            section.blocks.append(table_block(f"{prefix}Paired accuracy differences (McNemar's exact test)",
                                              result.accuracy_tests))
        for (a, b), comparison in result.comparisons.items():
            for calibrated, rows in comparison.groupby("calibrated", sort=True):
                kind = "calibrated" if calibrated else "uncalibrated"
                rows = rows.drop(columns="calibrated")
                n = settings.comparison_rows
                section.blocks.append(table_block(f"{prefix}{a} vs {b} ({kind}): more often predicted for {a}",
                                                  rows.head(n)))
                section.blocks.append(table_block(f"{prefix}{a} vs {b} ({kind}): more often predicted for {b}",
                                                  rows.tail(n).iloc[::-1]))
                details = table_block("", rows)
                section.blocks.append(Block("details", title=f"all {len(rows)} rows: {a} vs {b} ({kind})",
                                            html=details.html))
    incomplete = [job.name for job in jobs if job.name not in {j.name for j in complete}]
    if incomplete:
        section.blocks.append(Block("text", text=f"jobs without predictions.parquet and metrics.json: {incomplete}"))
    section.blocks.extend(Block("text", text=note) for note in entry.notes)
    return section


def _hierarchy_section(jobs: list[Job], entry: Loaded, out_dir: Path) -> Section:
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


def _probe_section(entry: Loaded, top: int = 5) -> Section:
    section = Section("Probe", "probe")
    rows = []
    for job, _, frame in entry.tables:
        words = [w for w in _job_wheel(job).words if w in frame.columns]
        means = frame[words].astype(float).mean().sort_values(ascending=False).head(top)
        rows.append({"job": job.name, "scenarios": len(frame),
                     f"top {top} words by mean probability": ", ".join(f"{w} {p:.3f}" for w, p in means.items())})
    if rows:
        section.blocks.append(table_block("Distributions per job", pd.DataFrame(rows)))
    section.blocks.extend(Block("text", text=note) for note in entry.notes)
    return section


def _pretty(record: BaseModel) -> str:
    # exclude_unset: show the file as written, without the defaults this report fills in for older files.
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
    results = merge_tables(jobs, loaded)
    results.to_parquet(out_dir / "results.parquet", index=False)
    jobs_table = overview(jobs)
    jobs_table.to_csv(out_dir / "jobs.csv", index=False)

    sections = [Section("Jobs", "jobs", [table_block("", jobs_table)])]
    if sweep_manifest is not None:
        sections[0].blocks.insert(0, Block("text", text=f"sweep {sweep_manifest.status}, launched with: "
                                                         f"{' '.join(sweep_manifest.command_overrides)}"))
    for kind in TASK_EXPERIMENTS.values():  # sections in one fixed order, whatever order the jobs came in
        if kind not in loaded:
            continue
        entry = loaded[kind]
        members = [job for job in jobs if job.task is not None and TASK_EXPERIMENTS.get(job.task) == kind]
        if kind == "negotiation":
            sections.append(_negotiation_section(members, entry, settings, out_dir))
        elif kind == "persona_bias":
            sections.append(_persona_section(members, entry, settings, out_dir, console))
        elif kind == "hierarchy":
            sections.append(_hierarchy_section(members, entry, out_dir))
        elif kind == "probe":
            sections.append(_probe_section(entry))
    sections.append(_manifest_section(jobs, sweep_manifest))
    written = datetime.now(timezone.utc).isoformat(timespec="seconds")
    subtitle = (f"{len(jobs)} jobs under {sweep_dir} ({', '.join(sorted({j.experiment for j in jobs}))}); "
                f"written {written}")
    html_path = out_dir / "report.html"
    html_path.write_text(render_html(f"Sweep report: {sweep_dir.name}", subtitle, sections), encoding="utf-8")

    view = Table(title=f"Sweep report: {len(jobs)} jobs")
    for column in ["experiment", "jobs", "completed", "rows in results.parquet"]:
        view.add_column(column, justify="left" if column == "experiment" else "right")
    by_experiment: dict[str, list[Job]] = {}
    for job in jobs:
        by_experiment.setdefault(job.experiment, []).append(job)
    for experiment, members in sorted(by_experiment.items()):
        rows = int((results["experiment"] == experiment).sum()) if len(results) else 0
        view.add_row(str(experiment), str(len(members)), str(sum(job.status == COMPLETED for job in members)),
                     f"{rows:,}")
    console.print(view)
    console.print(f"wrote {out_dir}/{{results.parquet, jobs.csv}} and", markup=False)
    console.print(str(html_path), style="bold", markup=False)
    return results
