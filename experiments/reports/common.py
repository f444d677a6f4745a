"""The sweep report's building blocks, and the registry through which each experiment adds its part.

`experiments.reports.report` (the `report` experiment) finds a sweep's jobs, merges their tables into
results.parquet and renders report.html; what a job of one experiment wrote, and how its section of
the page reads, belong to that experiment's report module in this folder, which declares both once:

    register("hierarchy", ExperimentReport(
        order=30, tables=(JobTable("metrics", "metrics.json", read_metrics, "one row per job: ..."),),
        section=hierarchy_section))

The registry is keyed by the task a job's config names. emolab's own parts (BUILT_IN_REPORTS) are
imported on first use; another package's experiment registers its part in the module its entry point
names, which is imported only when a sweep holds a job that ran it (`report_for`). The runs never
import their reports. (A report option for users to tune is a key of conf/experiment/report.yaml,
validated by ReportSettings, as negotiation's max_trial_figures and persona_bias' pairs are.)

Everything here reads files written by other runs, so every reader validates (pydantic) and turns a
bad file into one ConfigError naming it.
"""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any, TypeVar

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import yaml
from jinja2 import Environment
from markupsafe import Markup
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError
from rich.console import Console

from emotion_probe.errors import ConfigError, first_validation_problem
from emotion_probe.limits import InputLimits
from emotion_probe.wheel import EmotionWheel
from experiments.app.manifest import RunManifest
from experiments.app.run_records import JOB_FILE, JobRecord, read_job_record

M = TypeVar("M", bound=BaseModel)

#: Columns every row of results.parquet starts with.
LEADING_COLUMNS = ("job", "experiment", "table")
#: Status of a job without job.json (a run that no sweep callback recorded): its manifest.json is
#: written last, so a job that has one completed.
COMPLETED = "COMPLETED"
UNKNOWN = "UNKNOWN (no job.json, no manifest.json)"


class ReportSettings(BaseModel):
    """conf/experiment/report.yaml."""

    model_config = ConfigDict(extra="forbid")

    sweep_dir: Path = Field(description="directory of the sweep (job dirs found recursively), or one run dir")
    replicate_keys: list[str] = Field(description="override keys that repeat a condition; figures pool over them")
    max_probability_cells: int = Field(ge=0, description="persona_bias: most per-word probability cells kept in "
                                                         "results.parquet (0 = never)")
    max_trial_figures: int = Field(ge=0, description="negotiation: most per-trial emotion figures in report.html")
    comparison_rows: int = Field(ge=1, description="persona_bias: rows shown per side of each comparison table")
    pairs: list[tuple[str, str]] = Field(description="persona_bias: persona pairs to compare, as [A, B]")
    pie_emotions: list[str] = Field(description="persona_bias: true emotions to draw per-persona pie charts for")


# --- the files a job leaves behind, as this report reads them back -----------------------------


class SweepJobEntry(BaseModel):
    """One job in the sweep manifest: a copy of its job.json, with its dir relative to the sweep."""

    model_config = ConfigDict(extra="allow")

    dir: str
    status: str
    overrides: list[str]


class SweepManifest(BaseModel):
    """`<sweep_dir>/manifest.json`, written by experiments.app.callbacks.SweepCallback when the sweep starts and ends."""

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


_OVERRIDE_LIST = TypeAdapter(list[str])


def invalid(path: Path, err: ValidationError) -> ConfigError:
    return ConfigError(f"{path}: {first_validation_problem(err)}")


def read_json(path: Path, model: type[M], limits: InputLimits | None = None) -> M:
    """A JSON file validated by `model`; JSON nesting is capped by `limits` (None: conf/limits/default.yaml's)."""
    try:
        data = (limits or InputLimits.shipped()).loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, ValueError) as err:  # JSONDecodeError is a ValueError, as is nesting too deep
        raise ConfigError(f"{path}: not valid JSON ({err})") from None
    try:
        return model.model_validate(data)
    except ValidationError as err:
        raise invalid(path, err) from None


def read_yaml(path: Path) -> Any:
    try:
        return yaml.safe_load(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, yaml.YAMLError) as err:
        raise ConfigError(f"{path}: not valid YAML ({err})") from None
    except RecursionError:
        raise ConfigError(f"{path}: not valid YAML (nested too deeply)") from None


