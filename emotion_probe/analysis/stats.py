"""Small statistical helpers shared by the bias, hierarchy and negotiation measures: exact paired tests,
percentile bootstrap intervals, and strict JSON for statistics that are missing.

Every function is plain NumPy/SciPy on arrays, seeded by the caller's generator, so the same seed
gives the same interval on any machine.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from scipy.stats import binomtest

#: The coverage of every bootstrap interval emolab reports (two-sided, percentile method).
CONFIDENCE = 0.95


def sign_test(wins_a: int, wins_b: int) -> float:
    """Two-sided exact sign test: under H0 each of the wins_a + wins_b discordant pairs favours A or B
    with probability 1/2. McNemar's exact test is this test on the two discordant counts.

    No discordant pair carries no evidence either way: p = 1 (binomtest refuses n = 0).
    """
    if wins_a < 0 or wins_b < 0:
        raise ValueError(f"discordant counts must be non-negative, got {wins_a} and {wins_b}")
    n = wins_a + wins_b
    return 1.0 if n == 0 else float(binomtest(wins_a, n, 0.5, alternative="two-sided").pvalue)


def resample_rows(n: int, resamples: int, rng: np.random.Generator) -> np.ndarray:
    """[resamples, n] row indices drawn with replacement: one bootstrap sample of the rows per line."""
    return rng.integers(0, n, size=(resamples, n))


def percentile_interval(values: np.ndarray, confidence: float = CONFIDENCE) -> tuple[float, float]:
    """The percentile bootstrap interval of `values` (one statistic per resample).

    Resamples where the statistic is undefined (NaN: e.g. an accuracy over no answered rows, a depth
    of a graph with a cycle) are left out; with none left the interval is (NaN, NaN).
    """
    values = np.asarray(values, dtype=np.float64)
    values = values[np.isfinite(values)]
    if values.size == 0:
        return float("nan"), float("nan")
    tail = (1 - confidence) / 2 * 100
    low, high = np.percentile(values, [tail, 100 - tail])
    return float(low), float(high)


def upper_tail_p(observed: float, null: np.ndarray) -> float:
    """One-sided Monte Carlo p-value that the observed statistic is this large by chance:
    (1 + #{null >= observed}) / (1 + len(null)), which is never 0 (Davison & Hinkley 1997, eq. 4.11).

    Values within 1e-12 of the observed one count as reaching it, so a shuffle that reproduces the
    observed alignment is not lost to float rounding of the same fraction.
    """
    null = np.asarray(null, dtype=np.float64)
    if null.size == 0 or not np.isfinite(observed):
        return float("nan")
    return float((1 + np.count_nonzero(null >= observed - 1e-12)) / (1 + null.size))


def json_safe(value: Any) -> Any:
    """`value` with every NaN and infinity replaced by None, recursively, and numpy scalars and arrays
    made plain Python: what strict JSON can hold.

    Python's json writes NaN as a bare `NaN` token, which is not JSON: jq, JavaScript's JSON.parse
    and many other readers reject the whole file. A missing statistic (no deal, too few trials)
    is null instead. Other objects pass through unchanged (a caller's `default=` still sees them).
    """
    if isinstance(value, dict):
        return {key: json_safe(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(item) for item in value]
    if isinstance(value, np.ndarray):
        return json_safe(value.tolist())
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, (float, np.floating)):
        return float(value) if math.isfinite(value) else None
    if value is not None and type(value).__name__ in ("NAType", "NaTType"):  # pandas' missing values
        return None
    return value


def finite_or_none(value: Any) -> float | None:
    """`value` as a float when it is a finite number; None for anything else (None, text, NaN, an infinity),
    as read from records a model or a person filled."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None
