"""The dialogue-quality checks of a negotiation trial: each check on hand-made records, the columns and counts
they add to trials.parquet and summary.json, `analysis.exclude`, the console table and the sweep report."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from hydra import compose, initialize_config_module
from hypothesis import given, settings
from hypothesis import strategies as st
from omegaconf import OmegaConf
from rich.console import Console

from agents.negotiation import NEUTRAL_LINE, NegotiationScenario
from emotion_probe.analysis.negotiation import AnalysisSettings, trial_row
from emotion_probe.analysis.quality import (
    CHECKS,
    QualityContext,
    QualitySettings,
    flagged_checks,
    longest_shared_run,
    quality_row,
    words,
)
from emotion_probe.errors import ConfigError
from emolab_cli import emolab, one_error_line
from experiments.app.common import validated
from experiments.reports.negotiation import _condition_table, _exclusion_line, _flagged_table
from experiments.runs.negotiation.live import summary_table
from experiments.runs.negotiation.outputs import summarize
from experiments.runs.negotiation.run import NegotiationSettings

THRESHOLDS = QualitySettings(copy_words=6, repeat_words=6, flat_tolerance_pp=1, flat_share=0.5, neutral_turns=1)
CONTEXT = QualityContext(THRESHOLDS, seller_cost=5, budget=20, placeholder=NEUTRAL_LINE)
OPENING = "Welcome! This fine acorn is yours for only ten dollars today."
VARIED = [[40, 30, 10, 10, 5, 5], [10, 20, 30, 20, 10, 10], [0, 0, 50, 50, 0, 0]]


def salesperson(text: str, prediction=None, **fields) -> dict:
    return {"speaker": "salesperson", "text": text, "prediction": prediction, "parse_status": "ok", **fields}


def customer(text: str, report=None, decision: str = "continue", price=None, **fields) -> dict:
    return {"speaker": "customer", "text": text, "report": report, "decision": decision, "price": price,
            "parse_status": "ok", **fields}


def closing(paid, claimed) -> dict:
    return {"speaker": "closing", "paid": paid, "paid_claimed": claimed, "parse_status": "ok", "raw": None}


def run_check(name: str, turns: list[dict], context: QualityContext = CONTEXT):
    return CHECKS[name](turns, context)


# --- copying and self-repetition ---------------------------------------------------------------


def test_a_message_copying_six_words_of_the_other_side_is_flagged_five_are_not():
    six = [salesperson(OPENING), customer("Hmm, this fine acorn is yours for what exactly?")]
    five = [salesperson(OPENING), customer("Hmm, fine acorn is yours for what exactly?")]
    flagged, kept = run_check("copying", six), run_check("copying", five)
    assert flagged.flag and flagged.value == 6 and flagged.details["share"] == 0.5
    assert not kept.flag and kept.value == 5 and kept.details["share"] == 0.0


def test_copying_counts_only_earlier_messages_of_the_other_side():
    # The salesperson says its opening twice: repetition, not copying; the customer's echo comes first
    # and is copied by nobody later.
    turns = [salesperson(OPENING), customer("No thanks."), salesperson(OPENING)]
    assert not run_check("copying", turns).flag and run_check("copying", turns).value == 0
    repeated = run_check("self_repetition", turns)
    assert repeated.flag and repeated.value == len(words(OPENING)) and repeated.details["share"] == pytest.approx(1 / 3)


def test_the_neutral_line_of_failed_turns_is_never_copying():
    turns = [salesperson(NEUTRAL_LINE, parse_status="failed"), customer(NEUTRAL_LINE, parse_status="failed"),
             salesperson(NEUTRAL_LINE, parse_status="failed")]
    loose = QualityContext(THRESHOLDS.model_copy(update={"copy_words": 1, "repeat_words": 1}),
                           placeholder=NEUTRAL_LINE)
    assert run_check("copying", turns, loose).value == 0 and run_check("self_repetition", turns, loose).value == 0
    assert run_check("neutral_turns", turns).value == 3


def test_longest_shared_run():
    assert longest_shared_run("a b c d e".split(), "x b c d y".split()) == 3
    assert longest_shared_run([], ["a"]) == 0
    assert words("Don't STOP, it's $10.50!") == ["don't", "stop", "it's", "10", "50"]


sentences = st.lists(st.sampled_from(["the", "acorn", "is", "fine", "ten", "Dollars", "NO", "deal", "Yes"]),
                     min_size=0, max_size=12).map(" ".join)
speakers = st.sampled_from(["salesperson", "customer"])


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(speakers, sentences), max_size=6), st.sampled_from([str.upper, str.lower, str.title]))
def test_copying_ignores_case_and_never_counts_the_speakers_own_words(dialogue, recase):
    turns = [{"speaker": who, "text": text} for who, text in dialogue]
    recased = [{"speaker": who, "text": recase(text)} for who, text in dialogue]
    for name in ("copying", "self_repetition"):
        assert quality_row(turns, CONTEXT)[f"quality_{name}"] == quality_row(recased, CONTEXT)[f"quality_{name}"]
    one_side = [{**turn, "speaker": "customer"} for turn in turns]
    assert run_check("copying", one_side).value == 0


@settings(max_examples=60, deadline=None)
@given(sentences, sentences)
def test_a_shared_run_is_symmetric(a, b):
    assert longest_shared_run(words(a), words(b)) == longest_shared_run(words(b), words(a))


# --- flat reports ------------------------------------------------------------------------------


def test_uniform_reports_are_flat():
    uniform = [100 / 6] * 6
    turns = [salesperson("Hi", prediction=VARIED[0]), customer("Hm", report=uniform),
             salesperson("So?", prediction=VARIED[1]), customer("Well", report=[17, 17, 17, 17, 16, 16]),
             salesperson("Ok?", prediction=VARIED[2]), customer("Fine", report=VARIED[2])]
    result = run_check("flat_reports", turns)
    assert result.value == pytest.approx(2 / 6) and not result.flag  # two reports of six, under flat_share 0.5
    lower = QualityContext(THRESHOLDS.model_copy(update={"flat_share": 0.3}))
    assert run_check("flat_reports", turns, lower).flag


def test_reports_identical_across_all_turns_are_flat():
    turns = [salesperson("Hi", prediction=VARIED[0]), customer("Hm", report=VARIED[1]),
             salesperson("So?", prediction=VARIED[2]), customer("Well", report=VARIED[1])]
    assert run_check("flat_reports", turns).value == 0.5 and run_check("flat_reports", turns).flag
    varied = [*turns[:3], customer("Well", report=VARIED[2])]
    assert run_check("flat_reports", varied).value == 0 and not run_check("flat_reports", varied).flag


def test_flat_below_the_share_is_not_flagged_and_no_report_is_nothing():
    turns = [salesperson("Hi", prediction=VARIED[0]), customer("Hm", report=[100 / 6] * 6),
             salesperson("So?", prediction=VARIED[1]), customer("Well", report=VARIED[2])]
    result = run_check("flat_reports", turns)
    assert result.value == 0.25 and not result.flag
    nothing = run_check("flat_reports", [salesperson("Hi"), customer("Hm")])
    assert nothing.value == 0 and not nothing.flag


# --- prices, closing, failed turns -------------------------------------------------------------


@pytest.mark.parametrize("price, distance", [(3, 2.0), (25, 5.0), (5, 0.0), (20, 0.0), (12, 0.0)])
def test_an_accepted_price_outside_cost_and_budget_is_flagged(price, distance):
    result = run_check("price_out_of_range", [salesperson(OPENING), customer("Deal.", decision="accept", price=price)])
    assert result.value == distance and result.flag == (distance > 0)


def test_no_accepted_price_is_not_out_of_range():
    result = run_check("price_out_of_range", [salesperson(OPENING), customer("Bye.", decision="walk_away", price=3)])
    assert not result.flag and math.isnan(result.value)


def test_a_closing_price_without_a_deal_is_flagged():
    claim = run_check("closing_price_without_deal", [customer("Bye.", decision="walk_away"), closing(None, 12)])
    assert claim.flag and claim.value == 12
    for record in (closing(12, 12), closing(None, None)):
        result = run_check("closing_price_without_deal", [record])
        assert not result.flag and math.isnan(result.value)


def test_failed_turns_are_counted():
    turns = [salesperson(OPENING), customer(NEUTRAL_LINE, parse_status="failed"),
             salesperson("Still there?", parse_status="failed"), customer("Yes."), closing(None, None) | {
                 "parse_status": "failed"}]
    result = run_check("neutral_turns", turns)
    assert result.value == 2 and result.flag
    assert not run_check("neutral_turns", [salesperson(OPENING)]).flag


# --- trial_row, summary.json, exclude -----------------------------------------------------------


def _analysis(**changes) -> AnalysisSettings:
    with initialize_config_module(config_module="conf", version_base="1.3"):
        cfg = compose(config_name="config", overrides=["experiment=negotiation"])
    settings = validated(NegotiationSettings, OmegaConf.masked_copy(cfg, list(NegotiationSettings.model_fields)), "")
    return settings.analysis.model_copy(update=changes)


PARROT = [salesperson(OPENING, prediction=[100 / 6] * 6), customer(OPENING, report=[100 / 6] * 6),
          salesperson("A deal then at ten?", prediction=[100 / 6] * 6),
          customer("Deal.", report=[100 / 6] * 6, decision="accept", price=10), closing(10, 10)]


def test_trial_row_adds_a_number_and_a_flag_per_check_after_the_columns_it_had():
    row = trial_row("deal", PARROT, _analysis(), budget=20, seller_cost=5, placeholder=NEUTRAL_LINE)
    for name in CHECKS:
        assert isinstance(row[f"flag_{name}"], bool) and isinstance(row[f"quality_{name}"], float)
    assert flagged_checks(row) == ["copying", "flat_reports"]
    assert row["quality_copying"] == len(words(OPENING)) and row["quality_flat_reports"] == 1.0
    columns = list(row)
    assert columns.index("prediction_sum_mean") < columns.index("quality_copying")


SCENARIO = NegotiationScenario(name="acorn", item="an acorn", description="an acorn", seller_cost=1,
                               customer_persona="a shopper", customer_budget=20, max_turns=4)


def _trials() -> pd.DataFrame:
    """Five trials whose error falls as price rises, and a sixth, flagged by copying, far off the line."""
    error = [2.0, 4.0, 6.0, 8.0, 10.0, 1.0]
    price = [10.0, 8.0, 6.0, 4.0, 2.0, 0.0]
    n = len(price)
    return pd.DataFrame({"status": ["deal"] * n, "deal": [True] * n, "price": price, "accept_price": price,
                         "closing_paid": price, "over_budget": [False] * n, "mean_abs_error_pp": error,
                         "js_divergence": [0.1] * n, "scored_predictions": [2] * n, "skipped_pairs": [0] * n,
                         "parse_failures": [0] * n, "truncated": [0] * n, "report_sum_mean": [100.0] * n,
                         "prediction_sum_mean": [100.0] * n,
                         "flag_copying": [False] * (n - 1) + [True], "flag_flat_reports": [False, True] + [False] * 4,
                         "flag_neutral_turns": [False] * n})


def test_exclude_drops_flagged_trials_from_the_correlation_and_the_means():
    trials = _trials()
    every = summarize(trials, SCENARIO, _analysis(), seed=0)
    assert every["correlation_n"] == 6 and every["excluded_trials"] == 0 and every["excluded_by"] == {}
    assert every["flagged"] == {"copying": 1, "flat_reports": 1, "neutral_turns": 0}
    assert every["mean_price"] == pytest.approx(30 / 6)
    kept = summarize(trials, SCENARIO, _analysis(exclude=["copying"]), seed=0)
    assert kept["correlation_n"] == 5 and kept["pearson_r"] == pytest.approx(-1.0)
    assert kept["mean_price"] == pytest.approx(6.0) and kept["mean_abs_error_pp"] == pytest.approx(6.0)
    assert kept["excluded_trials"] == 1 and kept["excluded_by"] == {"copying": 1} and kept["exclude"] == ["copying"]
    assert kept["trials"] == 6 and kept["deals"] == 6  # counts keep every trial
    both = summarize(trials, SCENARIO, _analysis(exclude=["copying", "flat_reports"]), seed=0)
    assert both["correlation_n"] == 4 and both["excluded_by"] == {"copying": 1, "flat_reports": 1}


def test_an_unknown_check_in_exclude_is_refused_by_name():
    with pytest.raises(ConfigError, match=r"analysis.exclude: .*unknown quality check 'nope'"):
        validated(AnalysisSettings, {**_analysis().model_dump(), "exclude": ["nope"]}, "analysis")


def test_an_unknown_check_in_exclude_is_one_error_line(tmp_path):
    done = emolab("experiment=negotiation", "analysis.exclude=[copying,nope]", f"hydra.run.dir={tmp_path / 'run'}",
                  cwd=tmp_path)
    line = one_error_line(done)
    assert line.startswith("error: analysis.exclude: ") and "unknown quality check 'nope'" in line, line


# --- the console and the sweep report ----------------------------------------------------------


def _table_text(trials: pd.DataFrame) -> str:
    console = Console(width=200, record=True)
    console.print(summary_table(trials.assign(trial=range(len(trials)), turns=4)))
    return console.export_text()


def test_the_console_table_names_each_trials_flags():
    text = _table_text(_trials()).splitlines()
    assert "flags" in text[1] or "flags" in text[2]
    rows = [line for line in text if line.startswith("│")]
    assert rows[0].rstrip("│ ").endswith("-") and rows[1].rstrip("│ ").endswith("1")
    caption = " ".join(line.strip() for line in text[text.index(next(l for l in text if l.startswith("└"))) + 1:])
    assert "trial 1: flat_reports" in caption and "trial 5: copying" in caption and "trial 0:" not in caption
    assert "flags" not in _table_text(_trials().drop(columns=["flag_copying", "flag_flat_reports",
                                                              "flag_neutral_turns"]))


def test_the_report_counts_flags_by_condition_and_says_what_it_left_out():
    trials = _trials().assign(job=["0", "0", "0", "1", "1", "1"], condition=["a", "a", "a", "b", "b", "b"],
                              final_price=lambda f: f["price"])
    flagged = _flagged_table(trials).set_index("condition")
    assert flagged.loc["a", "flat_reports"] == 1 and flagged.loc["b", "copying"] == 1
    assert flagged["trials"].tolist() == [3, 3]
    assert _flagged_table(trials.drop(columns=["flag_copying", "flag_flat_reports", "flag_neutral_turns"])) is None
    trials["excluded"] = [False, False, False, False, False, True]  # job 1 excluded copying
    by_condition = _condition_table(trials, trials[~trials["excluded"]]).set_index("condition")
    assert by_condition.loc["b", "trials"] == 3 and by_condition.loc["b", "mean price"] == pytest.approx(3.0)
    line = _exclusion_line(trials, {"0": [], "1": ["copying"]})
    assert line.startswith("1 of 6 trials are left out") and line.endswith("flagged by: copying (1).")
    assert np.isclose(by_condition.loc["a", "mean price"], 8.0)