def read_parquet(path: Path) -> pd.DataFrame:
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
    manifest: RunManifest | None
    record: JobRecord | None  # job.json, from the sweep callback
    status: str  # COMPLETED | FAILED (job.json) or as the sweep manifest says; see COMPLETED and UNKNOWN

    @property
    def wall_time_s(self) -> float | None:
        # job.json times the whole job; the run manifest only the experiment's own function.
        if self.record is not None and self.record.wall_time_s is not None:
            return self.record.wall_time_s
        return self.manifest.wall_time_s if self.manifest is not None else None


def natural_key(name: str) -> list[tuple[int, Any]]:
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
    except (UnicodeDecodeError, ValueError, RecursionError):
        return True  # unreadable: let the validation report it with its path


def _job_dirs(sweep_dir: Path, exclude: Path) -> list[Path]:
    found = {p.parent.parent for p in sweep_dir.rglob(".hydra/config.yaml")}
    found |= {p.parent for p in sweep_dir.rglob("manifest.json") if _is_run_manifest(p)}
    excluded = exclude.resolve()
    return [d for d in found if not d.resolve().is_relative_to(excluded)]


def _load_job(sweep_dir: Path, path: Path) -> Job | None:
    hydra_dir = path / ".hydra"
    manifest = read_json(path / "manifest.json", RunManifest) if (path / "manifest.json").is_file() else None
    saved = read_yaml(hydra_dir / "config.yaml") if (hydra_dir / "config.yaml").is_file() else None
    if saved is not None and not isinstance(saved, dict):
        raise ConfigError(f"{hydra_dir / 'config.yaml'}: not a mapping")
    config = manifest.config if manifest is not None else saved
    if config is None:
        raise ConfigError(f"{hydra_dir / 'config.yaml'}: empty")
    if "sweep_dir" in config:
        return None  # a report over other jobs (this one, persona_report, hierarchy_report), not a sweep job
    try:
        record = read_job_record(path)
    except UnicodeDecodeError as err:
        raise ConfigError(f"{path / JOB_FILE} is corrupt (not UTF-8: {err.reason}); delete it to rerun that job") \
            from None
    if (hydra_dir / "overrides.yaml").is_file():
        try:
            lines = _OVERRIDE_LIST.validate_python(read_yaml(hydra_dir / "overrides.yaml") or [])
        except ValidationError as err:
            raise invalid(hydra_dir / "overrides.yaml", err) from None
        overrides = _parse_overrides(lines, hydra_dir / "overrides.yaml")
    elif record is not None:
        overrides = _parse_overrides(record.overrides, path / JOB_FILE)
    else:
        overrides = {}
    task = config.get("task")
    if task is not None:
        from experiments.app.registry import check_task

        task = check_task(task, f"{path}: task")  # a task recorded as a module path becomes the experiment's name
    experiment: str | None = None
    if (hydra_dir / "hydra.yaml").is_file():
        try:
            hydra_record = HydraRecord.model_validate(read_yaml(hydra_dir / "hydra.yaml"))
        except ValidationError as err:
            raise invalid(hydra_dir / "hydra.yaml", err) from None
        experiment = hydra_record.hydra.runtime.choices.get("experiment")
        if experiment is not None and not isinstance(experiment, str):  # jobs are grouped by this name
            raise ConfigError(f"{hydra_dir / 'hydra.yaml'}: hydra.runtime.choices.experiment must be a name, "
                              f"not a {type(experiment).__name__}")
    experiment = experiment or experiment_of_task(task)
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
        sweep_manifest = read_json(sweep_manifest_path, SweepManifest)
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
    return sorted(jobs, key=lambda job: natural_key(job.name)), sweep_manifest


def jobs_of(sweep_dir: Path, task: str, exclude: Path | None = None) -> list[Job]:
    """The jobs on disk under sweep_dir that ran `task` (e.g. "hierarchy"), found the
    way the sweep report finds every job: the per-experiment reports share this one discovery, so a
    mixed sweep's persona_bias jobs never pass for hierarchy jobs because both wrote a metrics.json."""
    return [job for job in find_jobs(sweep_dir, exclude or sweep_dir / ".no-report-dir")[0]
            if job.path is not None and job.task == task]


def varying_keys(jobs: list[Job]) -> list[str]:
    """Override keys whose value differs between the given jobs (a key some jobs lack counts as differing)."""
    keys = override_keys(jobs)
    return [k for k in keys if len({job.overrides[k].text if k in job.overrides else None for job in jobs}) > 1]


