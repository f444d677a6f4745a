"""The shipped Hydra launcher configs (conf/hydra/launcher/): each composes, builds its plugin's launcher,
and runs a small real sweep offline.

- joblib, submitit_local and ray each run `emolab -m experiment=probe ...` with two jobs in a subprocess,
  and the test checks both the jobs' tables and traces that only that launcher leaves.
- submitit_slurm cannot run here (no Slurm). Its real plugin code renders the sbatch script from our
  config up to the `sbatch` call, and submitit_local runs the same launcher class end to end.

Hydra 1.3 merges a config file over a ConfigStore schema of the same name ("automatic schema
matching", deprecated but still in 1.3.8), so our files are validated against each plugin's
schema. Each file is also complete on its own, which the standalone tests check with the schema
taken out of the ConfigStore.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml
from hydra import compose, initialize_config_module
from hydra.core.config_store import ConfigStore
from hydra.core.plugins import Plugins
from hydra.utils import get_class, instantiate
from omegaconf import OmegaConf

CONF = Path(__file__).resolve().parents[1] / "conf"
EMOLAB = [sys.executable, "-m", "experiments.app.main"]

LAUNCHERS = {
    "joblib": "hydra_plugins.hydra_joblib_launcher.joblib_launcher.JoblibLauncher",
    "submitit_local": "hydra_plugins.hydra_submitit_launcher.submitit_launcher.LocalLauncher",
    "submitit_slurm": "hydra_plugins.hydra_submitit_launcher.submitit_launcher.SlurmLauncher",
    "ray": "hydra_plugins.hydra_ray_launcher.ray_launcher.RayLauncher",
}
SCHEMAS = {
    "joblib": "hydra_plugins.hydra_joblib_launcher.config.JobLibLauncherConf",
    "submitit_local": "hydra_plugins.hydra_submitit_launcher.config.LocalQueueConf",
    "submitit_slurm": "hydra_plugins.hydra_submitit_launcher.config.SlurmQueueConf",
    "ray": "hydra_plugins.hydra_ray_launcher._config.RayLauncherConf",
}
WHEEL_SIZES = {"ekman": 6, "plutchik": 24}
TEXTS = [
    "I won the regional chess final!",
    "My dog died this morning.",
    "Someone keyed my car, again.",
    "The exam results come out tomorrow.",
    "My best friend threw me a surprise party.",
    "I heard footsteps behind me in the dark alley.",
]


def _compose(*overrides: str):
    with initialize_config_module(config_module="conf", version_base="1.3", job_name="main"):
        return compose(config_name="config", overrides=["experiment=probe", *overrides], return_hydra_config=True)


def test_every_shipped_launcher_is_tested_here():
    # A new launcher config must get a run below (or a documented reason why it cannot); RQ is not
    # shipped at all: its plugin is broken on Python 3.11 and newer.
    assert sorted(p.stem for p in (CONF / "hydra" / "launcher").glob("*.yaml")) == sorted(LAUNCHERS)


@pytest.mark.parametrize("name", sorted(LAUNCHERS))
def test_launcher_config_merges_over_the_plugin_schema(name, tmp_path):
    cfg = _compose(f"hydra/launcher={name}", f"hydra.sweep.dir={tmp_path}")
    node = cfg.hydra.launcher
    assert OmegaConf.get_type(node) is get_class(SCHEMAS[name]), "Hydra 1.3.8 merges the file over the plugin's schema"
    launcher = instantiate(node)
    assert type(launcher) is get_class(LAUNCHERS[name])


@pytest.mark.parametrize("name", sorted(LAUNCHERS))
def test_launcher_config_is_complete_without_the_plugin_schema(name, tmp_path):
    Plugins.instance()  # registers the plugins' schemas, so that one can be taken out below
    group = ConfigStore.instance().repo["hydra"]["launcher"]
    schema = group.pop(f"{name}.yaml")
    try:
        cfg = _compose(f"hydra/launcher={name}", f"hydra.sweep.dir={tmp_path}")
    finally:
        group[f"{name}.yaml"] = schema
    node = cfg.hydra.launcher
    assert OmegaConf.get_type(node) is dict, "with no schema of that name, the file alone is the config"
    launcher = instantiate(node)
    assert type(launcher) is get_class(LAUNCHERS[name])
    ours = yaml.safe_load((CONF / "hydra" / "launcher" / f"{name}.yaml").read_text())
    assert set(OmegaConf.to_container(node)) == set(ours)


def test_ray_launcher_config_keeps_object_store_memory_unset():
    # The plugin sets object_store_memory to 75 MB unless the key is present; with a value,
    # ray.init(address="auto") refuses to join a cluster.
    init = _compose("hydra/launcher=ray").hydra.launcher.ray.init
    assert "object_store_memory" in init and init.object_store_memory is None
    assert init.address is None and init.num_cpus is None


def test_slurm_config_renders_the_sbatch_script(tmp_path, monkeypatch):
    """The plugin's own launch(), from our config, up to the point where it would call sbatch."""
    import submitit.slurm.slurm as slurm

    cfg = _compose("hydra/launcher=submitit_slurm", f"hydra.sweep.dir={tmp_path}", "hydra.launcher.partition=gpu",
                   "hydra.launcher.setup=[module load cuda]")
    launcher = instantiate(cfg.hydra.launcher)
    launcher.setup(hydra_context=None, task_function=print, config=cfg)
    scripts: list[str] = []

    class Submitted(Exception):
        pass

    def capture(executor, command: str):
        scripts.append(executor._make_submission_file_text(command, "test"))
        raise Submitted

    monkeypatch.setattr(slurm.SlurmExecutor, "_submit_command", capture)
    # submitit refuses to build a Slurm executor where `srun` is not on PATH; this one is never run.
    fake_bin = tmp_path / "bin"
    fake_bin.mkdir()
    (fake_bin / "srun").write_text("#!/bin/sh\nexit 1\n")
    (fake_bin / "srun").chmod(0o755)
    monkeypatch.setenv("PATH", f"{fake_bin}{os.pathsep}{os.environ['PATH']}")
    with pytest.raises(Submitted):
        launcher.launch([["probe.wheel=ekman"], ["probe.wheel=plutchik"]], initial_job_idx=0)
    (script,) = scripts
    for line in ["#SBATCH --partition=gpu", "#SBATCH --gpus-per-node=1", "#SBATCH --cpus-per-task=8",
                 "#SBATCH --mem=32GB", "#SBATCH --time=240", "#SBATCH --job-name=emolab-probe",
                 "#SBATCH --array=0-1%2", "#SBATCH --signal=USR2@120", "module load cuda"]:
        assert line in script, f"{line!r} missing from:\n{script}"
    assert f"{tmp_path}/.submitit/" in script


