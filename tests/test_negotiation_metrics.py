"""The paper's negotiation measurement: pairing, error, price, error-price correlation, strict JSON."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hydra import compose, initialize_config_module
from omegaconf import OmegaConf
from scipy import stats

from agents.negotiation import NegotiationScenario
from emotion_probe.errors import ConfigError
from experiments.runs.negotiation import run as negotiation_experiment
from emotion_probe.analysis.quality import QualitySettings
from emotion_probe.analysis.stats import json_safe
from experiments.app.common import validated, write_json_atomic
from experiments.runs.negotiation.outputs import summarize as _summary
from experiments.runs.negotiation.run import NegotiationSettings
from emotion_probe.analysis.negotiation import (
    AnalysisSettings,
    dumps_strict,
    error_price_correlation,
    fit_line,
    paired_rounds,
    trial_metrics,
    trial_price,
)

# The shipped thresholds of the quality checks (conf/experiment/negotiation.yaml analysis.quality).
QUALITY = QualitySettings(copy_words=6, repeat_words=6, flat_tolerance_pp=1, flat_share=0.5, neutral_turns=1)

# Fixed data: a noisy decreasing relation, with one tie in price.
ERROR = [3.1, 7.4, 12.0, 5.5, 20.3, 9.9, 15.2, 1.7, 11.1, 18.6, 6.4, 13.8]
PRICE = [9.0, 7.5, 4.0, 8.0, 1.0, 6.0, 5.5, 9.5, 4.0, 0.0, 8.5, 2.0]


def _strict_loads(text: str):
    def refuse(token: str):
        raise ValueError(f"non-standard JSON constant {token}")

    return json.loads(text, parse_constant=refuse)


# --- correlation -------------------------------------------------------------------------------


def test_correlation_estimates_equal_scipy_and_cis_contain_them():
    result = error_price_correlation(ERROR, PRICE, n_boot=2000, n_perm=999, seed=3)
    pearson, spearman = stats.pearsonr(ERROR, PRICE), stats.spearmanr(ERROR, PRICE)
    assert result["n"] == 12
    assert result["pearson_r"] == pytest.approx(pearson.statistic, abs=1e-12)
    assert result["pearson_p"] == pytest.approx(pearson.pvalue, rel=1e-9)
    assert result["spearman_rho"] == pytest.approx(spearman.statistic, abs=1e-12)
    assert result["spearman_p"] == pytest.approx(spearman.pvalue, rel=1e-9)
    assert result["pearson_r"] < -0.9 and result["spearman_rho"] < -0.9
    for name, estimate in (("pearson", result["pearson_r"]), ("spearman", result["spearman_rho"])):
        low, high = result[f"{name}_ci_low"], result[f"{name}_ci_high"]
        assert -1 <= low < estimate < high <= 1, (name, low, estimate, high)
    # A strong relation over 12 trials: few of 999 random re-pairings reach it.
    assert result["pearson_p_perm"] < 0.01 and result["spearman_p_perm"] < 0.01


@pytest.mark.parametrize("n, n_perm", [(12, 999), (5, 9999)])  # random re-pairings; all 5! exactly
def test_permutation_p_matches_scipy_permutation_test_with_the_same_seed(n, n_perm):
    x, y = np.asarray(ERROR[:n]), np.asarray(PRICE[:n])
    # A weak relation, so that the p-value is far from its floor and a wrong count would show.
    y = y + 6 * np.sin(np.arange(n) * 2.3)
    result = error_price_correlation(x, y, n_perm=n_perm, seed=11)
    for name, statistic in (("pearson", lambda a: stats.pearsonr(a, y).statistic),
                            ("spearman", lambda a: stats.spearmanr(a, y).statistic)):
        expected = stats.permutation_test((x,), statistic, permutation_type="pairings", n_resamples=n_perm,
                                          alternative="two-sided", rng=11)
        assert result[f"{name}_p_perm"] == pytest.approx(expected.pvalue, abs=1e-12), name
    assert 0.05 < result["pearson_p_perm"] < 1


def test_a_different_seed_moves_the_bootstrap_but_not_the_estimate():
    first = error_price_correlation(ERROR, PRICE, seed=0, n_perm=99)
    second = error_price_correlation(ERROR, PRICE, seed=1, n_perm=99)
    assert first["pearson_r"] == second["pearson_r"]
    assert first["pearson_ci_low"] != second["pearson_ci_low"]


def test_too_few_or_constant_gives_none_not_nan():
    keys = ["pearson_r", "pearson_p", "pearson_ci_low", "pearson_ci_high", "pearson_p_perm",
            "spearman_rho", "spearman_p", "spearman_ci_low", "spearman_ci_high", "spearman_p_perm"]
    # Missing values are dropped pairwise first: two pairs are left.
    two = error_price_correlation([1.0, 2.0, float("nan"), 4.0], [5.0, 3.0, 1.0, None])
    assert two["n"] == 2 and all(two[k] is None for k in keys)
    constant = error_price_correlation([1.0, 2.0, 3.0, 4.0], [0.0, 0.0, 0.0, 0.0])
    assert constant["n"] == 4 and all(constant[k] is None for k in keys)
    enough = error_price_correlation([1.0, 2.0, 3.0, 4.0], [0.0, 0.0, 1.0, 0.0])
    assert all(enough[k] is not None for k in keys)


def test_fit_line_is_least_squares_over_finite_points():
    slope, intercept = fit_line([0, 1, 2, float("nan")], [1, 3, 5, 100])
    assert slope == pytest.approx(2) and intercept == pytest.approx(1)
    assert fit_line([1, 1, 1], [1, 2, 3]) is None


# --- pairing and error -------------------------------------------------------------------------

A = [100, 0, 0, 0, 0, 0]
B = [0, 100, 0, 0, 0, 0]
C = [0, 100, 0, 0, 0, 0]
D = [0, 50, 50, 0, 0, 0]
F = [0, 0, 0, 0, 0, 100]

# The salesperson opens; its third prediction failed to parse; the customer accepts at 8.
TURNS = [
    {"speaker": "salesperson", "turn": 0, "prediction": A, "parse_status": "ok", "truncated": False},
    {"speaker": "customer", "turn": 1, "report": B, "report_sum": 110, "decision": "continue", "parse_status": "ok",
     "truncated": True},
    {"speaker": "probe", "turn": 1, "probe_primary": [0, 100, 0, 0, 0, 0]},
    {"speaker": "salesperson", "turn": 2, "prediction": C, "prediction_sum": 100, "parse_status": "ok"},
    {"speaker": "customer", "turn": 3, "report": D, "report_sum": 90, "decision": "continue", "parse_status": "ok"},
    {"speaker": "probe", "turn": 3, "probe_primary": [0, 50, 50, 0, 0, 0]},
    {"speaker": "salesperson", "turn": 4, "prediction": None, "parse_status": "failed", "truncated": True},
    {"speaker": "customer", "turn": 5, "report": F, "decision": "accept", "price": 8, "parse_status": "ok"},
    {"speaker": "closing", "turn": 6, "paid": 9, "paid_claimed": 9, "parse_status": "ok", "raw": '{"paid": 9}'},
]


def test_response_pairing_scores_each_prediction_against_the_report_that_answers_it():
    pairs, skipped = paired_rounds(TURNS, "response")
    assert pairs == [(A, B), (C, D)] and skipped == 1
    metrics = trial_metrics(TURNS, "response")
    # (A, B): |100| + |100| over 6 = 33.3 pp; (C, D): 50 + 50 over 6 = 16.7 pp; mean 25 pp.
    assert metrics["mean_abs_error_pp"] == pytest.approx(25.0)
    assert metrics["scored_predictions"] == 2 and metrics["skipped_pairs"] == 1
    assert metrics["js_divergence"] == pytest.approx((1.0 + 0.311278) / 2, abs=1e-5)
    assert metrics["turns"] == 6 and metrics["parse_failures"] == 1 and metrics["truncated"] == 2
    assert metrics["report_sum_mean"] == pytest.approx(100) and metrics["prediction_sum_mean"] == pytest.approx(100)


def test_previous_pairing_scores_each_prediction_against_the_report_before_it():
    pairs, skipped = paired_rounds(TURNS, "previous")
    # The opening prediction has no earlier report; the failed one (turn 4) would have met D.
    assert pairs == [(C, B)] and skipped == 1
    metrics = trial_metrics(TURNS, "previous")
    assert metrics["mean_abs_error_pp"] == pytest.approx(0.0) and metrics["js_divergence"] == pytest.approx(0.0)
    assert metrics["scored_predictions"] == 1


def test_skip_first_prediction_drops_the_opening_guess_as_the_authors_plot_does():
    metrics = trial_metrics(TURNS, "response", skip_first_prediction=True)
    assert metrics["mean_abs_error_pp"] == pytest.approx(100 / 6) and metrics["scored_predictions"] == 1


def test_pairing_when_the_customer_opens():
    r0, p1, r2 = [0, 0, 100, 0, 0, 0], [0, 0, 0, 100, 0, 0], [0, 0, 0, 0, 100, 0]
    turns = [{"speaker": "customer", "report": r0}, {"speaker": "salesperson", "prediction": p1},
             {"speaker": "customer", "report": r2}]
    assert paired_rounds(turns, "response") == ([(p1, r2)], 0)
    assert paired_rounds(turns, "previous") == ([(p1, r0)], 0)


def test_no_pair_gives_nan_error_and_a_bad_pairing_is_refused():
    metrics = trial_metrics([{"speaker": "salesperson", "prediction": None}, {"speaker": "customer", "report": B}])
    assert math.isnan(metrics["mean_abs_error_pp"]) and metrics["skipped_pairs"] == 1
    with pytest.raises(ValueError, match="pairing"):
        paired_rounds(TURNS, "next")


# --- price -------------------------------------------------------------------------------------


def test_deal_price_is_the_accept_price_and_the_closing_answer_is_kept_beside_it():
    price = trial_price("deal", TURNS, budget=20)  # both come from the records, the one place prices are
    assert price == {"accept_price": 8.0, "closing_paid": 9.0, "price": 8.0, "over_budget": False}


def test_deal_without_an_accept_price_falls_back_to_the_closing_answer():
    turns = [{**t, "price": None} if t["speaker"] == "customer" else t for t in TURNS]
    turns[-1] = {**turns[-1], "paid": 7}
    price = trial_price("deal", turns)
    assert math.isnan(price["accept_price"]) and price["closing_paid"] == 7 and price["price"] == 7
    nothing = trial_price("deal", [])
    assert math.isnan(nothing["price"])


@pytest.mark.parametrize("status", ["walk_away", "max_turns"])
def test_no_sale_counts_as_zero_or_is_excluded(status):
    closing = [{"speaker": "closing", "paid": None, "paid_claimed": 5}]
    zero = trial_price(status, closing, budget=20, no_sale_price=0)
    assert zero["price"] == 0.0 and math.isnan(zero["accept_price"]) and math.isnan(zero["closing_paid"])
    excluded = trial_price(status, closing, budget=20, no_sale_price="exclude")
    assert math.isnan(excluded["price"])
    with pytest.raises(ValueError, match="no_sale_price"):
        trial_price(status, closing, no_sale_price=-1)


def test_over_budget_flags_an_accept_price_above_the_budget():
    def accepting(price: float) -> list[dict]:
        return [{"speaker": "customer", "decision": "accept", "price": price}]

    assert trial_price("deal", accepting(25), budget=20)["over_budget"] is True
    assert trial_price("deal", accepting(20), budget=20)["over_budget"] is False
    assert trial_price("deal", accepting(25), budget=None)["over_budget"] is False


# --- settings and summary ----------------------------------------------------------------------


def test_analysis_config_is_validated_with_its_full_name():
    with initialize_config_module(config_module="conf", version_base="1.3"):
        cfg = compose(config_name="config", overrides=["experiment=negotiation"])
    fields = list(NegotiationSettings.model_fields)
    settings = validated(NegotiationSettings, OmegaConf.masked_copy(cfg, fields), "")
    assert settings.analysis == AnalysisSettings(pairing="response", no_sale_price=0, skip_first_prediction=False,
                                                quality=QUALITY, exclude=[])
    cfg.analysis.no_sale_price = "exclude"
    cfg.analysis.pairing = "previous"
    settings = validated(NegotiationSettings, OmegaConf.masked_copy(cfg, fields), "")
    assert settings.analysis.no_sale_price == "exclude" and settings.analysis.pairing == "previous"
    cfg.analysis.pairing = "next"
    with pytest.raises(ConfigError, match="analysis.pairing"):
        validated(NegotiationSettings, OmegaConf.masked_copy(cfg, fields), "")
    cfg.analysis.pairing = "response"
    OmegaConf.set_struct(cfg, False)
    cfg.analysis.typo = 1
    with pytest.raises(ConfigError, match="analysis.typo"):
        validated(NegotiationSettings, OmegaConf.masked_copy(cfg, fields), "")


SCENARIO = NegotiationScenario(name="acorn", item="an acorn", description="an acorn", seller_cost=1,
                               customer_persona="a shopper", customer_budget=20, max_turns=4)


def _trials(prices, errors, statuses) -> pd.DataFrame:
    n = len(prices)
    return pd.DataFrame({"status": statuses, "deal": [s == "deal" for s in statuses], "price": prices,
                         "accept_price": [p if s == "deal" else np.nan for p, s in zip(prices, statuses)],
                         "closing_paid": [np.nan] * n, "over_budget": [False] * (n - 1) + [True],
                         "mean_abs_error_pp": errors, "js_divergence": [0.1] * n, "scored_predictions": [2] * n,
                         "skipped_pairs": [1] * n, "parse_failures": [0] * (n - 1) + [3], "truncated": [1] * n,
                         "report_sum_mean": [np.nan] * n, "prediction_sum_mean": [np.nan] * n})


def test_summary_reports_the_correlation_over_the_price_column():
    statuses = ["deal"] * 4 + ["walk_away"]
    trials = _trials([9.0, 7.0, 8.0, 3.0, 0.0], [2.0, 6.0, 4.0, 9.0, 12.0], statuses)
    summary = _summary(trials, SCENARIO, AnalysisSettings(pairing="response", no_sale_price=0,
                                                          skip_first_prediction=False, quality=QUALITY, exclude=[]),
                       seed=0)
    expected = stats.pearsonr(trials["mean_abs_error_pp"], trials["price"])
    assert summary["correlation_n"] == 5 and summary["pearson_r"] == pytest.approx(expected.statistic)
    assert summary["deals"] == 4 and summary["walk_aways"] == 1 and summary["max_turns_reached"] == 0
    assert summary["mean_price"] == pytest.approx(27 / 5) and summary["mean_accept_price"] == pytest.approx(27 / 4)
    assert summary["over_budget"] == 1 and summary["parse_failures"] == 3 and summary["truncated"] == 5
    assert summary["skipped_pairs"] == 5 and summary["scored_predictions"] == 10
    assert summary["pairing"] == "response" and summary["no_sale_price"] == 0


def test_summary_without_any_statistic_is_strict_json():
    trials = _trials([np.nan, np.nan, np.nan], [np.nan] * 3, ["walk_away"] * 3)
    summary = _summary(trials, SCENARIO, AnalysisSettings(pairing="response", no_sale_price="exclude",
                                                        skip_first_prediction=False, quality=QUALITY, exclude=[]))
    loaded = _strict_loads(dumps_strict(summary))
    assert loaded["mean_price"] is None and loaded["mean_abs_error_pp"] is None and loaded["pearson_r"] is None
    assert loaded["trials_without_error"] == 3 and loaded["no_sale_price"] == "exclude"


# --- strict JSON -------------------------------------------------------------------------------


def test_json_safe_turns_nan_and_infinity_into_null_recursively():
    data = {"a": float("nan"), "b": [float("inf"), 1.5, np.float32("nan"), (np.float64(-np.inf), 2)],
            "c": np.int64(3), "d": {"e": np.array([1.0, np.nan])}, "f": np.bool_(True), "g": pd.NA, "h": "NaN"}
    with pytest.raises(ValueError):
        json.dumps(data, allow_nan=False, default=str)  # the raw data is not strict JSON
    loaded = _strict_loads(dumps_strict(data))
    assert loaded == {"a": None, "b": [None, 1.5, None, [None, 2]], "c": 3, "d": {"e": [1.0, None]}, "f": True,
                      "g": None, "h": "NaN"}
    assert json_safe(7) == 7 and json_safe(None) is None


def test_write_json_atomic_writes_strict_json(tmp_path: Path):
    write_json_atomic(tmp_path / "x.json", {"r": float("nan"), "path": tmp_path, "n": [np.int32(2)]})
    text = (tmp_path / "x.json").read_text()
    assert "NaN" not in text
    assert _strict_loads(text) == {"r": None, "path": str(tmp_path), "n": [2]}


# --- a run -------------------------------------------------------------------------------------


def _e(**values):
    return {**dict.fromkeys(["love", "joy", "surprise", "anger", "sadness", "fear"], 0), **values}


def test_a_run_writes_the_new_columns_and_strict_json(tmp_path: Path):
    """A scripted walk-away with no_sale_price=exclude: no price, every JSON output strict."""
    with initialize_config_module(config_module="conf", version_base="1.3"):
        cfg = compose(config_name="config", overrides=[
            "experiment=negotiation", f"paths.output_dir={tmp_path}", "salesperson/model=scripted",
            "customer/model=scripted", "model=scripted", "probe_messages=false", "analysis.no_sale_price=exclude",
            "analysis.pairing=previous"])
    cfg.salesperson.model.responses = [json.dumps({"message": m, "predicted_customer_emotions": _e(joy=100)})
                                       for m in ("$9!", "$7 then.")]
    cfg.customer.model.responses = [
        json.dumps({"message": "Too dear.", "my_emotions": _e(joy=50, anger=50), "decision": "continue",
                    "price": None}),
        json.dumps({"message": "No.", "my_emotions": _e(anger=100), "decision": "walk_away", "price": None}),
        json.dumps({"paid": None}),
    ]
    summary = negotiation_experiment.run(cfg)
    trials = pd.read_parquet(tmp_path / "trials.parquet")
    for column in ("accept_price", "closing_paid", "price", "over_budget", "mean_abs_error_pp", "js_divergence",
                   "scored_predictions", "skipped_pairs", "turns", "parse_failures", "truncated"):
        assert column in trials.columns, column
    row = trials.iloc[0]
    assert row["status"] == "walk_away" and math.isnan(row["price"]) and not row["over_budget"]
    # previous pairing: "$7 then." (joy 100) against "Too dear." (joy 50, anger 50): 100/6 pp.
    assert row["mean_abs_error_pp"] == pytest.approx(100 / 6) and row["scored_predictions"] == 1
    on_disk = _strict_loads((tmp_path / "summary.json").read_text())
    assert on_disk == summary
    assert on_disk["mean_price"] is None and on_disk["pairing"] == "previous" and on_disk["no_sale_price"] == "exclude"
    manifest = _strict_loads((tmp_path / "manifest.json").read_text())
    assert manifest["summary"]["pearson_r"] is None
