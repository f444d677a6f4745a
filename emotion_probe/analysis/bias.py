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
from emotion_probe.analysis.stats import CONFIDENCE, percentile_interval, sign_test


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


def recognition_summary(
    true: Sequence[str], predicted: Sequence[str | None], labels: Sequence[str], group_of, groups: Sequence[str]
) -> dict[str, float | int]:
    """Accuracy the paper's way, with what it leaves out made visible.

    A row whose prediction is None (no wheel word among the top-k tokens) is *uncovered*. The paper
    divides by the confusion matrix's total, i.e. by the covered rows only (`accuracy`,
    `primary_accuracy`); `coverage` is the covered share, and `*_all_rows` divide by every row, so
    an uncovered row counts as wrong. `primary_*` collapse both sides to the groups (6-way).
    """
    if len(true) != len(predicted):
        raise ConfigError(f"{len(true)} true labels but {len(predicted)} predictions")
    covered = [(t, p) for t, p in zip(true, predicted) if p is not None]
    fine = confusion_matrix([t for t, _ in covered], [p for _, p in covered], labels)
    correct = int(np.trace(fine))
    primary_correct = sum(group_of(t) == group_of(p) for t, p in covered)
    total = len(true)
    return {
        "rows": total,
        "covered": len(covered),
        "coverage": len(covered) / total if total else float("nan"),
        "accuracy": correct / len(covered) if covered else float("nan"),
        "primary_accuracy": primary_correct / len(covered) if covered else float("nan"),
        "accuracy_all_rows": correct / total if total else float("nan"),
        "primary_accuracy_all_rows": primary_correct / total if total else float("nan"),
    }


