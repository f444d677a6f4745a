"""What a run dir records about the runs in it, and the checks made on it before a run takes it up again.

`<job dir>/job.json` (JobRecord) is a sweep job's outcome, written by the sweep callback when the job ends;
`finished_job` reads it back so that a rerun of the sweep skips jobs that completed with the same config
and the same input files. `<run dir>/run_settings.json` (RunSettingsFile) is written by `claim_run_dir`
when a resumable run starts, so that a resume with other settings or other input files is refused.
"""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Literal

from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from emotion_probe.errors import ConfigError
from emotion_probe.terminal import printable
from experiments.app.common import changed_inputs, current_inputs, write_json_atomic
from experiments.app.fingerprints import FINGERPRINT_VERSION, job_fingerprint, other_settings, same_settings

JOB_FILE = "job.json"
#: Written by claim_run_dir when a resumable run starts: the fingerprint and input hashes a resume must match.
RUN_SETTINGS_FILE = "run_settings.json"


class JobRecord(BaseModel):
    """`<job dir>/job.json`, as written by `on_job_end` and read back on rerun and by the report."""

    model_config = ConfigDict(extra="forbid")

    status: Literal["COMPLETED", "FAILED"]
    num: int | None
    overrides: list[str]
    fingerprint: str
    # A record without a version is version 1 (see FINGERPRINT_VERSION).
    fingerprint_version: int = 1
    output_dir: str
    started_at: str | None
    finished_at: str
    wall_time_s: float | None
    host: str
    pid: int
    error: str | None = None
    result: dict[str, Any] | None = None
    skipped_reruns: int = 0


def read_job_record(job_dir: Path) -> JobRecord | None:
    path = job_dir / JOB_FILE
    if not path.exists():
        return None
    try:
        return JobRecord.model_validate_json(path.read_text(encoding="utf-8"))
    except ValidationError as err:
        problem = err.errors()[0]
        # A key of the file is the file's text: escaped, as it reaches a console and logs.
        field = printable(".".join(str(part) for part in problem["loc"])) or "(file)"
        raise ConfigError(f"{path} is corrupt ({field}: {printable(problem['msg'])}); delete it to rerun that job") \
            from None


class RunSettingsFile(BaseModel):
    """`<run dir>/run_settings.json`, as claim_run_dir writes it and reads it back."""

    model_config = ConfigDict(extra="ignore")

    fingerprint: str
    fingerprint_version: int = 1  # a file without a version is version 1 (see FINGERPRINT_VERSION)
    overrides: list[str] = Field(default_factory=list)
    # Content hashes of the files the run read (experiments.app.common.input_hashes); None: the file records
    # none, so there is nothing to compare.
    inputs: dict[str, str] | None = None


def read_run_settings(out_dir: Path) -> RunSettingsFile | None:
    path = out_dir / RUN_SETTINGS_FILE
    if not path.exists():
        return None
    try:
        return RunSettingsFile.model_validate_json(path.read_text(encoding="utf-8"))
    except (ValidationError, UnicodeDecodeError) as err:
        reason = f"{type(err).__name__}: {err.errors()[0]['msg']}" if isinstance(err, ValidationError) else str(err)
        raise ConfigError(f"{path} is corrupt ({reason}); delete it, or run into a new dir") from None


def _refuse_changed_inputs(where: str, recorded: dict[str, str] | None, now: dict[str, str]) -> None:
    """A ConfigError naming the input files that differ from those the run in `where` read, if any."""
    changed = changed_inputs(recorded, now)
    if changed:
        raise ConfigError(f"{where} made from other input files: {'; '.join(changed)}; results of other inputs "
                          "are never merged: run into a new directory, or restore the files")