# ------------------------------------------------------------------------------------ real sweeps
def _scenarios(tmp_path: Path) -> Path:
    path = tmp_path / "six.jsonl"
    path.write_text("\n".join(json.dumps({"id": f"s{i}", "text": text}) for i, text in enumerate(TEXTS)), encoding="utf-8")
    return path


def _sweep(tmp_path: Path, launcher: str, *extra: str) -> tuple[subprocess.CompletedProcess, Path, int]:
    sweep_dir = tmp_path / "sweep"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "RAY_AUTH_MODE": "disabled",
           "EMOLAB_RESPONSE_CACHE": str(tmp_path / "responses.sqlite")}
    env.pop("RAY_ADDRESS", None)
    command = [*EMOLAB, "-m", "experiment=probe", "model=smollm2_random", f"scenarios={_scenarios(tmp_path)}",
               "probe.wheel=ekman,plutchik", f"hydra/launcher={launcher}", f"hydra.sweep.dir={sweep_dir}",
               "progress=false", *extra]
    process = subprocess.Popen(command, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        stdout, stderr = process.communicate(timeout=300)
    finally:
        process.kill()
    result = subprocess.CompletedProcess(command, process.returncode, stdout, stderr)
    assert result.returncode == 0, result.stderr[-4000:]
    return result, sweep_dir, process.pid


def _check_jobs(sweep_dir: Path, launcher: str, launcher_pid: int) -> list[dict]:
    """Both jobs wrote their table; returns each job's Hydra job node (id, num) as the launcher set it."""
    jobs = []
    for num, wheel in enumerate(["ekman", "plutchik"]):
        job_dir = sweep_dir / str(num)
        table = pd.read_parquet(job_dir / "distributions.parquet")
        assert table.shape == (len(TEXTS), 2 + WHEEL_SIZES[wheel])
        assert table["id"].tolist() == [f"s{i}" for i in range(len(TEXTS))]
        assert table.iloc[:, 2:].sum(axis=1).round(6).eq(1).all()
        hydra = yaml.safe_load((job_dir / ".hydra" / "hydra.yaml").read_text())["hydra"]
        assert hydra["runtime"]["choices"]["hydra/launcher"] == launcher
        jobs.append(hydra["job"])
    # The sweep callback merged every job's job.json into the sweep's manifest.
    manifest = json.loads((sweep_dir / "manifest.json").read_text())
    assert manifest["status"] == "finished"
    assert manifest["launcher"] == launcher
    assert manifest["jobs_completed"] == 2 and manifest["jobs_failed"] == 0
    assert [job["status"] for job in manifest["jobs"]] == ["COMPLETED", "COMPLETED"]
    assert [job["params"] for job in manifest["jobs"]] == [{"probe.wheel": "ekman"}, {"probe.wheel": "plutchik"}]
    # The jobs ran in other processes than the one that launched the sweep.
    assert launcher_pid not in {job["pid"] for job in manifest["jobs"]}
    return jobs


@pytest.mark.embedded
def test_joblib_sweep_runs_jobs_in_worker_processes(tmp_path):
    result, sweep_dir, pid = _sweep(tmp_path, "joblib")
    assert "Joblib.Parallel(n_jobs=2,backend=loky" in result.stdout + result.stderr
    jobs = _check_jobs(sweep_dir, "joblib", pid)
    # The joblib launcher names jobs <job name>_<index>; the basic launcher would give "0" and "1".
    assert [job["id"] for job in jobs] == ["main_0", "main_1"]


@pytest.mark.embedded
def test_submitit_local_sweep_runs_real_submitit_jobs(tmp_path):
    result, sweep_dir, pid = _sweep(tmp_path, "submitit_local")
    assert "Submitit 'local' sweep output dir" in result.stdout + result.stderr
    jobs = _check_jobs(sweep_dir, "submitit_local", pid)
    # Each job's id is its submitit job id, and submitit kept that job's pickled result and logs.
    for job in jobs:
        folder = sweep_dir / ".submitit" / str(job["id"])
        assert (folder / f"{job['id']}_0_result.pkl").is_file()
        assert "distributions.parquet" in (folder / f"{job['id']}_0_log.out").read_text()


@pytest.mark.embedded
def test_ray_sweep_runs_jobs_as_ray_tasks(tmp_path):
    result, sweep_dir, pid = _sweep(tmp_path, "ray", "hydra.launcher.ray.init.num_cpus=2")
    output = result.stdout + result.stderr
    assert "Ray Launcher is launching 2 jobs" in output
    assert "'num_cpus': 2" in output and "'object_store_memory': None" in output
    # Ray forwards a task's output prefixed with the remote function's name and pid.
    assert "(_run_job pid=" in output
    jobs = _check_jobs(sweep_dir, "ray", pid)
    assert [job["id"] for job in jobs] == ["job_id_for_0", "job_id_for_1"]