def override_keys(jobs: list[Job]) -> list[str]:
    keys: dict[str, None] = {}
    for job in jobs:
        keys.update(dict.fromkeys(job.overrides))
    return list(keys)


def override_column(jobs: list[Job], key: str) -> list[Any]:
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


def job_wheel(job: Job) -> EmotionWheel:
    """The wheel the job probed with (its saved probe.wheel), loaded once per name for the whole report."""
    wheel = job.config.get("probe", {}).get("wheel")
    if not isinstance(wheel, str):
        raise ConfigError(f"{job.path}: the job's config has no probe.wheel")
    return _load_wheel(wheel)


@cache
def _load_wheel(name: str) -> EmotionWheel:
    return EmotionWheel.load(name)


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


def label_colors(labels: list[str]) -> dict[str, Any]:
    palette = plt.get_cmap("tab10")
    return {label: palette(i % 10) for i, label in enumerate(labels)}


def missing_as_nan(frame: pd.DataFrame) -> pd.DataFrame:
    """None as NaN, so that the HTML table shows it as a dash (na_rep) rather than the word None."""
    return frame.map(lambda value: np.nan if value is None else value)


def interval(low: float | None, high: float | None) -> str | None:
    return None if low is None or high is None else f"[{low:.3g}, {high:.3g}]"


# --- the registry: what each experiment's jobs wrote, and its section of report.html -------------


@dataclass(frozen=True)
class JobTable:
    """One file a job leaves behind, read back as a table for results.parquet."""

    name: str  # the `table` column of its rows in results.parquet
    file: str  # path inside the job dir
    read: Callable[[Path], pd.DataFrame]  # validates the file; a bad one raises ConfigError naming it
    description: str  # what one row is: the schema of its rows in results.parquet, for readers of the code


@dataclass
class SectionInput:
    """What an experiment's section is drawn from."""

    jobs: list[Job]  # the sweep's jobs that ran this experiment's task
    loaded: Loaded  # their tables, as read by the experiment's JobTables
    settings: ReportSettings
    out_dir: Path  # the report's run dir; figures go in a folder named after the experiment
    console: Console


@dataclass(frozen=True)
class ExperimentReport:
    """An experiment's part of the sweep report."""

    order: int  # position of its section in report.html, lowest first
    tables: tuple[JobTable, ...]
    section: Callable[[SectionInput], Section]
    # Called once all jobs are read, before results.parquet is written: may move columns into
    # `loaded.left_out` (persona_bias keeps the per-word probabilities out of large sweeps).
    trim: Callable[[Loaded, ReportSettings], None] | None = None


_REGISTRY: dict[str, ExperimentReport] = {}
#: emolab's own report parts, one module each; each registers itself when imported.
BUILT_IN_REPORTS = ("experiments.reports.negotiation", "experiments.reports.persona_bias",
                    "experiments.reports.hierarchy", "experiments.reports.probe")
_BUILT_IN_LOADED = False


def _load_built_in_reports() -> None:
    global _BUILT_IN_LOADED
    import importlib

    for module in BUILT_IN_REPORTS:
        importlib.import_module(module)
    _BUILT_IN_LOADED = True


def register(task: str, report: ExperimentReport) -> ExperimentReport:
    """Declare the report of the experiment whose config says `task: <task>` (call at module level)."""
    _REGISTRY[task] = report
    return report


def report_for(task: str | None) -> ExperimentReport | None:
    """The registered report of `task`, importing the module that owns it on first use; None for a
    task that no module registers (a job of an experiment with no report section, or of one this emolab lacks)."""
    if not task:
        return None
    from experiments.app.registry import import_owner, upgrade_task

    task = upgrade_task(task)
    if not _BUILT_IN_LOADED:
        _load_built_in_reports()
    if task not in _REGISTRY:
        import_owner(task)  # only a registered experiment's module is ever imported on a job file's say-so
    return _REGISTRY.get(task)


def experiment_of_task(task: str | None) -> str:
    """An experiment's name from its task, for jobs whose .hydra/hydra.yaml does not record the
    `experiment=` choice (an experiment file may be copied under another name; its task still says what
    it wrote). A task recorded as a module path names its experiment too: "experiments.negotiation.run"
    -> "negotiation"."""
    if not task:
        return "unknown"
    from experiments.app.registry import upgrade_task

    return str(upgrade_task(task))
