"""The `emolab` command end to end, as a user runs it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

EMOLAB = [sys.executable, "-m", "experiments.app.main"]


def _run(*args: str, cwd: Path, env: dict | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", **(env or {})}
    return subprocess.run([*EMOLAB, *args], cwd=cwd, capture_output=True, text=True, env=env, timeout=600)


def _scenario_file(tmp_path: Path) -> Path:
    path = tmp_path / "mine.jsonl"
    rows = [
        {"id": "win", "text": "I won the regional chess final!", "emotion": "triumph", "primary": "joy"},
        {"id": "loss", "text": "My dog died this morning.", "emotion": "grief", "primary": "sadness"},
        {"id": "keyed", "text": "Someone keyed my car, again.", "emotion": "rage", "primary": "anger"},
    ]
    path.write_text("\n".join(json.dumps(r) for r in rows), encoding="utf-8")
    return path


@pytest.mark.embedded
def test_probe_experiment_writes_its_table(tmp_path):
    run_dir = tmp_path / "run"
    result = _run("experiment=probe", f"scenarios={_scenario_file(tmp_path)}", f"hydra.run.dir={run_dir}",
                  "progress=false", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    table = pd.read_parquet(run_dir / "distributions.parquet")
    assert table.shape == (3, 4 + 135) and table["id"].tolist() == ["win", "loss", "keyed"]
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert manifest["probe"]["scored_with"] == "transformers-packed"
    assert manifest["model"]["parameters"] == 134_515_008
    assert "top-1 accuracy" in result.stdout


def _one_error_line(stderr: str) -> str:
    """The `error:` line, checked to be the first line of stderr and the only one."""
    lines = stderr.splitlines()
    assert lines and lines[0].startswith("error: "), stderr[-3000:]
    assert sum(line.startswith("error:") for line in lines) == 1, stderr[-3000:]
    assert "Traceback" not in stderr and "HYDRA_FULL_ERROR" not in stderr, stderr[-3000:]
    return lines[0]


@pytest.mark.parametrize(
    "overrides,message",
    [
        (["probe.template=no slot"], "probe.template: Value error, the template must contain the placeholder {text}"),
        (["probe.wheel=nope"], "unknown wheel 'nope'"),
        (["scenarios=/no/such/file.jsonl"], "scenario file not found: /no/such/file.jsonl"),
        (["model=transformers"], "model config needs a value for: path"),
    ],
)
def test_bad_input_is_one_clear_line(tmp_path, overrides, message):
    scenarios = f"scenarios={_scenario_file(tmp_path)}"
    result = _run("experiment=probe", f"hydra.run.dir={tmp_path / 'run'}", scenarios, *overrides, cwd=tmp_path)
    assert result.returncode == 2
    assert message in _one_error_line(result.stderr)


@pytest.mark.parametrize(
    "content,message",
    [
        (b'{"id": "a", "text": "fine"}\n{"id": "b", "text": "   "}\n', "line 2: field text: Value error, text is empty"),
        (b'{"id": "a", "text": "fine"}\n{"id": "b", "text": "caf\xe9"}\n', "line 2 is not valid UTF-8"),
        (b'{"id": "a", "text": "fine"}\n{"id": "b", "text": \n', "line 2 is not valid JSON"),
        (b'{"id": "a", "text": "fine"}\n{"id": "a", "text": "again"}\n', "line 2: duplicate scenario id 'a'"),
        (b"\n\n", "holds no scenarios"),
    ],
)
def test_bad_scenario_file_is_one_line_naming_the_line(tmp_path, content, message):
    scenarios = tmp_path / "bad.jsonl"
    scenarios.write_bytes(content)
    result = _run("experiment=probe", "model=scripted", f"scenarios={scenarios}", f"hydra.run.dir={tmp_path / 'run'}",
                  cwd=tmp_path)
    assert result.returncode == 2
    assert _one_error_line(result.stderr).startswith(f"error: {scenarios}: {message}")


@pytest.mark.parametrize(
    "text,message",
    [
        ("name: bad\ngroups: [\n", "is not valid YAML (line 3, column 1: expected the node content"),
        ("name: [bad\n", "is not valid YAML (line 2, column 1: expected ',' or ']'"),
    ],
)
def test_wheel_file_with_a_syntax_error_is_one_clear_line(tmp_path, text, message):
    wheel = tmp_path / "broken.yaml"
    wheel.write_text(text, encoding="utf-8")
    result = _run("experiment=probe", "model=scripted", f"probe.wheel={wheel}", f"scenarios={_scenario_file(tmp_path)}",
                  f"hydra.run.dir={tmp_path / 'run'}", cwd=tmp_path)
    assert result.returncode == 2
    assert _one_error_line(result.stderr).startswith(f"error: wheel file {wheel} {message}")


@pytest.mark.parametrize(
    "override,message,options",
    [
        ("model=nope", "error: In 'config': Could not find 'model/nope'", ["openai", "scripted", "smollm2", "transformers"]),
        ("experiment=nope", "error: In 'config': Could not find 'experiment/nope'", ["negotiation", "probe", "hierarchy"]),
        ("scenario=nope", "error: In 'config': Could not find 'scenario/nope'", ["acorn", "used_car", "vintage_guitar"]),
        ("customer/persona=nobody", "error: In 'config': Could not find 'customer/persona/nobody'", ["from_scenario"]),
    ],
)
def test_unknown_config_option_is_one_line_and_the_choices(tmp_path, override, message, options):
    result = _run(override, f"hydra.run.dir={tmp_path / 'run'}", cwd=tmp_path)
    assert result.returncode == 2
    assert _one_error_line(result.stderr) == message
    rest = result.stderr.splitlines()[1:]
    group = override.split("=")[0]
    assert rest[0] == f"Available options in '{group}':"
    listed = [line.strip() for line in rest[1:]]
    assert set(options) <= set(listed)
    assert "Config search path:" not in result.stderr
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize(
    "args,message",
    [
        (["probe.nope=1"], "error: Could not override 'probe.nope'."),
        (["model=[a"], "error: cannot parse the override 'model=[a': no viable alternative at input '[a'"),
        (["-m", "experiment=probe", "model=scripted,nope"], "error: In 'config': Could not find 'model/nope'"),
    ],
)
def test_other_hydra_errors_are_one_line(tmp_path, args, message):
    result = _run(*args, f"hydra.run.dir={tmp_path / 'run'}", f"hydra.sweep.dir={tmp_path / 'sweep'}", cwd=tmp_path)
    assert result.returncode == 2
    assert _one_error_line(result.stderr) == message


@pytest.mark.parametrize(
    "module_text,task,message",
    [
        # Not registered: refused before anything is imported, whatever the module holds.
        (None, "no_such_package.run",
         "error: task 'no_such_package.run' is not a registered experiment; expected one of ['bias_table'"),
        ("def run(cfg): pass\n", "user_task.run",
         "error: task 'user_task.run' is not a registered experiment; expected one of ['bias_table'"),
        # Registered by a package's metadata, then broken.
        ("def other(cfg): pass\n", "user_task+",
         "error: task (set by the experiment config) 'user_task': module 'user_task' has no function 'run'"),
        # The real cause, not a bare "not importable": here a dependency of the task is missing.
        ("import emolab_missing_dependency\n", "user_task+",
         "error: task (set by the experiment config) 'user_task' cannot be imported: "
         "ModuleNotFoundError: No module named 'emolab_missing_dependency'"),
    ],
)
def test_task_that_cannot_be_loaded_names_the_cause(tmp_path, module_text, task, message):
    """`task+`: the test registers the task in the emolab.experiments entry-point group, as its package would."""
    env = None
    if task.endswith("+"):
        task = task[:-1]
        dist = tmp_path / "user_task-1.0.dist-info"
        dist.mkdir()
        (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: user-task\nVersion: 1.0\n", encoding="utf-8")
        (dist / "entry_points.txt").write_text("[emolab.experiments]\nuser_task = user_task:run\n", encoding="utf-8")
        env = {"PYTHONPATH": str(tmp_path)}
    if module_text is not None:
        (tmp_path / "user_task.py").write_text(module_text, encoding="utf-8")  # importable: cwd leads sys.path
    result = _run("experiment=probe", f"task={task}", f"hydra.run.dir={tmp_path / 'run'}", cwd=tmp_path, env=env)
    assert result.returncode == 2
    assert _one_error_line(result.stderr).startswith(message)
