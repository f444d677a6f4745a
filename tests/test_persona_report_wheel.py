"""persona_report reads the jobs with the wheel they were probed with, not its own default."""

from __future__ import annotations

from pathlib import Path

import pytest

from emotion_probe.errors import ConfigError
from experiments.reports.persona_bias import _jobs_wheel, _persona_jobs


def _job(root: Path, name: str, wheel: str | None) -> None:
    job = root / name
    (job / ".hydra").mkdir(parents=True)
    (job / "metrics.json").write_text("{}")
    (job / "predictions.parquet").write_bytes(b"")
    config = "task: experiments.persona_bias.run\n" + (f"probe:\n  wheel: {wheel}\n" if wheel is not None else "")
    (job / ".hydra" / "config.yaml").write_text(config)


def test_the_jobs_wheel_wins_over_the_commands_own(tmp_path):
    _job(tmp_path, "0", "ekman")
    _job(tmp_path, "1", "ekman")
    assert _jobs_wheel(_persona_jobs(tmp_path), fallback="shaver").name == "ekman"


def test_jobs_on_different_wheels_are_refused(tmp_path):
    _job(tmp_path, "0", "ekman")
    _job(tmp_path, "1", "plutchik")
    with pytest.raises(ConfigError, match="different wheels \\(ekman, plutchik\\)"):
        _jobs_wheel(_persona_jobs(tmp_path), fallback="shaver")


def test_the_commands_wheel_serves_only_when_no_job_recorded_one(tmp_path):
    _job(tmp_path, "0", None)
    assert _jobs_wheel(_persona_jobs(tmp_path), fallback="plutchik").name == "plutchik"


def test_other_experiments_jobs_in_the_sweep_are_not_read(tmp_path):
    _job(tmp_path, "0", "ekman")
    other = tmp_path / "1"
    (other / ".hydra").mkdir(parents=True)
    (other / "metrics.json").write_text("{}")
    (other / "predictions.parquet").write_bytes(b"")
    (other / ".hydra" / "config.yaml").write_text("task: experiments.hierarchy.run\nprobe:\n  wheel: plutchik\n")
    assert _jobs_wheel(_persona_jobs(tmp_path), fallback="shaver").name == "ekman"


def test_the_hierarchy_report_reads_only_hierarchy_jobs_of_a_mixed_sweep(tmp_path):
    import numpy as np
    from hydra import compose, initialize_config_module
    from omegaconf import OmegaConf

    from experiments.reports import hierarchy as hierarchy_report
    from experiments.runs import hierarchy

    def cfg(*overrides):
        with initialize_config_module(config_module="conf", version_base="1.3"):
            return compose(config_name="config", overrides=list(overrides))

    prompts = tmp_path / "prompts.txt"
    prompts.write_text("I won.\nIt rained.\n")
    sweep = tmp_path / "sweep"
    run = cfg("experiment=hierarchy", "model=scripted", f"scenarios={prompts}", "hierarchy.bootstrap=0",
              "hierarchy.baseline_samples=10", "progress=false", f"paths.output_dir={sweep / '0'}")
    OmegaConf.update(run, "model.continuation_logprobs", {" joy": float(np.log(0.5)), " hope": float(np.log(0.5))},
                     force_add=True)
    hierarchy.run(run)
    (sweep / "0" / ".hydra").mkdir(exist_ok=True)
    (sweep / "0" / ".hydra" / "config.yaml").write_text("task: experiments.hierarchy.run\n")
    # A persona_bias job beside it: its metrics.json is not a hierarchy's, and reading it would fail.
    _job(sweep, "1", "shaver")
    frame = hierarchy_report.report(cfg("experiment=hierarchy_report", f"sweep_dir={sweep}",
                                 f"paths.output_dir={tmp_path / 'report'}"))
    assert list(frame["job_dir"]) == [str(sweep / "0")]
