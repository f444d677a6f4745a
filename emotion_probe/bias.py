"""Persona bias in emotion recognition: accuracy, confusion, group comparisons, calibration.

All functions take plain arrays aligned with a label list, so they work the same on a fresh
persona sweep and on published confusion counts.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
from scipy.stats import false_discovery_control, fisher_exact

from emotion_probe.errors import ConfigError


def confusion_matrix(true: Sequence[str], predicted: Sequence[str], labels: Sequence[str]) -> np.ndarray:
    """counts[i, j] = how often true label i was predicted as label j (rows = true)."""
    index = {label: i for i, label in enumerate(labels)}
    unknown = sorted({x for x in [*true, *predicted] if x not in index})
    if unknown:
        raise ConfigError(f"labels not in the label set: {unknown[:5]}")
    counts = np.zeros((len(labels), len(labels)), dtype=np.int64)
    np.add.at(counts, ([index[t] for t in true], [index[p] for p in predicted]), 1)
    return counts


def accuracy(confusion: np.ndarray) -> float:
    total = confusion.sum()
    return float(np.trace(confusion) / total) if total else float("nan")


def per_class_accuracy(confusion: np.ndarray, labels: Sequence[str]) -> pd.Series:
    """Recall of each true label (NaN where the label never occurs)."""
    totals = confusion.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        values = np.where(totals > 0, np.diag(confusion) / np.where(totals > 0, totals, 1), np.nan)
    return pd.Series(values, index=list(labels), name="accuracy")


def collapse_confusion(confusion: np.ndarray, labels: Sequence[str], group_of, groups: Sequence[str]) -> np.ndarray:
    """Sum a fine confusion matrix into groups (e.g. 135 words -> 6 primaries)."""
    member = np.zeros((len(labels), len(groups)))
    position = {g: i for i, g in enumerate(groups)}
    for i, label in enumerate(labels):
        member[i, position[group_of(label)]] = 1
    return (member.T @ confusion @ member).astype(np.int64)


def compare_predictions(counts_a: Sequence[float], counts_b: Sequence[float], labels: Sequence[str]) -> pd.DataFrame:
    """Which labels persona A is predicted to feel more often than persona B, and how surely.

    For each label: rate = count / total predictions of that persona; Fisher's exact test on
    [[a_label, a_other], [b_label, b_other]]; Benjamini-Hochberg q-values across labels.
    Sorted by diff = rate_a - rate_b, descending: the head is "more often A", the tail "more often B".
    """
    a = np.asarray(counts_a, dtype=np.int64)
    b = np.asarray(counts_b, dtype=np.int64)
    if a.shape != b.shape or a.shape != (len(labels),):
        raise ConfigError(f"counts_a {a.shape} and counts_b {b.shape} must both align with {len(labels)} labels")
    total_a, total_b = int(a.sum()), int(b.sum())
    if total_a == 0 or total_b == 0:
        raise ConfigError("each persona needs at least one prediction to compare")
    p_values = np.array(
        [fisher_exact([[x, total_a - x], [y, total_b - y]]).pvalue for x, y in zip(a.tolist(), b.tolist())]
    )
    table = pd.DataFrame(
        {
            "emotion": list(labels),
            "count_a": a,
            "count_b": b,
            "rate_a": a / total_a,
            "rate_b": b / total_b,
        }
    )
    table["diff"] = table["rate_a"] - table["rate_b"]
    table["p_value"] = p_values
    table["q_value"] = false_discovery_control(p_values, method="bh")
    table["significant"] = table["q_value"] < 0.05
    return table.sort_values("diff", ascending=False, kind="stable").reset_index(drop=True)


def calibrate(distributions: np.ndarray, prior: np.ndarray) -> np.ndarray:
    """Contextual calibration (Zhao et al. 2021): divide out a persona's content-free prior, renormalize."""
    P = np.asarray(distributions, dtype=np.float64)
    prior = np.asarray(prior, dtype=np.float64)
    if prior.shape != (P.shape[1],) or (prior <= 0).any():
        raise ConfigError("the calibration prior must be a positive vector over the same words")
    adjusted = P / prior
    return adjusted / adjusted.sum(axis=1, keepdims=True)
