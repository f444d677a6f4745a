"""Names and table cells read from files reach the console escaped and as text.

A model's or a persona's name comes from a config file (or the command line), an experiment's name and
a job's metrics from a colleague's run dir. Each test runs the real command with a name that would set
the window title, clear the screen and read as rich markup, and checks that the console shows it
as visible escapes, markup and all, and that no control character reaches it.
"""

from __future__ import annotations

import io
import json
import re
from pathlib import Path

import pandas as pd
import pytest
import yaml
from rich.console import Console

from emolab_cli import emolab

HOSTILE = "scr\x1b]0;PWNTITLE\x07\x1b[2Jipted[red]x[/red]"
#: How the console shows it: every control character a visible escape, the markup as typed.
SHOWN = "scr\\x1b]0;PWNTITLE\\x07\\x1b[2Jipted[red]x[/red]"
#: Wide enough that no table cell or title is cut or wrapped.
WIDE = {"COLUMNS": "250"}


def _model(name: str = "plain") -> str:
    return yaml.safe_dump({"defaults": ["scripted", "_self_"], "name": name,
                           "continuation_logprobs": {" joy": -1.0, " fear": -2.0}})


@pytest.fixture()
def conf(tmp_path: Path) -> str:
    """A config folder with a scripted model named HOSTILE (`model=hostile`) and one named plainly."""
    folder = tmp_path / "conf" / "model"
    folder.mkdir(parents=True)
    (folder / "hostile.yaml").write_text(_model(HOSTILE), encoding="utf-8")
    (folder / "plain.yaml").write_text(_model(), encoding="utf-8")
    return f"hydra.searchpath=[file://{tmp_path / 'conf'}]"


def _shown(done) -> str:
    """What the run printed, checked to have finished and to carry no control character."""
    assert done.returncode == 0, done.stderr[-3000:]
    printed = done.stdout + done.stderr
    assert "\x1b" not in printed and "\x07" not in printed, printed[-3000:]
    return printed


#: Each run, and a pattern of where it prints the name (a table's title is centred over it, and may wrap).
RUNS = {
    "probe, name from the model file": (["experiment=probe", "model=hostile"], f"probing {re.escape(SHOWN)}"),
    "probe, name on the command line": (["experiment=probe", "model=plain", f"model.name='{HOSTILE}'"],
                                        f"probing {re.escape(SHOWN)}"),
    "hierarchy": (["experiment=hierarchy", "model=hostile", "hierarchy.bootstrap=0"],
                  rf"Emotion hierarchy of\s+{re.escape(SHOWN)}"),
    "persona_bias": (["experiment=persona_bias", "model=hostile", "persona=able", f"persona.name='{HOSTILE}'"],
                     re.escape(f"{SHOWN} on {SHOWN}")),
}


@pytest.mark.parametrize("args,pattern", RUNS.values(), ids=list(RUNS))
def test_a_model_or_persona_name_is_printed_escaped(tmp_path, conf, args, pattern):
    done = emolab(*args, conf, "limit=3", "cache.enabled=false", f"hydra.run.dir={tmp_path / 'run'}", env=WIDE)
    printed = _shown(done)
    assert re.search(pattern, printed), printed[-3000:]


def test_preview_prints_the_model_name_escaped(tmp_path):
    done = emolab("experiment=preview", f"salesperson.model.name='{HOSTILE}'", f"hydra.run.dir={tmp_path / 'run'}",
                  env=WIDE)
    assert f"model {SHOWN}" in _shown(done)


def _job(path: Path, config: dict, experiment: str | None = None) -> Path:
    (path / ".hydra").mkdir(parents=True)
    (path / ".hydra" / "config.yaml").write_text(yaml.safe_dump(config), encoding="utf-8")
    if experiment is not None:
        hydra = {"hydra": {"runtime": {"choices": {"experiment": experiment}}}}
        (path / ".hydra" / "hydra.yaml").write_text(yaml.safe_dump(hydra), encoding="utf-8")
    return path


def test_the_sweep_report_prints_a_jobs_experiment_name_escaped(tmp_path):
    _job(tmp_path / "sweep" / "0", {"task": "experiments.probe.run", "probe": {"wheel": "ekman"}, "seed": 0},
         experiment=HOSTILE)
    done = emolab("experiment=report", f"sweep_dir={tmp_path / 'sweep'}", f"hydra.run.dir={tmp_path / 'report'}",
                  env=WIDE)
    assert SHOWN in _shown(done)


def test_a_jobs_experiment_choice_must_be_a_name(tmp_path):
    _job(tmp_path / "sweep" / "0", {"task": "experiments.probe.run", "seed": 0}, experiment=["probe"])
    done = emolab("experiment=report", f"sweep_dir={tmp_path / 'sweep'}", f"hydra.run.dir={tmp_path / 'report'}")
    assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr[-3000:]
    assert "hydra.runtime.choices.experiment must be a name, not a list" in done.stderr


def test_the_hierarchy_report_prints_a_jobs_model_name_escaped(tmp_path):
    job = _job(tmp_path / "sweep" / "0", {"task": "experiments.hierarchy.run", "seed": 0})
    metrics = {"model": HOSTILE, "parameters": None, "edges": 0, "nodes": 0, "total_path_length": 0,
               "average_depth": None, "wheel_alignment": None, "shuffled_alignment_mean": None}
    (job / "metrics.json").write_text(json.dumps(metrics), encoding="utf-8")
    done = emolab("experiment=hierarchy_report", f"sweep_dir={tmp_path / 'sweep'}",
                  f"hydra.run.dir={tmp_path / 'report'}", env=WIDE)
    assert SHOWN in _shown(done)


def test_the_persona_report_prints_a_persona_name_escaped(tmp_path, conf):
    sweep = tmp_path / "sweep"
    for job, name in enumerate([HOSTILE, "able"]):
        _shown(emolab("experiment=persona_bias", conf, "model=plain", "persona=able", f"persona.name='{name}'",
                      "limit=3", "cache.enabled=false", "progress=false", f"hydra.run.dir={sweep / str(job)}"))
    done = emolab("experiment=persona_report", f"sweep_dir={sweep}", f"pairs=[['{HOSTILE}', able]]",
                  f"hydra.run.dir={tmp_path / 'report'}", env=WIDE)
    printed = _shown(done)
    assert f"│ {SHOWN} " in printed  # its row of the accuracy table
    assert f"{SHOWN} vs able: accuracy gap" in printed


def test_the_bias_table_prints_persona_names_and_words_escaped():
    from experiments.tools.bias_table import _pair_table

    table = pd.DataFrame({"emotion": [HOSTILE, "joy"], "diff": [0.1, -0.1], "significant": [True, False]})
    console = Console(file=io.StringIO(), force_terminal=True, color_system=None, width=250)
    console.print(_pair_table(HOSTILE, "b", table, 0.5, 0.4, top=2))
    printed = console.file.getvalue()
    assert "\x1b" not in printed and "\x07" not in printed, printed
    assert f"{SHOWN} (accuracy 50.0%)" in printed and f"{SHOWN} *" in printed
