"""The Hydra callback that makes runs and sweeps resumable and self-describing (conf/hydra/default.yaml).

`on_job_end` runs in the job's own process, wherever the launcher put it (a joblib worker, a
Slurm node, a Ray worker), so each job records its own outcome in `<job dir>/job.json`
(experiments.app.run_records). `on_multirun_end` runs where the sweep was launched and merges those
records into `<sweep dir>/manifest.json`.

The callback also holds each run dir's lock (experiments.app.run_lock) from the start of a run (or a
sweep job, or a sweep in its sweep dir) to its end, and the lock of the dir the job writes
(`paths.output_dir`) when that is elsewhere.
"""

from __future__ import annotations

import json
import logging
import os
import platform
import time
from pathlib import Path
from typing import Any

from hydra.core.hydra_config import HydraConfig
from hydra.core.utils import JobReturn, JobStatus
from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from emotion_probe.errors import ConfigError
from emotion_probe.terminal import printable
from experiments.app.common import git_commit, write_json_atomic
from experiments.app.fingerprints import FINGERPRINT_VERSION, job_fingerprint, same_settings
from experiments.app.run_lock import hold_run_dir, release_lock
from experiments.app.run_records import JOB_FILE, JobRecord, read_job_record, utc_now

log = logging.getLogger(__name__)

SWEEP_MANIFEST = "manifest.json"


def _jsonable(value: Any) -> dict[str, Any] | None:
    """A job's return value as stored in job.json: dicts that survive JSON, otherwise nothing.

    A result that is left out is said in the log: a rerun that skips this job returns {} for it.
    Values JSON has no type for (a path, a timestamp) are stored as their text.
    """
    if value is None:
        return None
    if not isinstance(value, dict):
        # A table (the probe's) is expected here, and the job dir holds it already: a debug line, since an
        # info line would print on every run of an experiment that returns one.
        log.debug("the job's result (a %s) is not a dict; job.json records no result for it, the job dir holds "
                  "its outputs", type(value).__name__)
        return None
    try:
        return json.loads(json.dumps(value, default=str))
    except (TypeError, ValueError) as err:
        log.warning("the job's result cannot be stored as JSON (%s); job.json records no result for it", err)
        return None


def _written_dir(config: DictConfig) -> Path | None:
    """The dir the job writes (`paths.output_dir`, read by experiments.app.common.output_dir); None when the
    config has none, or it does not resolve (the task then stops on it with its own error)."""
    from omegaconf.errors import OmegaConfBaseException

    try:
        value = OmegaConf.select(config, "paths.output_dir", throw_on_missing=False)
    except OmegaConfBaseException:
        return None
    return Path(os.path.abspath(str(value))) if value is not None else None


class SweepCallback(Callback):
    """Writes `job.json` per job and `manifest.json` per sweep (see the module docstring), and holds each
    run dir's lock: a single run's from its start to its end, each sweep job's for the job, and the sweep
    dir's for the sweep (so a second sweep into it stops at once); and, for the job, the lock of the dir it
    writes (`paths.output_dir`) where that is not its run dir."""

    def __init__(self) -> None:
        self._job_started: float | None = None
        self._job_started_at: str | None = None
        self._sweep_started_at: str | None = None
        # The lock files this callback took (plain paths: the callback is pickled to launcher workers).
        self._run_lock: str | None = None
        self._job_lock: str | None = None
        self._output_lock: str | None = None
        self._sweep_lock: str | None = None

    # ------------------------------------------------------------------ per run
    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        # Before Hydra writes its .hydra/ files and log into the dir: a refused second run leaves them alone.
        # The run dir may name ${hydra:...} values, which resolve only once Hydra's config is set (run_job
        # sets the same config right after this).
        HydraConfig.instance().set_config(config)
        self._run_lock = hold_run_dir(config, Path(os.path.abspath(str(config.hydra.run.dir))))

    def on_run_end(self, config: DictConfig, **kwargs: Any) -> None:
        if self._run_lock is not None:
            release_lock(Path(self._run_lock))
            self._run_lock = None

    # ------------------------------------------------------------------ per job
    def on_job_start(self, config: DictConfig, **kwargs: Any) -> None:
        self._job_started = time.perf_counter()
        self._job_started_at = utc_now()
        # A sweep job's dir (a single run's is held since on_run_start, which this finds).
        self._job_lock = hold_run_dir(config, Path(config.hydra.runtime.output_dir))
        # The job writes where `paths.output_dir` says, which a user may point away from its run dir: two
        # runs with their own run dirs and one output dir would write the same files. Taken before the task
        # runs, so a refused run writes nothing there; None when it is the run dir, held already.
        written = _written_dir(config)
        if written is not None:
            self._output_lock = hold_run_dir(config, written)

    def on_job_end(self, config: DictConfig, job_return: JobReturn, **kwargs: Any) -> None:
        try:
            self._record_job(config, job_return)
        finally:
            for attribute in ("_output_lock", "_job_lock"):
                held = getattr(self, attribute)
                if held is not None:
                    release_lock(Path(held))
                    setattr(self, attribute, None)

    def _record_job(self, config: DictConfig, job_return: JobReturn) -> None:
        hydra = HydraConfig.get()
        job_dir = Path(hydra.runtime.output_dir)
        fingerprint = job_fingerprint(config)
        previous = _safe_read(job_dir)
        failed = job_return.status != JobStatus.COMPLETED
        if not failed and previous is not None and previous.status == "COMPLETED" \
                and same_settings(previous.fingerprint, previous.fingerprint_version, config):
            # A rerun that skipped this finished job: keep the original record, note the visit, and record
            # its fingerprint as FINGERPRINT_VERSION makes it, so the next rerun compares only the keys the job reads.
            write_json_atomic(job_dir / JOB_FILE, {**previous.model_dump(), "fingerprint": fingerprint,
                                                   "fingerprint_version": FINGERPRINT_VERSION,
                                                   "skipped_reruns": previous.skipped_reruns + 1})
            return
        record = JobRecord(
            status="FAILED" if failed else "COMPLETED",
            num=OmegaConf.select(hydra.job, "num", throw_on_missing=False),
            overrides=list(hydra.overrides.task),
            fingerprint=fingerprint,
            fingerprint_version=FINGERPRINT_VERSION,
            output_dir=str(job_dir),
            started_at=self._job_started_at,
            finished_at=utc_now(),
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
        self._sweep_started_at = utc_now()
        self._sweep_lock = hold_run_dir(config, Path(os.path.abspath(str(config.hydra.sweep.dir))))
        self._write_sweep_manifest(config, finished=False)

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        try:
            self._write_sweep_manifest(config, finished=True)
        finally:
            if self._sweep_lock is not None:
                release_lock(Path(self._sweep_lock))
                self._sweep_lock = None

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
            "written_at": utc_now(),
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


#: The corrupt job records this process warned about: the sweep manifest reads every record at the start
#: of a sweep and again at its end, and one bad file is one warning.
_WARNED: set[str] = set()


def _safe_read(job_dir: Path) -> JobRecord | None:
    """Like read_job_record, but a corrupt record only warns (once): callbacks must not fail a finished job."""
    try:
        return read_job_record(job_dir)
    except ConfigError as err:
        message = printable(err)
        if message not in _WARNED:
            _WARNED.add(message)
            log.warning("%s", message)
        return None
