"""The `emolab` command end to end, as a user runs it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

EMOLAB = [sys.executable, "-m", "experiments.main"]


def _run(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
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
    assert message in result.stderr
    assert "Traceback" not in result.stderr


def test_unknown_model_is_reported_by_hydra(tmp_path):
    result = _run("model=gpt-7", cwd=tmp_path)
    assert result.returncode != 0
    assert "Could not find 'model/gpt-7'" in result.stderr and "smollm2" in result.stderr
