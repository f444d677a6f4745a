"""The paper's negotiation measurement: emotion-prediction error, sale price, and how the two correlate.

The authors (phys-ai/Emotion-Hierarchy-LLMs, `plot_emotion_dynamics.py`) score a conversation by
the absolute difference, in percentage points, between the salesperson's predicted percentages and
the customer's self-reported percentages over the primaries (the authors' six; here the run's wheel's),
averaged over emotions and rounds.
Each salesperson message is compared with the customer message that answers it in the same round.
The outcome is the price the customer says it paid, with 0 when it names none. The paper's claim is
the Pearson correlation, across trials, between the trial's mean error and that price.

This module computes those quantities from the turn records a negotiation writes (the state's
`turns`, and transcript.jsonl): plain functions, no I/O, so the run, the sweep report and the tests
share one definition.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, field_validator
from scipy.spatial.distance import jensenshannon
from scipy.stats import pearsonr, permutation_test, rankdata, spearmanr

from emotion_probe.analysis.quality import CHECKS, QualityContext, QualitySettings, quality_row
from emotion_probe.analysis.stats import finite_or_none, json_safe

__all__ = ["AnalysisSettings", "dumps_strict", "error_price_correlation", "paired_rounds",
           "trial_metrics", "trial_price", "trial_row"]

Pairing = Literal["response", "previous"]


class AnalysisSettings(BaseModel):
    """conf/experiment/negotiation.yaml `analysis:` how trials are scored."""

    model_config = ConfigDict(extra="forbid")

    # No defaults here: they live in conf/experiment/negotiation.yaml, and the YAML's comments explain them.
    pairing: Pairing = Field(description="response: a prediction against the customer report that answers it "
                                         "(the authors' pairing) | previous: against the report given just before it")
    no_sale_price: Literal[0, "exclude"] = Field(description="the price of a trial without a sale: 0 (the "
                                                             "authors' choice) | exclude (left out of the price)")
    # The authors' plot drops the first round of both series (`.iloc[1:]`), so the opening guess, made
    # before the customer has said anything, is not scored there.
    skip_first_prediction: bool = Field(description="leave the salesperson's first prediction unscored")
    quality: QualitySettings = Field(description="the thresholds of the dialogue-quality checks")
    exclude: list[str] = Field(description="quality checks whose flagged trials are left out of the price and "
                                           "error means and the error-price correlation")

    @field_validator("exclude")
    @classmethod
    def _known_checks(cls, names: list[str]) -> list[str]:
        unknown = [name for name in names if name not in CHECKS]
        if unknown:
            raise ValueError(f"unknown quality check {unknown[0]!r} (known: {', '.join(CHECKS)})")
        return names


# --- pairing predictions with reports ----------------------------------------------------------


def _dialogue(turns: Sequence[dict]) -> list[dict]:
    return [t for t in turns if t.get("speaker") in ("salesperson", "customer")]


def paired_rounds(turns: Sequence[dict], pairing: Pairing = "response", *,
                  skip_first_prediction: bool = False) -> tuple[list[tuple[list[float], list[float]]], int]:
    """(prediction, report) pairs of one trial, and how many pairs were skipped for a missing side.

    The salesperson and the customer alternate, so each salesperson message has at most one
    counterpart customer message:

    - `response`: the customer message right after it, which answers it. The prediction is then a
      forecast of how the customer will feel about what the salesperson just said; this is how the
      authors pair them (round t's prediction with round t's report).
    - `previous`: the customer message right before it, the one the salesperson was reading. The
      prediction is then a reading of the customer's current state. The salesperson's opening
      message has no such counterpart and is not a pair.

    A pair whose prediction or report is None (a failed parse) is skipped and counted, not scored
    as zeros (the authors' regex turned a missing number into 0%, which inflates the error).
    """
    if pairing not in ("response", "previous"):
        raise ValueError(f"pairing must be 'response' or 'previous', not {pairing!r}")
    dialogue = _dialogue(turns)
    pairs: list[tuple[list[float], list[float]]] = []
    skipped = 0
    first = True
    for i, turn in enumerate(dialogue):
        if turn["speaker"] != "salesperson":
            continue
        is_first, first = first, False
        j = i + 1 if pairing == "response" else i - 1
        if not 0 <= j < len(dialogue) or dialogue[j]["speaker"] != "customer":
            continue  # no counterpart: not a round that can be scored
        if is_first and skip_first_prediction:
            continue
        prediction, report = turn.get("prediction"), dialogue[j].get("report")
        if prediction is None or report is None:
            skipped += 1
            continue
        pairs.append((list(prediction), list(report)))
    return pairs, skipped


def _mean_or_nan(values: Sequence[float]) -> float:
    return float(np.mean(values)) if len(values) else float("nan")


def trial_metrics(turns: Sequence[dict], pairing: Pairing = "response", *,
                  skip_first_prediction: bool = False, emotions: Sequence[str] | None = None) -> dict[str, Any]:
    """Prediction error and bookkeeping counts of one trial.

    - `mean_abs_error_pp`: mean over the paired rounds and the primaries of |predicted - reported|,
      in percentage points (0 = perfect, 200/P = all mass on a wrong emotion, for P primaries; 100/3
      for six); NaN with no pair.
    - `abs_error_pp_<emotion>`, one column per emotion when `emotions` (the run's primaries, in the
      order of the reports' values) is given: that emotion's |predicted - reported|, averaged over the
      paired rounds; `mean_abs_error_pp` is their mean.
    - `js_divergence`: mean Jensen-Shannon divergence (base 2, 0..1) of the paired distributions,
      a scale-free companion that weighs a miss on a small emotion less.
    - `scored_predictions`, `skipped_pairs` (a side failed to parse), `turns` (dialogue messages),
      `parse_failures` (any record, closing included), `truncated` (messages cut at max_tokens),
      `report_sum_mean` / `prediction_sum_mean`: the mean raw sum before renormalization, which
      shows how far the agents were from 100 before it.
    """
    pairs, skipped = paired_rounds(turns, pairing, skip_first_prediction=skip_first_prediction)
    errors, divergences, by_emotion = [], [], []
    for prediction, report in pairs:
        p, q = np.asarray(prediction, dtype=float), np.asarray(report, dtype=float)
        if emotions is not None and not len(p) == len(q) == len(emotions):
            raise ValueError(f"a report or prediction has {len(p)} or {len(q)} values, not one per emotion "
                             f"({len(emotions)})")
        difference = np.abs(p - q)
        by_emotion.append(difference)
        errors.append(float(difference.mean()))
        divergences.append(float(jensenshannon(p / 100, q / 100, base=2) ** 2))
    dialogue = _dialogue(turns)
    report_sums = [float(t["report_sum"]) for t in dialogue if t.get("report_sum") is not None]
    prediction_sums = [float(t["prediction_sum"]) for t in dialogue if t.get("prediction_sum") is not None]
    per_emotion = np.mean(by_emotion, axis=0) if by_emotion else np.full(len(emotions or ()), np.nan)
    return {
        "mean_abs_error_pp": _mean_or_nan(errors),
        **{f"abs_error_pp_{emotion}": float(value) for emotion, value in zip(emotions or (), per_emotion)},
        "js_divergence": _mean_or_nan(divergences),
        "scored_predictions": len(errors),
        "skipped_pairs": skipped,
        "turns": len(dialogue),
        "parse_failures": sum(t.get("parse_status") == "failed" for t in turns),
        "truncated": sum(bool(t.get("truncated")) for t in turns),
        "report_sum_mean": _mean_or_nan(report_sums),
        "prediction_sum_mean": _mean_or_nan(prediction_sums),
    }


# --- the price of a trial ----------------------------------------------------------------------


def trial_price(status: str, turns: Sequence[dict], *, budget: float | None = None,
                no_sale_price: Literal[0, "exclude"] = 0) -> dict[str, Any]:
    """What one trial sold for, from its records alone (the one place a price is recorded).

    - `accept_price`: the price the customer named in the turn where it accepted: the price both sides
      agreed in the talk.
    - `closing_paid`: the customer's answer to "what did you pay?" at closing (the authors' only
      price). Kept apart because a model may answer with a different number than it accepted.
    - `price`, the trial's outcome: on a deal, the accept price, or the closing answer when the
      accept price is missing; without a deal, 0 (`no_sale_price=0`, as the authors counted it) or
      NaN (`exclude`: the trial drops out of price statistics). A deal without any price is NaN.
    - `over_budget`: the accept price is above the customer's budget, which the customer's
      instructions forbid; such deals are flagged, not dropped.
    """
    if no_sale_price not in (0, "exclude"):
        raise ValueError(f"no_sale_price must be 0 or 'exclude', not {no_sale_price!r}")
    accepts = [t for t in turns if t.get("speaker") == "customer" and t.get("decision") == "accept"]
    accept = finite_or_none(accepts[-1].get("price")) if accepts else None
    closings = [t for t in turns if t.get("speaker") == "closing"]
    closing = finite_or_none(closings[-1].get("paid")) if closings else None
    deal = status == "deal"
    if deal:
        price = accept if accept is not None else closing if closing is not None else float("nan")
    else:
        price = 0.0 if no_sale_price == 0 else float("nan")
    return {
        "accept_price": accept if accept is not None else float("nan"),
        "closing_paid": closing if closing is not None else float("nan"),
        "price": price,
        "over_budget": bool(accept is not None and budget is not None and accept > budget),
    }


def trial_row(status: str, turns: Sequence[dict], settings: AnalysisSettings, budget: float | None = None,
              emotions: Sequence[str] | None = None, *, seller_cost: float | None = None,
              placeholder: str | None = None) -> dict[str, Any]:
    """The outcome, price, metric and quality columns of one finished trial, from its status and its records (a
    negotiation's transcript lines); with `emotions` (the run's primaries), a per-emotion error column each.

    The quality checks (emotion_probe.analysis.quality) judge an accepted price against [seller_cost, budget],
    and leave `placeholder`, the line a failed turn stands in with, out of the copying checks."""
    price = trial_price(status, turns, budget=budget, no_sale_price=settings.no_sale_price)
    closings = [t for t in turns if t.get("speaker") == "closing"]
    return {
        "status": status, "deal": status == "deal",
        # The columns trials.parquet has always had: what the closing answer kept, and the accepted price.
        "final_price": closings[-1].get("paid") if closings else None,
        "agreed_price": None if math.isnan(price["accept_price"]) else price["accept_price"],
        **price,
        **trial_metrics(turns, settings.pairing, skip_first_prediction=settings.skip_first_prediction,
                        emotions=emotions),
        **quality_row(turns, QualityContext(settings.quality, seller_cost=seller_cost, budget=budget,
                                            placeholder=placeholder)),
    }


# --- correlation of error with price -----------------------------------------------------------

#: Keys of error_price_correlation's result, in order.
CORRELATION_KEYS = ("n", "pearson_r", "pearson_p", "pearson_ci_low", "pearson_ci_high", "pearson_p_perm",
                    "spearman_rho", "spearman_p", "spearman_ci_low", "spearman_ci_high", "spearman_p_perm")


def _r_along_last_axis(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Pearson r of each row of x with each row of y (broadcast); NaN where a row is constant."""
    xc = x - x.mean(axis=-1, keepdims=True)
    yc = y - y.mean(axis=-1, keepdims=True)
    denominator = np.sqrt((xc * xc).sum(axis=-1) * (yc * yc).sum(axis=-1))
    with np.errstate(invalid="ignore", divide="ignore"):
        r = (xc * yc).sum(axis=-1) / denominator
    return np.where(denominator > 0, r, np.nan)


def _bootstrap_ci(x: np.ndarray, y: np.ndarray, rank: bool, n_boot: int, rng: np.random.Generator,
                  confidence: float) -> tuple[float | None, float | None]:
    """Percentile CI over trials: resample (error, price) pairs with replacement, recompute r (or rho).

    Resamples where one column is constant have no correlation and are dropped (with few trials,
    drawing one trial n times is likely); the CI comes from the rest.
    """
    index = rng.integers(0, len(x), size=(n_boot, len(x)))
    xs, ys = x[index], y[index]
    if rank:
        xs, ys = rankdata(xs, axis=-1), rankdata(ys, axis=-1)
    values = _r_along_last_axis(xs, ys)
    values = values[np.isfinite(values)]
    if not len(values):
        return None, None
    tail = (1 - confidence) / 2 * 100
    low, high = np.percentile(values, [tail, 100 - tail])
    return float(low), float(high)


def _permutation_p(x: np.ndarray, y: np.ndarray, n_perm: int, seed: int) -> float:
    """Two-sided p of r under random re-pairing of errors with prices (exact when n! <= n_perm)."""
    result = permutation_test((x,), lambda xs, axis=-1: _r_along_last_axis(np.moveaxis(xs, axis, -1), y),
                              permutation_type="pairings", vectorized=True, n_resamples=n_perm,
                              alternative="two-sided", **_SEED_KEYWORD(seed))
    return float(result.pvalue)


def _seed_keyword() -> Any:
    """scipy >= 1.15 takes the seed as `rng`; older versions (pyproject allows 1.11) as `random_state`."""
    import inspect

    name = "rng" if "rng" in inspect.signature(permutation_test).parameters else "random_state"
    return lambda seed: {name: seed}


_SEED_KEYWORD = _seed_keyword()


def error_price_correlation(error: Sequence[float], price: Sequence[float], *, n_boot: int = 2000,
                            n_perm: int = 9999, seed: int = 0, confidence: float = 0.95) -> dict[str, Any]:
    """How a trial's prediction error goes with its price, across trials.

    Pairs with a missing value (NaN or None) on either side are dropped first; `n` counts the rest.
    Returns Pearson r (the paper's statistic) and Spearman rho (robust to a few extreme prices), each
    with its textbook p-value, a percentile bootstrap CI over trials (`n_boot` resamples of trials,
    errors and prices resampled together) and a permutation p-value (`n_perm` re-pairings of errors
    with prices, scipy.stats.permutation_test, `permutation_type="pairings"`). A permutation p makes
    no normality assumption, which prices with a spike at 0 (no sale) violate.

    With fewer than 3 pairs, or a constant column, every statistic is None: a correlation is then
    undefined, and None (not NaN) keeps summary.json strict JSON.
    """
    x = np.asarray([np.nan if v is None else v for v in error], dtype=float)
    y = np.asarray([np.nan if v is None else v for v in price], dtype=float)
    if x.shape != y.shape:
        raise ValueError(f"error and price differ in length: {len(x)} vs {len(y)}")
    keep = np.isfinite(x) & np.isfinite(y)
    x, y = x[keep], y[keep]
    result: dict[str, Any] = dict.fromkeys(CORRELATION_KEYS)
    result["n"] = int(len(x))
    if len(x) < 3 or np.ptp(x) == 0 or np.ptp(y) == 0:
        return result
    rng = np.random.default_rng(seed)
    pearson, spearman = pearsonr(x, y), spearmanr(x, y)
    result.update(pearson_r=float(pearson.statistic), pearson_p=float(pearson.pvalue),
                  spearman_rho=float(spearman.statistic), spearman_p=float(spearman.pvalue))
    result["pearson_ci_low"], result["pearson_ci_high"] = _bootstrap_ci(x, y, False, n_boot, rng, confidence)
    result["spearman_ci_low"], result["spearman_ci_high"] = _bootstrap_ci(x, y, True, n_boot, rng, confidence)
    result["pearson_p_perm"] = _permutation_p(x, y, n_perm, seed)
    result["spearman_p_perm"] = _permutation_p(rankdata(x), rankdata(y), n_perm, seed)
    return json_safe(result)


def dumps_strict(data: Any, **kwargs: Any) -> str:
    """JSON text that any parser accepts: NaN and infinities become null (json_safe), and
    `allow_nan=False` makes a value that slipped through an error instead of a bare `NaN` token."""
    return json.dumps(json_safe(data), allow_nan=False, **kwargs)


# --- drawing -----------------------------------------------------------------------------------


def correlation_caption(result: dict[str, Any]) -> str:
    """One line for a figure title: r and rho with their CIs and permutation p, or why there are none."""
    if result.get("pearson_r") is None:
        return f"n = {result.get('n', 0)}: too few trials or a constant column for a correlation"

    def ci(name: str) -> str:
        low, high = result.get(f"{name}_ci_low"), result.get(f"{name}_ci_high")
        return "" if low is None or high is None else f" [{low:.2f}, {high:.2f}]"

    return (f"n = {result['n']}: Pearson r = {result['pearson_r']:.2f}{ci('pearson')}, "
            f"p_perm = {result['pearson_p_perm']:.3g}; Spearman rho = {result['spearman_rho']:.2f}"
            f"{ci('spearman')}, p_perm = {result['spearman_p_perm']:.3g}")


def fit_line(x: Sequence[float], y: Sequence[float]) -> tuple[float, float] | None:
    """(slope, intercept) of the least-squares line of y on x over the finite pairs; None if undefined."""
    xs, ys = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    keep = np.isfinite(xs) & np.isfinite(ys)
    xs, ys = xs[keep], ys[keep]
    if len(xs) < 2 or np.ptp(xs) == 0:
        return None
    slope, intercept = np.polyfit(xs, ys, 1)
    return float(slope), float(intercept)


def draw_fit(ax: Any, x: Sequence[float], y: Sequence[float], **style: Any) -> tuple[float, float] | None:
    """The regression line of y on x across the x range, on a matplotlib axis (nothing when undefined)."""
    fit = fit_line(x, y)
    if fit is not None:
        xs = np.asarray(x, dtype=float)
        xs = xs[np.isfinite(xs)]
        grid = np.linspace(xs.min(), xs.max(), 50)
        ax.plot(grid, fit[0] * grid + fit[1], **{"color": "black", "lw": 1.5,
                                                  "label": f"fit: price = {fit[0]:.2g} x error + {fit[1]:.3g}",
                                                  **style})
    return fit
