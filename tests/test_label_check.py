"""The label-consistency check: a labelled scenario should read as its word's primary."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from emotion_probe import EmotionWheel
from emotion_probe.scenario_checks import label_consistency, words_to_rewrite


@pytest.fixture(scope="module")
def shaver():
    return EmotionWheel.load("shaver")


def _distribution(wheel, weights: dict[str, float]) -> np.ndarray:
    row = np.zeros(len(wheel.words))
    for word, weight in weights.items():
        row[wheel.index[word]] = weight
    return row


def test_a_scenario_passes_when_its_primary_ranks_in_the_top(shaver):
    rows = np.stack([
        # labelled mortification (fear in Shaver's wheel), mass mostly on sadness words: read as
        # embarrassment-like sadness, with fear second
        _distribution(shaver, {"humiliation": 0.5, "shame": 0.2, "terror": 0.3}),
        # labelled hysteria (fear): mostly joy -> fear not in the top 2 (joy 0.6, anger 0.3, fear 0.1)
        _distribution(shaver, {"glee": 0.6, "rage": 0.3, "alarm": 0.1}),
        # labelled grief (sadness), read as sadness
        _distribution(shaver, {"sorrow": 0.9, "fear": 0.1}),
    ])
    checked = label_consistency(rows, ["mortification", "hysteria", "grief"], shaver, top=2, calibrate=False)
    assert list(checked["primary"]) == ["fear", "fear", "sadness"]
    assert list(checked["read_as"]) == ["sadness", "joy", "sadness"]
    assert list(checked["rank"]) == [2, 3, 1]
    assert list(checked["passes"]) == [True, False, True]
    strict = label_consistency(rows, ["mortification", "hysteria", "grief"], shaver, top=1, calibrate=False)
    assert list(strict["passes"]) == [False, False, True]


def test_calibration_takes_out_a_blanket_preference(shaver):
    # A model that gives sadness 0.6 to every scenario and a little to the scenario's own primary:
    # uncalibrated, every scenario reads as sadness; divided by the set's mean, each reads as its own.
    rows = np.stack([
        _distribution(shaver, {"sorrow": 0.6, "glee": 0.3, "rage": 0.1}),    # joy scenario
        _distribution(shaver, {"sorrow": 0.6, "rage": 0.3, "glee": 0.1}),    # anger scenario
        _distribution(shaver, {"sorrow": 0.8, "glee": 0.1, "rage": 0.1}),    # sadness scenario
    ])
    labels = ["glee", "rage", "grief"]
    raw = label_consistency(rows, labels, shaver, top=1, calibrate=False)
    assert list(raw["read_as"]) == ["sadness", "sadness", "sadness"]
    calibrated = label_consistency(rows, labels, shaver, top=1)
    # Means: sadness 2/3, joy 1/6, anger 1/6. Joy row: 0.9 vs 1.8 vs 0.6 -> joy; anger row -> anger;
    # sadness row: 1.2 vs 0.6 vs 0.6 -> sadness.
    assert list(calibrated["read_as"]) == ["joy", "anger", "sadness"]
    assert list(calibrated["passes"]) == [True, True, True]


def test_words_below_the_share_are_listed_worst_first():
    checked = pd.DataFrame({"label": ["a", "a", "b", "b", "b", "c"],
                            "passes": [False, False, True, False, False, True]})
    assert words_to_rewrite(checked, min_share=0.5) == ["a", "b"]
    assert words_to_rewrite(checked, min_share=0.3) == ["a"]


def test_the_probe_experiment_writes_the_check_for_a_labelled_set(tmp_path, capsys):
    from hydra import compose, initialize_config_module
    from omegaconf import OmegaConf

    from experiments.runs import probe

    scenarios = tmp_path / "two.jsonl"
    scenarios.write_text(
        json.dumps({"id": "glee-1", "text": "She laughed until her sides ached.", "emotion": "glee"}) + "\n"
        + json.dumps({"id": "dread-1", "text": "The letter from the hospital sat unopened.", "emotion": "dread"}) + "\n")
    out = tmp_path / "run"
    with initialize_config_module(config_module="conf", version_base="1.3"):
        cfg = compose(config_name="config", overrides=[
            "experiment=probe", "model=scripted", f"scenarios={scenarios}", "label_check.top=1", "progress=false",
            f"paths.output_dir={out}"])
    # The scripted model gives every prompt the same distribution, all on " joy": the glee scenario
    # reads as joy and passes, the dread scenario reads as joy too and fails at top=1.
    OmegaConf.update(cfg, "model.continuation_logprobs", {" joy": -0.1}, force_add=True)
    probe.run(cfg)
    checked = pd.read_csv(out / "label_check.csv")
    assert list(checked["id"]) == ["glee-1", "dread-1"]
    assert list(checked["passes"]) == [True, False]
    printed = capsys.readouterr().out
    assert "1 of 2 scenarios read as their primary" in printed
    assert "1 words below 50%: dread" in printed


def test_a_bad_setting_is_one_error_line(tmp_path):
    done = subprocess.run(
        [sys.executable, "-m", "experiments.app.main", "experiment=probe", "model=scripted", "label_check.top=0",
         f"hydra.run.dir={tmp_path}"], capture_output=True, text=True)
    assert done.returncode == 2
    assert done.stderr.strip().startswith("error: label_check.top")