def compare_predictions(counts_a: Sequence[float], counts_b: Sequence[float], labels: Sequence[str]) -> pd.DataFrame:
    """Which labels persona A is predicted to feel more often than persona B, and how surely: the
    *unpaired* test, for counts alone (published confusion tables). When both personas saw the same
    scenarios and the predictions are at hand, `compare_paired_predictions` is the right test.

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
    return _with_q_values(table, p_values, "fisher")


def _with_q_values(table: pd.DataFrame, p_values: np.ndarray, test: str) -> pd.DataFrame:
    """Add p, Benjamini-Hochberg q across the labels, significance at q < 0.05 and the test's name;
    sort by diff, descending."""
    table["p_value"] = p_values
    table["q_value"] = false_discovery_control(p_values, method="bh")
    table["significant"] = table["q_value"] < 0.05
    table["test"] = test
    return table.sort_values("diff", ascending=False, kind="stable").reset_index(drop=True)


def _check_predictions(predicted: Sequence[str | None], labels: Sequence[str], what: str) -> list[str | None]:
    known = set(labels)
    values = [p if isinstance(p, str) else None for p in predicted]  # NaN/None: no answer
    unknown = sorted({p for p in values if p is not None and p not in known})
    if unknown:
        raise ConfigError(f"{what}: predictions not in the label set: {unknown[:5]}")
    return values


def compare_paired_predictions(
    predicted_a: Sequence[str | None], predicted_b: Sequence[str | None], labels: Sequence[str]
) -> pd.DataFrame:
    """`compare_predictions` for paired data: row n of both lists is the same scenario, read by persona
    A and by persona B.

    Fisher's test treats the two personas' predictions as independent samples; they are not (both
    read the same scenarios, and a scenario that reads as fear to one mostly reads as fear to the
    other), so it mis-states the evidence. Per label, the paired test is an exact sign test on the
    scenarios where exactly one persona predicted the label: `a_only` (A said it, B did not) against
    `b_only`; scenarios where both or neither said it carry no information about a difference. This
    is McNemar's exact test on the label's indicator. A row without an answer (None) counts as not
    predicting the label. Rates divide by each persona's answered rows, as `compare_predictions`'s
    counts do; q-values are Benjamini-Hochberg across labels.
    """
    a = _check_predictions(predicted_a, labels, "predicted_a")
    b = _check_predictions(predicted_b, labels, "predicted_b")
    if len(a) != len(b):
        raise ConfigError(f"paired predictions must align row by row: {len(a)} for A, {len(b)} for B")
    answered_a = sum(p is not None for p in a)
    answered_b = sum(p is not None for p in b)
    if answered_a == 0 or answered_b == 0:
        raise ConfigError("each persona needs at least one prediction to compare")
    rows = []
    for label in labels:
        says_a = np.array([p == label for p in a])
        says_b = np.array([p == label for p in b])
        rows.append({"emotion": label, "count_a": int(says_a.sum()), "count_b": int(says_b.sum()),
                     "a_only": int((says_a & ~says_b).sum()), "b_only": int((~says_a & says_b).sum())})
    table = pd.DataFrame(rows, columns=["emotion", "count_a", "count_b", "a_only", "b_only"])
    table.insert(3, "rate_a", table["count_a"] / answered_a)
    table.insert(4, "rate_b", table["count_b"] / answered_b)
    table.insert(5, "diff", table["rate_a"] - table["rate_b"])
    p_values = np.array([sign_test(x, y) for x, y in zip(table["a_only"], table["b_only"])])
    return _with_q_values(table, p_values, "sign")


def mcnemar_exact(correct_a: Sequence[bool], correct_b: Sequence[bool]) -> dict[str, float | int]:
    """McNemar's exact test for two accuracies on the same scenarios.

    Only the discordant scenarios speak to a difference: `a_only` (A right, B wrong) and `b_only`;
    under H0 each is A's with probability 1/2, so p is the two-sided binomial p of a_only out of
    a_only + b_only (`emotion_probe.analysis.stats.sign_test`).
    """
    a = np.asarray(correct_a, dtype=bool)
    b = np.asarray(correct_b, dtype=bool)
    if a.shape != b.shape or a.ndim != 1:
        raise ConfigError(f"paired correctness must align row by row: {a.shape} for A, {b.shape} for B")
    a_only, b_only = int((a & ~b).sum()), int((~a & b).sum())
    return {
        "pairs": int(a.size),
        "accuracy_a": float(a.mean()) if a.size else float("nan"),
        "accuracy_b": float(b.mean()) if b.size else float("nan"),
        "a_only": a_only,
        "b_only": b_only,
        "p_value": sign_test(a_only, b_only),
    }


def bootstrap_recognition(
    true: Sequence[str],
    predicted: Sequence[str | None],
    group_of,
    rows: np.ndarray,
    confidence: float = CONFIDENCE,
) -> dict[str, float]:
    """Percentile bootstrap intervals over scenarios for `accuracy` and `primary_accuracy` as
    `recognition_summary` defines them (over the answered rows of each resample).

    `rows` holds one bootstrap sample of row indices per line ([resamples, N], from
    `emotion_probe.analysis.stats.resample_rows`), so a caller can reuse one set of resamples for several
    prediction columns of the same scenarios. A resample with no answered row has no accuracy and is
    left out of the interval.
    """
    if len(true) != len(predicted):
        raise ConfigError(f"{len(true)} true labels but {len(predicted)} predictions")
    rows = np.asarray(rows)
    if rows.ndim != 2 or (rows.size and (rows.min() < 0 or rows.max() >= len(true))):
        raise ConfigError(f"rows must be [resamples, N] indices into the {len(true)} scenarios")
    covered = np.array([p is not None for p in predicted], dtype=bool)
    correct = np.array([p is not None and p == t for t, p in zip(true, predicted)], dtype=bool)
    primary = np.array([p is not None and group_of(p) == group_of(t) for t, p in zip(true, predicted)], dtype=bool)
    answered = covered[rows].sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        fine = correct[rows].sum(axis=1) / answered  # NaN where a resample has no answered row
        coarse = primary[rows].sum(axis=1) / answered
    result = {}
    for key, values in (("accuracy", fine), ("primary_accuracy", coarse)):
        result[f"{key}_ci_low"], result[f"{key}_ci_high"] = percentile_interval(values, confidence)
    return result


def content_free_prior(rows: np.ndarray) -> np.ndarray:
    """The prior for calibration: the mean distribution over the content-free inputs.

    Rows where the model named none of the words say nothing and are left out: all zero under
    probe.method=paper (no word among the top k), NaN under the exact method. If no row is left,
    the prior is NaN everywhere and calibration is impossible (see `calibrated_argmax`).
    """
    rows = np.asarray(rows, dtype=np.float64)
    answered = _named_a_word(rows)
    if not answered.any():
        return np.full(rows.shape[1], np.nan)
    return rows[answered].mean(axis=0)


def _named_a_word(rows: np.ndarray) -> np.ndarray:
    """Per row: some word has positive probability (not a NaN row, not an all-zero one)."""
    with np.errstate(invalid="ignore"):
        return ~np.isnan(rows).any(axis=1) & (np.nan_to_num(rows).sum(axis=1) > 0)


def floor_unseen(prior: np.ndarray) -> np.ndarray:
    """A prior with its zeros raised to its smallest positive value.

    A zero in the prior does not mean "never": the paper's method (top-k next tokens) gives 0 to
    every word outside the top k, whose true prior is somewhere below the smallest one that made the
    list. The smallest seen value is the largest it could be, so flooring there divides unseen
    words by the most the evidence allows: their calibrated score is a lower bound, never inflated
    by a prior that was merely cut off (a zero would make it infinite).
    """
    prior = np.asarray(prior, dtype=np.float64)
    positive = prior[prior > 0]
    if positive.size == 0:
        raise ConfigError("the calibration prior gives no word a positive probability")
    return np.where(prior > 0, prior, positive.min())


def argmax_labels(distributions: np.ndarray, labels: Sequence[str]) -> list[str | None]:
    """The top label of each row; None where no word was seen (a NaN or all-zero row), never the first label
    by accident."""
    P = np.asarray(distributions, dtype=np.float64)
    seen = _named_a_word(P)
    best = np.argmax(np.where(seen[:, None], P, 0.0), axis=1)
    return [labels[i] if ok else None for i, ok in zip(best.tolist(), seen.tolist())]


def calibrated_argmax(distributions: np.ndarray, prior: np.ndarray, labels: Sequence[str]) -> list[str | None]:
    """The top label of each row after contextual calibration, by the rule of `floor_unseen`.

    An all-NaN prior (no content-free input named any word) cannot calibrate: every row is None,
    so calibrated accuracy counts them as unanswered rather than inventing a prediction.
    """
    prior = np.asarray(prior, dtype=np.float64)
    if np.isnan(prior).all():
        return [None] * len(distributions)
    return argmax_labels(calibrate(distributions, floor_unseen(prior)), labels)


def calibrate(distributions: np.ndarray, prior: np.ndarray) -> np.ndarray:
    """Contextual calibration (Zhao et al. 2021): divide out a persona's content-free prior, renormalize."""
    P = np.asarray(distributions, dtype=np.float64)
    prior = np.asarray(prior, dtype=np.float64)
    if prior.shape != (P.shape[1],) or (prior <= 0).any():
        raise ConfigError("the calibration prior must be a positive vector over the same words")
    adjusted = P / prior
    with np.errstate(invalid="ignore"):  # a NaN row (nothing seen) stays NaN
        return adjusted / adjusted.sum(axis=1, keepdims=True)
