"""Reports by registry: an experiment adds its part of the sweep report from its own module.

The end-to-end test writes a new experiment the way a user would (one module, one YAML, outside this
repository), runs a real Hydra multirun of it, and reads the sweep report: its table reaches
results.parquet and its section reaches report.html, with no edit to experiments/reports/report.py.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pandas as pd

from experiments.reports import report
from experiments.reports.common import ExperimentReport, experiment_of_task, report_for

EXPERIMENT_MODULE = '''\
"""A user's experiment: the length of each word it is given, and its part of the sweep report."""

import pandas as pd

from experiments.app.common import output_dir
from experiments.reports.common import ExperimentReport, JobTable, Section, SectionInput, read_parquet, register, table_block


def run(cfg):
    words = list(cfg.words)
    pd.DataFrame({"word": words, "length": [len(w) * cfg.seed for w in words]}).to_parquet(
        output_dir(cfg) / "lengths.parquet")
    return {}


def section(part: SectionInput) -> Section:
    frame = pd.concat([f.assign(job=job.name) for job, _, f in part.loaded.tables])
    means = frame.groupby("job")["length"].mean().rename("mean length scaled by seed").reset_index()
    return Section("Word lengths", "word_lengths", [table_block("Mean per job", means)])


REPORT = register("word_lengths", ExperimentReport(
    order=5, tables=(JobTable("lengths", "lengths.parquet", read_parquet, "one row per word"),), section=section))
'''

EXPERIMENT_YAML = """\
# @package _global_
# A user's experiment, outside the emolab tree.
task: word_lengths
# Words to measure.
words: [calm, furious, glad]
"""


def test_every_shipped_report_is_found_by_its_task():
    found = {task: report_for(task) for task in ("negotiation", "persona_bias", "hierarchy", "probe")}
    assert all(isinstance(entry, ExperimentReport) for entry in found.values()), found
    assert [entry.tables[0].name for entry in found.values()] == ["trials", "predictions", "metrics", "distributions"]
    # Sections keep the page's order: negotiation, persona bias, hierarchy, probe.
    orders = [entry.order for entry in found.values()]
    assert orders == sorted(orders) and len(set(orders)) == len(orders)


def test_tasks_without_a_report_are_none_not_errors():
    assert report_for("watch") is None  # an experiment that exists and registers nothing
    assert report_for("no_such_package.module.run") is None
    assert report_for(None) is None
    assert experiment_of_task("hierarchy") == "hierarchy"


def test_an_older_run_dir_names_its_task_by_module_path_and_still_finds_its_report():
    """Run dirs written before tasks were entry-point names say `task: experiments.<module>.run`."""
    assert report_for("experiments.negotiation.run") is report_for("negotiation")
    assert experiment_of_task("experiments.hierarchy.run") == "hierarchy"
    assert experiment_of_task("experiments.persona_report.report") == "persona_report"
    assert experiment_of_task(None) == "unknown"


def test_report_module_names_no_experiment():
    """report.py keeps discovery, the merge and the page; it imports no experiment module."""
    source = Path(report.__file__).read_text(encoding="utf-8")
    for module in ("negotiation", "persona_bias", "persona_report", "hierarchy", "probe"):
        assert f"experiments.{module} " not in source and f"experiments.{module}\n" not in source, module
        assert f"from experiments.{module} import" not in source, module


def _emolab(root: Path, *overrides: str, returncode: int = 0) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(root / "src"), os.environ.get("PYTHONPATH", "")])}
    result = subprocess.run([sys.executable, "-m", "experiments.app.main", *overrides, "progress=false"],
                            capture_output=True, text=True, timeout=600, env=env)
    assert result.returncode == returncode, result.stderr[-3000:]
    return result


def test_a_new_experiment_reports_from_its_own_module(tmp_path):
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "lab_word_lengths.py").write_text(EXPERIMENT_MODULE, encoding="utf-8")
    (tmp_path / "conf" / "experiment").mkdir(parents=True)
    (tmp_path / "conf" / "experiment" / "word_lengths.yaml").write_text(EXPERIMENT_YAML, encoding="utf-8")
    sweep = tmp_path / "sweep"
    command = ["-m", "experiment=word_lengths", "seed=1,2", f"hydra.sweep.dir={sweep}",
               f"hydra.searchpath=[file://{tmp_path / 'conf'}]"]
    # Until its package registers it, a preset naming the module is refused: a config file imports nothing.
    refused = _emolab(tmp_path, *command, returncode=2)
    assert "'word_lengths' is not a registered experiment" in refused.stderr
    # Its package's metadata registers it, as `pip install` of a package with the entry point would.
    dist = tmp_path / "src" / "lab_word_lengths-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: lab-word-lengths\nVersion: 1.0\n", encoding="utf-8")
    (dist / "entry_points.txt").write_text("[emolab.experiments]\nword_lengths = lab_word_lengths:run\n",
                                           encoding="utf-8")
    _emolab(tmp_path, *command)
    out = tmp_path / "report"
    _emolab(tmp_path, "experiment=report", f"sweep_dir={sweep}", f"hydra.run.dir={out}")

    results = pd.read_parquet(out / "results.parquet")
    assert set(results["experiment"]) == {"word_lengths"} and set(results["table"]) == {"lengths"}
    assert sorted(results["length"]) == sorted([4, 7, 4, 8, 14, 8])  # len * seed, for seeds 1 and 2
    html = (out / "report.html").read_text(encoding="utf-8")
    assert '<section id="word_lengths">' in html and "Mean per job" in html
    assert "mean length scaled by seed" in html
