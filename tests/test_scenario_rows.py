"""Which rows of a scenario file a run reads: the authors' files whole, dropped rows counted, `limit` checked."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hydra import compose, initialize_config_module
from omegaconf import OmegaConf

from emotion_probe import ConfigError
from emotion_probe.scenarios import load_scenarios

# An authors'-style sentence file: trailing spaces, an empty row, a blank row and a repeated sentence.
SENTENCES = "I won.  \n\nIt rained.\nI won.\n   \nLast one.\n"


def _cfg(*overrides: str):
    with initialize_config_module(config_module="conf", version_base="1.3"):
        return compose(config_name="config", overrides=list(overrides))


@pytest.fixture
def sentences(tmp_path) -> Path:
    path = tmp_path / "hierarchy_prompts.txt"
    path.write_text(SENTENCES, encoding="utf-8")
    return path


def test_a_sentence_file_is_read_whole_by_default_and_limit_counts_its_lines(sentences):
    # The experiments' default (conf/experiment/*.yaml) reads the authors' format as they scored it.
    keep_empty = _cfg("experiment=hierarchy").keep_empty
    rows = load_scenarios(str(sentences), keep_empty=keep_empty)
    assert [r.id for r in rows] == [f"line-{n}" for n in range(1, 7)]
    assert rows.dropped == {"empty": 0, "repeated": 0, "rows_read": 6}
    assert [r.id for r in load_scenarios(str(sentences), limit=4, keep_empty=keep_empty)] == [
        "line-1", "line-2", "line-3", "line-4"]


def test_dropped_rows_are_counted_and_logged(sentences, caplog):
    with caplog.at_level(logging.WARNING, logger="emotion_probe.scenarios"):
        rows = load_scenarios(str(sentences), keep_empty=False)
    assert [r.id for r in rows] == ["line-1", "line-3", "line-6"]
    assert rows.dropped == {"empty": 2, "repeated": 1, "rows_read": 6}
    message = " ".join(r.getMessage() for r in caplog.records)
    assert "kept 3 of 6 rows" in message and "2 empty" in message and "1 repeated" in message
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="emotion_probe.scenarios"):
        load_scenarios(str(sentences), keep_empty=True)
    assert not caplog.records


@pytest.mark.parametrize("keep_empty", [None, False])
def test_a_jsonl_row_with_an_empty_text_is_refused_never_dropped(tmp_path, keep_empty):
    path = tmp_path / "recognition_scenarios.jsonl"
    path.write_text(json.dumps({"label": "fury", "text": "They broke it."}) + "\n"
                    + json.dumps({"label": "ease", "text": " "}) + "\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="line 2: field text"):
        load_scenarios(str(path), keep_empty=keep_empty)
    rows = load_scenarios(str(path), keep_empty=True)
    assert [(r.id, r.emotion) for r in rows] == [("line-1", "fury"), ("line-2", "ease")]
    assert rows.dropped == {"empty": 0, "repeated": 0, "rows_read": 2}


@pytest.mark.parametrize("limit", [0, -1, 2.5, "all", True])
def test_limit_is_null_or_at_least_one(sentences, limit):
    with pytest.raises(ConfigError, match="limit"):
        load_scenarios(str(sentences), limit=limit, keep_empty=None)


def test_keep_empty_is_a_boolean_or_null(sentences):
    with pytest.raises(ConfigError, match="keep_empty"):
        load_scenarios(str(sentences), keep_empty="sometimes")


def test_limit_zero_is_one_error_line_and_exit_2(tmp_path, sentences):
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    result = subprocess.run([sys.executable, "-m", "experiments.app.main", "experiment=probe", "model=scripted",
                             f"scenarios={sentences}", "limit=0", f"hydra.run.dir={tmp_path / 'run'}"],
                            capture_output=True, text=True, env=env, timeout=300, cwd=tmp_path)
    assert result.returncode == 2, result.stderr[-3000:]
    lines = result.stderr.splitlines()
    assert lines[0].startswith("error: limit") and "Traceback" not in result.stderr, result.stderr[-3000:]
    assert not (tmp_path / "run" / "distributions.parquet").exists()


def _hierarchy(tmp_path: Path, sentences: Path, *overrides: str) -> Path:
    from experiments.runs import hierarchy

    run_dir = tmp_path / "run"
    cfg = _cfg("experiment=hierarchy", "model=scripted", f"scenarios={sentences}", "probe.method=paper",
               "hierarchy.method=paper", "hierarchy.baseline_samples=10", "hierarchy.bootstrap=0", "progress=false",
               f"paths.output_dir={run_dir}", *overrides)
    OmegaConf.update(cfg, "model.continuation_logprobs", {" joy": float(np.log(0.5)), " hope": float(np.log(0.25))},
                     force_add=True)
    hierarchy.run(cfg)
    return run_dir


def test_the_manifest_records_dropped_rows(tmp_path, sentences):
    run_dir = _hierarchy(tmp_path, sentences, "keep_empty=false")
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert manifest["dropped_rows"] == {"empty": 2, "repeated": 1, "rows_read": 6}
    assert pd.read_parquet(run_dir / "distributions.parquet")["id"].tolist() == ["line-1", "line-3", "line-6"]


def test_the_manifest_records_that_nothing_was_dropped(tmp_path, sentences):
    run_dir = _hierarchy(tmp_path, sentences)
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert manifest["dropped_rows"] == {"empty": 0, "repeated": 0, "rows_read": 6}
    assert len(pd.read_parquet(run_dir / "distributions.parquet")) == 6


def test_persona_bias_records_dropped_rows(tmp_path):
    from experiments.runs import persona_bias

    path = tmp_path / "recognition_scenarios.jsonl"
    path.write_text("\n".join(json.dumps({"label": label, "text": text}) for label, text in
                              [("fear", "A dog growls."), ("joy", "A gift!")]) + "\n", encoding="utf-8")
    cfg = _cfg("experiment=persona_bias", "model=scripted", "probe.method=paper", f"scenarios={path}",
               "recognition.bootstrap=0", f"paths.output_dir={tmp_path / 'run'}", "progress=false")
    OmegaConf.update(cfg, "model.continuation_logprobs", {" joy": -0.5, " fear": -1.0}, force_add=True)
    persona_bias.run(cfg)
    manifest = json.loads((tmp_path / "run" / "manifest.json").read_text())
    assert manifest["dropped_rows"] == {"empty": 0, "repeated": 0, "rows_read": 2}
