"""The hierarchy experiment and the scaling report, end to end on the embedded model."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import networkx as nx
import pandas as pd
import pytest

from emotion_probe.analysis.hierarchy_metrics import structure_metrics

pytestmark = pytest.mark.embedded

TEXTS = [
    "I finally got the job offer after months of searching!",
    "My grandmother passed away last night and the house feels empty.",
    "Someone keyed my car in the parking lot, again.",
    "The train was cancelled and I will miss my sister's wedding.",
    "We adopted a puppy today and the kids cannot stop laughing.",
    "I heard footsteps behind me in the dark alley.",
    "My best friend forgot my birthday.",
    "I passed the bar exam on my first try.",
]


def _emolab(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    result = subprocess.run([sys.executable, "-m", "experiments.app.main", *args], cwd=cwd, capture_output=True,
                            text=True, env=env, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    return result


@pytest.fixture(scope="module")
def scenario_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("scenarios") / "everyday_small.jsonl"
    path.write_text("\n".join(json.dumps({"id": f"e{i}", "text": t}) for i, t in enumerate(TEXTS)), encoding="utf-8")
    return path


def test_hierarchy_run_writes_every_artifact(tmp_path, scenario_file):
    run_dir = tmp_path / "run"
    # A 135M model spreads its mass thinly; a lower threshold gives it a tree to draw.
    result = _emolab("experiment=hierarchy", f"scenarios={scenario_file}", "hierarchy.threshold=0.15",
                     f"hydra.run.dir={run_dir}", "progress=false", cwd=tmp_path)
    for name in ["distributions.parquet", "matching.parquet", "edges.csv", "metrics.json", "tree.png", "tree.svg"]:
        assert (run_dir / name).is_file(), name
    matching = pd.read_parquet(run_dir / "matching.parquet")
    assert matching.shape == (135, 135)
    assert (matching.sum(axis=1).round(6) == 1.0).all()
    metrics = json.loads((run_dir / "metrics.json").read_text())
    edges = pd.read_csv(run_dir / "edges.csv")
    assert metrics["edges"] == len(edges) > 0
    assert (edges["p_parent_given_child"] > 0.15).all()
    assert (edges["p_child_given_parent"] < edges["p_parent_given_child"]).all()
    assert metrics["parameters"] == 134_515_008
    # Every metric the analysis computes reaches metrics.json and a row of the console table with no
    # list to edit, so a metric added to structure_metrics shows up as it is.
    shown = {line.split("│")[1].strip() for line in result.stdout.splitlines() if line.count("│") >= 3}
    for key in structure_metrics(nx.DiGraph([("a", "b")])):
        assert key in metrics and key in shown, key


def test_scaling_sweep_and_report(tmp_path, scenario_file):
    sweep_dir = tmp_path / "sweep"
    _emolab("-m", "experiment=hierarchy", "model=smollm2_random,smollm2", f"scenarios={scenario_file}",
            "hierarchy.threshold=0.15", f"hydra.sweep.dir={sweep_dir}", "progress=false", cwd=tmp_path)
    report_dir = tmp_path / "report"
    result = _emolab("experiment=hierarchy_report", f"sweep_dir={sweep_dir}", f"hydra.run.dir={report_dir}",
                     cwd=tmp_path)
    frame = pd.read_parquet(report_dir / "scaling.parquet")
    assert len(frame) == 2 and frame["parameters"].is_monotonic_increasing
    assert frame["parameters"].iloc[0] < 10_000_000 < frame["parameters"].iloc[1]
    assert (report_dir / "scaling.png").stat().st_size > 5000
    assert frame["model"].iloc[0].startswith("smollm2-arch-random") and "Hierarchy metrics" in result.stdout
