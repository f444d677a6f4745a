"""persona_report reads the jobs with the wheel they were probed with, not its own default."""

from __future__ import annotations

from pathlib import Path

import pytest

from emotion_probe.errors import ConfigError
from experiments.persona_report import _jobs_wheel


def _job(root: Path, name: str, wheel: str | None) -> None:
    job = root / name
    (job / ".hydra").mkdir(parents=True)
    (job / "metrics.json").write_text("{}")
    (job / "predictions.parquet").write_bytes(b"")
    if wheel is not None:
        (job / ".hydra" / "config.yaml").write_text(f"probe:\n  wheel: {wheel}\n")


def test_the_jobs_wheel_wins_over_the_commands_own(tmp_path):
    _job(tmp_path, "0", "ekman")
    _job(tmp_path, "1", "ekman")
    assert _jobs_wheel(tmp_path, fallback="shaver").name == "ekman"


def test_jobs_on_different_wheels_are_refused(tmp_path):
    _job(tmp_path, "0", "ekman")
    _job(tmp_path, "1", "plutchik")
    with pytest.raises(ConfigError, match="different wheels \\(ekman, plutchik\\)"):
        _jobs_wheel(tmp_path, fallback="shaver")


def test_the_commands_wheel_serves_only_when_no_job_recorded_one(tmp_path):
    _job(tmp_path, "0", None)
    assert _jobs_wheel(tmp_path, fallback="plutchik").name == "plutchik"
