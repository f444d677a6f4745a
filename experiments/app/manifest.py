"""`<run dir>/manifest.json`: what ran, written by every run and read back by the report, one schema for both.

A manifest records the emolab version and git commit, the resolved config, the models (ids, parameter
counts, calls and tokens per role), the seeds and wall time per graph node, and whatever the experiment
adds (a negotiation: its summary and the scenario as played; a probe: its probe settings). Never
secrets: configs hold only the names of environment variables with keys, backend descriptions leave
keys out, and URL credentials are masked on the way to disk.

Each manifest carries `manifest_version`; one written by an older emolab goes through `upgrade` (one
function per version) as it is validated, so readers never branch on what an old file lacks.
"""

from __future__ import annotations

import platform
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Literal

from omegaconf import DictConfig, OmegaConf
from pydantic import BaseModel, ConfigDict, model_validator

from emotion_probe.models.base import ModelBackend
from emotion_probe.redaction import redacted
from emotion_probe.versions import Upgrade, upgraded

MANIFEST_VERSION = 2


class ModelRecord(BaseModel):
    """One role's model; everything the backend described is kept."""

    model_config = ConfigDict(extra="allow")

    usage: dict[str, Any] | None = None  # calls and tokens (experiments with no model calls have none)


def _from_version_1(data: dict[str, Any]) -> dict[str, Any]:
    """Version 1 (no `manifest_version`): the same record, where the earliest files lack the fields emolab
    added to it over time (usage, wall time, the host and job)."""
    return {"manifest_version": 2, **{key: None for key in ("emolab", "git", "python", "host", "job", "seeds")},
            **data}


#: version -> the function that lifts a manifest of that version to the next one.
UPGRADES: dict[int, Upgrade] = {1: _from_version_1}


class RunManifest(BaseModel):
    """A run's manifest.json. Fields beyond these are what the experiment added, kept as they are."""

    model_config = ConfigDict(extra="allow")

    manifest_version: Literal[2]
    written_at: str
    emolab: str | None
    git: dict[str, Any] | None
    python: str | None
    host: str | None
    job: dict[str, Any] | None
    seeds: dict[str, Any] | None
    config: dict[str, Any]
    models: dict[str, ModelRecord] | None = None
    node_wall_time_s: dict[str, Any] | None = None
    wall_time_s: float | None = None

    @model_validator(mode="before")
    @classmethod
    def _upgrade(cls, data: Any) -> Any:
        return upgraded(data, "manifest_version", MANIFEST_VERSION, UPGRADES) if isinstance(data, dict) else data


def write_manifest(
    out_dir: Path,
    cfg: DictConfig,
    *,
    models: dict[str, ModelBackend] | None = None,
    timings: Any = None,
    started: float | None = None,
    **extra: Any,
) -> Path:
    """Write `<out_dir>/manifest.json` (atomically, credentials masked) and return its path."""
    from importlib.metadata import version

    from emotion_probe.models.wrappers.core import usage_of
    from experiments.app.common import git_commit, hydra_job, seeds_in, write_json_atomic

    fields: dict[str, Any] = {
        "manifest_version": MANIFEST_VERSION,
        "written_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "emolab": version("emolab"),
        "git": git_commit(),
        "python": platform.python_version(),
        "host": platform.node(),
        "job": hydra_job(),
        "seeds": seeds_in(cfg),
        "config": redacted(OmegaConf.to_container(cfg, resolve=True)),
    }
    if models:
        # `identity`: the config the model was built from with device and dtype as it ran them (not `auto`).
        fields["models"] = {role: {**model.describe(), "identity": model.identity(), "usage": usage_of(model)}
                            for role, model in models.items()}
    if timings is not None:
        fields["node_wall_time_s"] = timings.summary()
    if started is not None:
        fields["wall_time_s"] = round(time.perf_counter() - started, 3)
    manifest = RunManifest.model_validate({**fields, **extra})  # the schema the report reads it back with
    path = out_dir / "manifest.json"
    write_json_atomic(path, manifest.model_dump(exclude_unset=True))
    return path
