"""Hydra callbacks that make sweeps resumable and self-describing.

`on_job_end` runs in the job's own process, wherever the launcher put it (a joblib worker, a
Slurm node, a Ray worker), so each job records its own outcome in `<job dir>/job.json`.
`on_multirun_end` runs where the sweep was launched and merges those records into
`<sweep dir>/manifest.json`. A rerun of the sweep into the same dir reads `job.json` back
(`finished_job`) and skips jobs that already completed with the same config.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Literal

from hydra.core.hydra_config import HydraConfig
from hydra.core.utils import JobReturn, JobStatus
from hydra.experimental.callback import Callback
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf
from pydantic import BaseModel, ConfigDict, ValidationError

from emotion_probe.errors import ConfigError
from experiments.common import git_commit, write_json_atomic

log = logging.getLogger(__name__)

JOB_FILE = "job.json"
#: Written by claim_run_dir when a resumable run starts: the fingerprint a resume must match.
RUN_SETTINGS_FILE = "run_settings.json"
SWEEP_MANIFEST = "manifest.json"
# Keys that change how a run looks, not what it computes: a rerun may differ in them.
VOLATILE_KEYS = ("progress",)


class JobRecord(BaseModel):
    """`<job dir>/job.json`, as written by `on_job_end` and read back on rerun and by the report."""

    model_config = ConfigDict(extra="forbid")

    status: Literal["COMPLETED", "FAILED"]
    num: int | None
    overrides: list[str]
    fingerprint: str
    output_dir: str
    started_at: str | None
    finished_at: str
    wall_time_s: float | None
    host: str
    pid: int
    error: str | None = None
    result: dict[str, Any] | None = None
    skipped_reruns: int = 0


def job_fingerprint(cfg: DictConfig) -> str:
    """A hash of what a job computes: its resolved config without the hydra node and volatile keys.

    Takes the job's config with or without its hydra node (callbacks get it, the task does not).
    Every model config in it has `device: auto` and `dtype: auto` resolved to what this machine runs
    (emotion_probe.models.wrappers.stack.resolved_model_config): a job finished on a GPU in bfloat16 is not
    the same job as one on a CPU in float32, though their configs read the same.
    """
    kept = [key for key in cfg if key not in ("hydra", *VOLATILE_KEYS)]
    data = OmegaConf.to_container(OmegaConf.masked_copy(cfg, kept), resolve=True, throw_on_missing=False)
    return hashlib.sha256(json.dumps(_placed(data), sort_keys=True, default=str).encode()).hexdigest()[:16]


def _placed(node: Any) -> Any:
    """`node` with every model config in it (a dict with a `_target_`) given its resolved device and dtype."""
    if isinstance(node, list):
        return [_placed(item) for item in node]
    if not isinstance(node, dict):
        return node
    node = {key: _placed(value) for key, value in node.items()}
    if "_target_" in node:
        from emotion_probe.models.wrappers.stack import resolved_model_config

        node = resolved_model_config(node)
    return node


def read_job_record(job_dir: Path) -> JobRecord | None:
    path = job_dir / JOB_FILE
    if not path.exists():
        return None
    try:
        return JobRecord.model_validate_json(path.read_text(encoding="utf-8"))
    except ValidationError as err:
        problem = err.errors()[0]
        field = ".".join(str(part) for part in problem["loc"]) or "(file)"
        raise ConfigError(f"{path} is corrupt ({field}: {problem['msg']}); delete it to rerun that job") from None


def finished_job(cfg: DictConfig) -> dict[str, Any] | None:
    """In a multirun, the stored result of this job if it already completed with the same config.

    Returns None when the job must run. A completed job with a *different* config in the same
    dir is refused: the sweep's parameters changed, and mixing results would be silent corruption.
    """
    if not HydraConfig.initialized() or HydraConfig.get().mode != RunMode.MULTIRUN:
        return None
    job_dir = Path(HydraConfig.get().runtime.output_dir)
    record = read_job_record(job_dir)
    if record is None or record.status != "COMPLETED":
        return None
    if record.fingerprint != job_fingerprint(cfg):
        raise ConfigError(
            f"{job_dir} holds a finished job with other settings ({', '.join(record.overrides) or 'no overrides'}); "
            "rerun the sweep with the same parameters, or into a new hydra.sweep.dir"
        )
    return record.result or {}


def claim_run_dir(cfg: DictConfig, out_dir: Path) -> None:
    """Refuse to resume into `out_dir` when it holds work made with other settings; else record ours.

    A resumable experiment (a negotiation picks up its checkpointed trials) calls this before it
    reads anything back, in a single run as in a multirun. It is the check `finished_job` makes for a
    finished sweep job, made at the start instead of at the end, so it also covers a run that was
    killed (it has no job.json yet) and a single run rerun with `hydra.run.dir` (which `finished_job`
    leaves alone). Outside a Hydra run (a test calling the task with a composed config) there is no
    command line to compare, and nothing is checked.
    """
    if not HydraConfig.initialized():
        return
    fingerprint = job_fingerprint(cfg)
    overrides = list(HydraConfig.get().overrides.task)
    path = out_dir / RUN_SETTINGS_FILE
    earlier: list[tuple[str, list[str]]] = []
    try:
        if path.exists():
            stored = json.loads(path.read_text(encoding="utf-8"))
            earlier.append((str(stored["fingerprint"]), list(stored.get("overrides") or [])))
    except (ValueError, KeyError, TypeError) as err:
        raise ConfigError(f"{path} is corrupt ({type(err).__name__}: {err}); delete it, or run into a new dir") from None
    record = read_job_record(out_dir)  # a run that ended before run settings were recorded
    if record is not None:
        earlier.append((record.fingerprint, record.overrides))
    for stored_fingerprint, stored_overrides in earlier:
        if stored_fingerprint != fingerprint:
            raise ConfigError(
                f"{out_dir} holds a run with other settings ({', '.join(stored_overrides) or 'no overrides'}; "
                f"now {', '.join(overrides) or 'no overrides'}); resume it with the same settings, "
                "or run into a new directory"
            )
    if not earlier:
        out_dir.mkdir(parents=True, exist_ok=True)
        write_json_atomic(path, {"fingerprint": fingerprint, "overrides": overrides, "written_at": _now()})


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _jsonable(value: Any) -> dict[str, Any] | None:
    """A job's return value as stored in job.json: dicts that survive JSON, otherwise nothing.

    A result that is left out is said in the log: a rerun that skips this job returns {} for it.
    Values JSON has no type for (a path, a timestamp) are stored as their text.
    """
    if value is None:
        return None
    if not isinstance(value, dict):
        # A table (the probe's) is expected here: it is in the job dir already, so this is only a debug line
        # (at info level it printed on every single run of experiments that return one).
        log.debug("the job's result (a %s) is not a dict; job.json records no result for it, the job dir holds "
                  "its outputs", type(value).__name__)
        return None
    try:
        return json.loads(json.dumps(value, default=str))
    except (TypeError, ValueError) as err:
        log.warning("the job's result cannot be stored as JSON (%s); job.json records no result for it", err)
        return None


class SweepCallback(Callback):
    """Writes `job.json` per job and `manifest.json` per sweep (see the module docstring)."""

    def __init__(self) -> None:
        self._job_started: float | None = None
        self._job_started_at: str | None = None
        self._sweep_started_at: str | None = None

    # ------------------------------------------------------------------ per job
    def on_job_start(self, config: DictConfig, **kwargs: Any) -> None:
        self._job_started = time.perf_counter()
        self._job_started_at = _now()

    def on_job_end(self, config: DictConfig, job_return: JobReturn, **kwargs: Any) -> None:
        import os
        import platform

        hydra = HydraConfig.get()
        job_dir = Path(hydra.runtime.output_dir)
        fingerprint = job_fingerprint(config)
        previous = _safe_read(job_dir)
        failed = job_return.status != JobStatus.COMPLETED
        if not failed and previous is not None and previous.status == "COMPLETED" and previous.fingerprint == fingerprint:
            # A rerun that skipped this finished job: keep the original record, note the visit.
            write_json_atomic(job_dir / JOB_FILE, {**previous.model_dump(), "skipped_reruns": previous.skipped_reruns + 1})
            return
        record = JobRecord(
            status="FAILED" if failed else "COMPLETED",
            num=OmegaConf.select(hydra.job, "num", throw_on_missing=False),
            overrides=list(hydra.overrides.task),
            fingerprint=fingerprint,
            output_dir=str(job_dir),
            started_at=self._job_started_at,
            finished_at=_now(),
            wall_time_s=round(time.perf_counter() - self._job_started, 3) if self._job_started else None,
            host=platform.node(),
            pid=os.getpid(),
            error=f"{type(job_return._return_value).__name__}: {job_return._return_value}" if failed else None,
            result=None if failed else _jsonable(job_return._return_value),
        )
        job_dir.mkdir(parents=True, exist_ok=True)
        write_json_atomic(job_dir / JOB_FILE, record.model_dump())

    # ---------------------------------------------------------------- per sweep
    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        self._sweep_started_at = _now()
        self._write_sweep_manifest(config, finished=False)

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        self._write_sweep_manifest(config, finished=True)

    def _write_sweep_manifest(self, config: DictConfig, *, finished: bool) -> None:
        sweep_dir = Path(config.hydra.sweep.dir)
        sweep_dir.mkdir(parents=True, exist_ok=True)
        jobs = []
        for path in sorted(sweep_dir.rglob(JOB_FILE)):
            record = _safe_read(path.parent)
            if record is not None and record.num is not None:  # run-mode dirs inside (a report) are no sweep jobs
                jobs.append({"dir": str(path.parent.relative_to(sweep_dir)), **record.model_dump(exclude={"output_dir"})})
        jobs.sort(key=lambda job: (job["num"] is None, job["num"], job["dir"]))
        swept = swept_parameters([job["overrides"] for job in jobs])
        for job in jobs:
            values = dict(override.split("=", 1) for override in job["overrides"] if "=" in override)
            job["params"] = {key: values.get(key) for key in swept}
        from importlib.metadata import version

        manifest = {
            "status": "finished" if finished else "running",
            "started_at": self._sweep_started_at,
            "written_at": _now(),
            "emolab": version("emolab"),
            "git": git_commit(),
            "experiment": config.hydra.runtime.choices.get("experiment"),
            "launcher": config.hydra.runtime.choices.get("hydra/launcher"),
            "sweeper": config.hydra.runtime.choices.get("hydra/sweeper"),
            "command_overrides": list(config.hydra.overrides.task),
            "swept": swept,
            "jobs_completed": sum(job["status"] == "COMPLETED" for job in jobs),
            "jobs_failed": sum(job["status"] == "FAILED" for job in jobs),
            "jobs": jobs,
        }
        write_json_atomic(sweep_dir / SWEEP_MANIFEST, manifest)


def swept_parameters(overrides_per_job: list[list[str]]) -> dict[str, list[str]]:
    """The override keys whose value differs between jobs, with their values in first-seen order."""
    values: dict[str, list[str | None]] = {}
    parsed = [dict(o.split("=", 1) for o in overrides if "=" in o) for overrides in overrides_per_job]
    for key in dict.fromkeys(key for job in parsed for key in job):
        seen = list(dict.fromkeys(job.get(key) for job in parsed))
        if len(seen) > 1:
            values[key] = seen
    return values


def _safe_read(job_dir: Path) -> JobRecord | None:
    """Like read_job_record, but a corrupt record only warns: callbacks must not fail a finished job."""
    try:
        return read_job_record(job_dir)
    except ConfigError as err:
        log.warning("%s", err)
        return None
