"""Persona-bias measures on hand-made predictions and on the paper's own counts."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy.stats import fisher_exact

from emotion_probe import ConfigError, EmotionWheel
from emotion_probe.analysis.bias import (
    accuracy,
    calibrate,
    collapse_confusion,
    compare_predictions,
    confusion_matrix,
    per_class_accuracy,
)

PAPER_COUNTS = Path(__file__).resolve().parents[2] / "shared" / "reference" / "paper_persona_confusion.json"


def test_confusion_and_accuracy_by_hand():
    labels = ["joy", "grief", "rage"]
    true = ["joy", "joy", "grief", "rage", "rage", "rage"]
    predicted = ["joy", "grief", "grief", "rage", "joy", "rage"]
    counts = confusion_matrix(true, predicted, labels)
    assert counts.tolist() == [[1, 1, 0], [0, 1, 0], [1, 0, 2]]
    assert accuracy(counts) == pytest.approx(4 / 6)
    assert per_class_accuracy(counts, labels).round(3).tolist() == [0.5, 1.0, 0.667]
    with pytest.raises(ConfigError, match="not in the label set"):
        confusion_matrix(["joy"], ["bliss"], labels)


def test_collapse_to_primaries():
    wheel = EmotionWheel.load("shaver")
    labels = ["glee", "bliss", "grief", "rage"]
    counts = np.array([[3, 1, 0, 0], [0, 2, 1, 0], [0, 0, 4, 1], [0, 0, 0, 5]])
    primaries = ["joy", "sadness", "anger"]
    collapsed = collapse_confusion(counts, labels, wheel.primary_of, primaries)
    # glee->bliss is a miss among words but a hit among primaries.
    assert collapsed.tolist() == [[6, 1, 0], [0, 4, 1], [0, 0, 5]]
    assert accuracy(collapsed) > accuracy(counts)


def test_compare_predictions_against_a_hand_computed_fisher_test():
    labels = ["hope", "frustration", "pride"]
    a, b = [30, 5, 15], [10, 25, 15]
    table = compare_predictions(a, b, labels)
    assert table["emotion"].tolist() == ["hope", "pride", "frustration"]  # by diff, descending
    hope = table.set_index("emotion").loc["hope"]
    assert hope["rate_a"] == pytest.approx(30 / 50) and hope["diff"] == pytest.approx(0.4)
    # 2x2: [[30, 20], [10, 40]]; scipy's two-sided Fisher test, computed independently.
    assert hope["p_value"] == pytest.approx(fisher_exact([[30, 20], [10, 40]]).pvalue)
    # Benjamini-Hochberg by hand: sort p, q_i = min_{j>=i} p_j * m / j.
    p = table["p_value"].to_numpy()
    order = np.argsort(p)
    ranked = p[order] * 3 / np.arange(1, 4)
    expected = np.minimum.accumulate(ranked[::-1])[::-1]
    np.testing.assert_allclose(table["q_value"].to_numpy()[order], np.minimum(expected, 1))
    assert table.set_index("emotion").loc["pride", "significant"] == False  # noqa: E712 (numpy bool)
    with pytest.raises(ConfigError, match="align with 3 labels"):
        compare_predictions([1, 2], [3, 4], labels)


def test_calibration_divides_out_the_prior():
    P = np.array([[0.6, 0.3, 0.1], [0.5, 0.4, 0.1]])
    prior = np.array([0.5, 0.25, 0.25])
    calibrated = calibrate(P, prior)
    np.testing.assert_allclose(calibrated.sum(axis=1), 1)
    np.testing.assert_allclose(calibrated[0], np.array([1.2, 1.2, 0.4]) / 2.8)
    with pytest.raises(ConfigError, match="positive vector"):
        calibrate(P, np.array([1.0, 0.0, 0.0]))


@pytest.mark.skipif(not PAPER_COUNTS.exists(), reason="../shared/reference is not beside this checkout")
def test_bias_table_on_the_paper_counts(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "experiments.app.main", "experiment=bias_table", f"confusion={PAPER_COUNTS}",
         f"hydra.run.dir={tmp_path}"],
        capture_output=True, text=True, env={**os.environ, "COLUMNS": "200"}, timeout=300,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    data = json.loads(PAPER_COUNTS.read_text())
    accuracies = pd.read_csv(tmp_path / "accuracy.csv").set_index("persona")["accuracy"]
    for name, counts in data["personas"].items():
        counts = np.array(counts)
        assert accuracies[name] == pytest.approx(np.trace(counts) / counts.sum())
    for a, b in [("male", "female"), ("asian", "american"), ("able", "disable"), ("income_high", "income_low"),
                 ("education_high", "education_low")]:
        table = pd.read_parquet(tmp_path / f"compare_{a}_vs_{b}.parquet")
        assert len(table) == 129 and table["diff"].is_monotonic_decreasing
        assert f"{a} (accuracy" in result.stdout
    income = pd.read_parquet(tmp_path / "compare_income_high_vs_income_low.parquet")
    # The paper's low-income finding: frustration and hope predicted more often, significantly.
    low_side = income.tail(5)
    assert {"frustration", "hope"} <= set(low_side[low_side["significant"]]["emotion"])


# ------------------------------------------------------------- calibration with unseen words
def test_content_free_prior_leaves_out_inputs_that_named_no_word():
    from emotion_probe.analysis.bias import content_free_prior

    # A NaN row (exact method) and an all-zero row (paper method: no word in the top k) say nothing.
    rows = np.array([[0.5, 0.5, 0.0], [np.nan] * 3, [0.0] * 3, [1.0, 0.0, 0.0]])
    assert content_free_prior(rows).tolist() == [0.75, 0.25, 0.0]
    assert np.isnan(content_free_prior(np.full((2, 3), np.nan))).all()
    assert np.isnan(content_free_prior(np.zeros((2, 3)))).all()


def test_unseen_words_are_floored_at_the_smallest_seen_prior():
    from emotion_probe.analysis.bias import calibrated_argmax, floor_unseen

    prior = np.array([0.7, 0.3, 0.0, 0.0])
    assert floor_unseen(prior).tolist() == [0.7, 0.3, 0.3, 0.3]
    with pytest.raises(ConfigError, match="calibration prior gives no word a positive probability"):
        floor_unseen(np.zeros(3))
    # calibrate() itself keeps refusing a zero: only the documented floor makes such a prior usable.
    with pytest.raises(ConfigError, match="positive vector"):
        calibrate(np.array([[0.5, 0.5, 0.0, 0.0]]), prior)
    labels = ["joy", "fear", "anger", "calm"]
    P = np.array([[0.6, 0.4, 0.0, 0.0],    # joy leads, but joy is the prior's favourite: fear after calibration
                  [0.4, 0.0, 0.6, 0.0],    # anger, unseen in the prior, stays ahead of joy
                  [0.5, 0.0, 0.0, 0.5],    # calm (prior floored at 0.3) beats joy (0.7)
                  [np.nan] * 4,            # nothing seen: no prediction, not "joy" by accident
                  [0.0] * 4])              # nothing in the top k (paper method): the same
    assert calibrated_argmax(P, prior, labels) == ["fear", "anger", "calm", None, None]
    assert calibrated_argmax(P, np.full(4, np.nan), labels) == [None] * len(P)


def test_argmax_of_a_nan_row_is_none():
    from emotion_probe.analysis.bias import argmax_labels

    assert argmax_labels(np.array([[0.2, 0.8], [np.nan, np.nan], [0.0, 0.0]]), ["a", "b"]) == ["b", None, None]
