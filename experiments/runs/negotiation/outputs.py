"""What a negotiation run writes after its trials: summary.json, the error-price figure, and per trial
the pies of reports and predictions and the matching matrix of the probed messages."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from agents.negotiation import NegotiationScenario
from emotion_probe.analysis.negotiation import (
    AnalysisSettings,
    correlation_caption,
    draw_fit,
    error_price_correlation,
)
from emotion_probe.analysis.quality import excluded_mask, flag_counts
from emotion_probe.analysis.stats import json_safe
from emotion_probe.files import save_figure
from emotion_probe.wheel import EmotionWheel
from environments.negotiation import matching_over_conversation


def matching_record(values: dict, emotions: list[str]) -> dict:
    """matching_trial<N>.json: P(column | row) between the run's primaries (`emotions`, the labels) over one
    conversation's probed customer messages.

    A row is null when its primary never co-occurred with another (no probe mass on it yet).
    """
    C = np.asarray(values.get("probe_cooccurrence") or np.zeros((len(emotions),) * 2), dtype=float)
    matching = matching_over_conversation(values, emotions)
    return {"trial": values.get("trial"), "labels": list(emotions),
            "probed_messages": sum(t.get("speaker") == "probe" for t in values.get("turns", [])),
            "matching": [row.tolist() if total > 0 else None for row, total in zip(matching, C.sum(axis=1))],
            "cooccurrence": C.tolist()}


def _mean(values: pd.Series) -> float | None:
    """Mean over the values present (NaN skipped); None when there are none."""
    values = pd.to_numeric(values, errors="coerce")
    return float(values.mean()) if values.notna().any() else None


def _sd(values: pd.Series) -> float | None:
    values = pd.to_numeric(values, errors="coerce").dropna()
    return float(values.std(ddof=1)) if len(values) > 1 else None


def summarize(trials: pd.DataFrame, scenario: NegotiationScenario, analysis: AnalysisSettings, seed: int = 0) -> dict:
    """summary.json: counts, means, and the correlation of prediction error with price across trials.

    Means skip what is missing: a trial with no scored prediction has no error, and with
    `analysis.no_sale_price=exclude` a trial without a sale has no price. Missing statistics are
    None, never NaN, so the file is strict JSON (emotion_probe.analysis.stats.json_safe).

    `flagged` counts the trials each quality check flagged. The trials flagged by a check named in
    `analysis.exclude` are left out of the price and error means and the correlation (the counts of
    trials, deals and failures keep them); `excluded_trials` and `excluded_by` say how many and why.
    """
    status = trials["status"]
    excluded = excluded_mask(trials, analysis.exclude)
    kept = trials[~excluded]
    deals = kept[kept["deal"]]
    correlation = error_price_correlation(kept["mean_abs_error_pp"], kept["price"], seed=seed)
    summary = {
        "scenario": scenario.name, "trials": len(trials), "deals": int((status == "deal").sum()),
        "walk_aways": int((status == "walk_away").sum()), "max_turns_reached": int((status == "max_turns").sum()),
        "pairing": analysis.pairing, "no_sale_price": analysis.no_sale_price,
        "skip_first_prediction": analysis.skip_first_prediction,
        "mean_price": _mean(kept["price"]), "sd_price": _sd(kept["price"]),
        "mean_accept_price": _mean(deals["accept_price"]), "mean_closing_paid": _mean(deals["closing_paid"]),
        "over_budget": int(trials["over_budget"].sum()),
        "mean_abs_error_pp": _mean(kept["mean_abs_error_pp"]), "sd_abs_error_pp": _sd(kept["mean_abs_error_pp"]),
        "mean_js_divergence": _mean(kept["js_divergence"]),
        "scored_predictions": int(trials["scored_predictions"].sum()),
        "skipped_pairs": int(trials["skipped_pairs"].sum()),
        "trials_without_error": int(trials["mean_abs_error_pp"].isna().sum()),
        "parse_failures": int(trials["parse_failures"].sum()),
        "truncated": int(trials["truncated"].sum()),
        "report_sum_mean": _mean(trials["report_sum_mean"]),
        "prediction_sum_mean": _mean(trials["prediction_sum_mean"]),
        "correlation_n": correlation.pop("n"), **correlation,
        "flagged": flag_counts(trials),
        "exclude": list(analysis.exclude),
        "excluded_trials": int(excluded.sum()),
        "excluded_by": flag_counts(trials, analysis.exclude),
    }
    return json_safe(summary)


def draw_error_vs_price(trials: pd.DataFrame, out_dir: Path, summary: dict) -> None:
    """error_vs_price.png: one point per trial, the least-squares line, and the correlation in the title; the
    trials `analysis.exclude` left out of the correlation are left out here too."""
    trials = trials[~excluded_mask(trials, summary.get("exclude") or [])]
    fig, ax = plt.subplots(figsize=(5.5, 4))
    error, price = trials["mean_abs_error_pp"].astype(float), trials["price"].astype(float)
    ax.scatter(error, price, alpha=0.5, color="#00A1FF", label="trial")
    draw_fit(ax, error, price)
    ax.set_xlabel("mean prediction error (percentage points)")
    ax.set_ylabel("price" + (" (no sale = 0)" if summary["no_sale_price"] == 0 else " (no sale excluded)"))
    caption = correlation_caption({**summary, "n": summary["correlation_n"]})
    if summary.get("excluded_trials"):
        caption += f"; {summary['excluded_trials']} flagged trials left out ({', '.join(summary['exclude'])})"
    ax.set_title(caption.replace("; ", "\n"), fontsize=8)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=7, frameon=False)
    print(f"prediction error vs price ({summary['pairing']} pairing): {caption}")
    fig.tight_layout()
    save_figure(fig, out_dir / "error_vs_price.png", dpi=150)
    plt.close(fig)


def draw_trial_pies(turns: list[dict], path: Path, wheel: EmotionWheel) -> None:
    """Per turn, the customer's self-report beside the salesperson's prediction, as in the paper's figures;
    wedges in the order and colours of the wheel's primary groups."""
    pairs, prediction = [], None
    for turn in turns:
        if turn["speaker"] == "salesperson":
            prediction = turn.get("prediction")
        elif turn["speaker"] == "customer":
            pairs.append((turn["turn"], turn.get("report"), prediction))
            prediction = None
    if not pairs:
        return
    colors = [wheel.group_colors[p] for p in wheel.primaries]
    fig, axes = plt.subplots(2, len(pairs), figsize=(2.4 * len(pairs), 5), squeeze=False)
    for column, (turn, report, predicted) in enumerate(pairs):
        for row, (values, label) in enumerate([(report, "customer says"), (predicted, "salesperson predicts")]):
            ax = axes[row][column]
            if values is None or sum(values) <= 0:
                ax.text(0.5, 0.5, "unparsed", ha="center", va="center", fontsize=8)
                ax.axis("off")
            else:
                # The percentages on the wedges (small ones would overlap, so they are left unlabelled).
                ax.pie(values, colors=colors, startangle=90, autopct=lambda pct: f"{pct:.0f}" if pct >= 5 else "",
                       textprops={"fontsize": 7})
            ax.set_title(f"turn {turn}: {label}", fontsize=7)
    fig.legend(wheel.primaries, loc="lower center", ncols=min(len(wheel.primaries), 8), fontsize=7, frameon=False)
    fig.tight_layout(rect=(0, 0.05, 1, 1))
    save_figure(fig, path, dpi=120)
    plt.close(fig)