def finished_job(cfg: DictConfig) -> dict[str, Any] | None:
    """In a multirun, the stored result of this job if it already completed with the same config and inputs.

    Returns None when the job must run. A completed job with a *different* config in the same dir is
    refused: the sweep's parameters changed, and mixing results would be silent corruption. So is one
    whose input files (as its run_settings.json recorded them) changed since: its result would be stale.
    """
    if not HydraConfig.initialized() or HydraConfig.get().mode != RunMode.MULTIRUN:
        return None
    job_dir = Path(HydraConfig.get().runtime.output_dir)
    record = read_job_record(job_dir)
    if record is None or record.status != "COMPLETED":
        return None
    if not same_settings(record.fingerprint, record.fingerprint_version, cfg):
        raise ConfigError(
            f"{job_dir} holds a finished job with {other_settings(record.fingerprint_version)} "
            f"({', '.join(record.overrides) or 'no overrides'}); rerun the sweep with the same parameters, "
            f"or into a new hydra.sweep.dir, or delete {job_dir / JOB_FILE} to run this job again"
        )
    claimed = read_run_settings(job_dir)
    if claimed is not None and claimed.inputs is not None:
        # The files as they are now, read where the job read them: a config that names other files has
        # another fingerprint already.
        _refuse_changed_inputs(f"{job_dir} holds a finished job", claimed.inputs, current_inputs(claimed.inputs))
    return record.result or {}


def claim_run_dir(cfg: DictConfig, out_dir: Path, inputs: dict[str, str] | None = None) -> None:
    """Refuse to resume into `out_dir` when it holds work made with other settings or from other input
    files; else record ours (the fingerprint, the overrides and `inputs`, the content hashes of the files
    this run reads: experiments.app.common.input_hashes).

    A resumable experiment (a negotiation picks up its checkpointed trials, a probe its finished parts)
    calls this before it reads anything back, in a single run as in a multirun. It is the check
    `finished_job` makes for a finished sweep job, made at the start instead of at the end, so it also
    covers a run that was killed (it has no job.json yet) and a single run rerun with `hydra.run.dir`
    (which `finished_job` leaves alone). A refusal names the overrides that differ and the files that
    changed (one edited in place changes no override). Outside a Hydra run (a test calling the task with
    a composed config) there is no command line to compare, and nothing is checked.
    """
    if not HydraConfig.initialized():
        return
    fingerprint = job_fingerprint(cfg)
    overrides = list(HydraConfig.get().overrides.task)
    stored = read_run_settings(out_dir)
    changed = changed_inputs(stored.inputs, inputs) if stored is not None and inputs is not None else []
    earlier: list[tuple[str, int, list[str]]] = []
    if stored is not None:
        earlier.append((stored.fingerprint, stored.fingerprint_version, stored.overrides))
    record = read_job_record(out_dir)  # a finished job's record, which a dir may hold without run_settings.json
    if record is not None:
        earlier.append((record.fingerprint, record.fingerprint_version, record.overrides))
    for stored_fingerprint, version, stored_overrides in earlier:
        if not same_settings(stored_fingerprint, version, cfg):
            # Named with the overrides that differ, and the files, when a config file was edited in place.
            files = f" and from other input files: {'; '.join(changed)}" if changed else ""
            raise ConfigError(
                f"{out_dir} holds a run with {other_settings(version)} ({', '.join(stored_overrides) or 'no overrides'}; "
                f"now {', '.join(overrides) or 'no overrides'}){files}; resume it with the same settings, "
                "or run into a new directory"
            )
    if stored is not None and inputs is not None:
        _refuse_changed_inputs(f"{out_dir} holds a run", stored.inputs, inputs)
    # Recorded on the first run, and again where the record lacks what this version records (a version-2
    # fingerprint, the inputs), so the next resume is checked in full.
    if stored is None or stored.fingerprint_version < FINGERPRINT_VERSION or (stored.inputs is None and inputs is not None):
        out_dir.mkdir(parents=True, exist_ok=True)
        write_json_atomic(out_dir / RUN_SETTINGS_FILE, {
            "fingerprint": fingerprint, "fingerprint_version": FINGERPRINT_VERSION,
            "overrides": stored.overrides if stored is not None else overrides,
            "inputs": inputs, "written_at": utc_now()})


def utc_now() -> str:
    """The time as run records write it: UTC, ISO 8601, to the second."""
    return datetime.now(timezone.utc).isoformat(timespec="seconds")
