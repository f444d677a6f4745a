"""Human play (`player=customer` / `player=salesperson`): every answer is checked and asked again with
its reason, and `:q` or the end of input stops cleanly, leaving the trial to resume. No model runs:
the other role is scripted."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from hydra import compose, initialize_config_module
from rich.console import Console

from agents.human import (
    InvalidAnswer,
    StopPlay,
    checked_answer,
    parse_accept_price,
    parse_decision,
    parse_emotions,
    parse_message,
    parse_paid,
)
from emotion_probe import EmotionWheel
from emolab_cli import transcript_records
from experiments.runs.negotiation import run as negotiation_experiment

REPO = Path(__file__).resolve().parents[1]
SHAVER = EmotionWheel.load("shaver").primaries
EKMAN = EmotionWheel.load("ekman").primaries
EMOTIONS = {"love": 10, "joy": 40, "surprise": 10, "anger": 10, "sadness": 10, "fear": 20}
SALES = json.dumps({"message": "A fine acorn, $9.", "predicted_customer_emotions": EMOTIONS})


def _reason(parse, text: str) -> str:
    with pytest.raises(InvalidAnswer) as caught:
        parse(text)
    return str(caught.value)


# --- the parsers ---------------------------------------------------------------------------------


@pytest.mark.parametrize(("text", "reason"), [
    ("abc", "'abc' is not a number"),
    ("10 20 30", "expected 6 numbers (love, joy, surprise, anger, sadness, fear), got 3"),
    ("1,2,3,4,5,6,7", "got 7"),
    ("-5 0 0 0 0 10", "love=-5 is negative"),
    ("0 0 0 0 0 120", "fear=120 is above 100"),
    ("0 0 0 0 0 12.5", "fear=12.5 is not a whole number"),
    ("0 0 0 0 0 0", "sum to 0"),
    ("joy=0", "sum to 0"),
    ("happy=50", "unknown emotion 'happy'; valid names: love, joy, surprise, anger, sadness, fear"),
    ("joy=40 50", "'50' is not name=value"),
    ("joy=abc", "'abc' is not a number"),
    ("joy=10 joy=20", "joy is given twice"),
    ("", "no emotions given"),
])
def test_bad_emotions_say_why(text, reason):
    assert reason in _reason(lambda t: parse_emotions(t, SHAVER), text)


def test_emotions_as_names_or_six_numbers():
    expected = {"love": 0, "joy": 40, "surprise": 0, "anger": 0, "sadness": 0, "fear": 60}
    assert parse_emotions("joy=40 fear=60", SHAVER) == expected
    assert parse_emotions("fear = 60, JOY=40", SHAVER) == expected  # any order, case, spacing, separator
    assert parse_emotions("0,40,0,0,0,60", SHAVER) == expected
    assert parse_emotions("0 40 0 0 0 60", SHAVER) == expected
    assert parse_emotions(" 0, 40, 0, 0, 0, 60% ", SHAVER) == expected
    # The sum need not be 100 (the report is renormalized, its raw sum kept), only above 0.
    assert parse_emotions("joy=5", SHAVER) == {**dict.fromkeys(expected, 0), "joy": 5}


def test_emotions_are_the_wheels_primaries_and_errors_list_them():
    """Under Ekman's wheel a Shaver name is refused with Ekman's names, and numbers follow Ekman's order."""
    assert _reason(lambda t: parse_emotions(t, EKMAN), "love=40 fear=60") == (
        "unknown emotion 'love'; valid names: anger, disgust, fear, happiness, sadness, surprise")
    assert parse_emotions("happiness=40 Disgust=60", EKMAN) == {
        "anger": 0, "disgust": 60, "fear": 0, "happiness": 40, "sadness": 0, "surprise": 0}
    assert parse_emotions("0 0 0 100 0 0", EKMAN)["happiness"] == 100
    assert "expected 6 numbers (anger, disgust, fear, happiness, sadness, surprise), got 3" in _reason(
        lambda t: parse_emotions(t, EKMAN), "1 2 3")
    plutchik = EmotionWheel.load("plutchik").primaries
    assert "expected 8 numbers" in _reason(lambda t: parse_emotions(t, plutchik), "0 40 0 0 0 60")
    assert f"eight whole numbers in the order {', '.join(plutchik)}" in _reason(lambda t: parse_emotions(t, plutchik), "x")
    answer = {"message": "Hi", "predicted_customer_emotions": parse_emotions("fear=100", EKMAN)}
    assert checked_answer("SalespersonTurn", answer, EKMAN)
    assert "predicted_customer_emotions.love: Field required" in _reason(
        lambda a: checked_answer("SalespersonTurn", a, SHAVER), answer)


@pytest.mark.parametrize(("text", "price"), [("12", 12), ("$12", 12), ("twelve dollars", 12), ("$1,200.50", 1200.5)])
def test_accept_price_reads_messy_text(text, price):
    assert parse_accept_price(text) == pytest.approx(price)


@pytest.mark.parametrize(("text", "reason"), [
    ("cheap", "'cheap' is not a price"),
    ("", "accepting needs a price"),
    ("-5", "is negative"),
    ("20000000", "above the largest price"),
])
def test_bad_accept_price_says_why(text, reason):
    assert reason in _reason(parse_accept_price, text)


def test_paid_is_a_price_or_no_purchase():
    assert parse_paid("$6") == 6 and parse_paid("six dollars") == 6
    for text in ("", "  ", "none", "I didn't buy it", "no deal"):
        assert parse_paid(text) is None, text
    assert "'abc' is not a price" in _reason(parse_paid, "abc")


def test_decision_and_message():
    assert parse_decision("Walk away") == "walk_away" and parse_decision(" ACCEPT ") == "accept"
    assert "unknown decision 'maybe'; type continue, accept or walk_away" in _reason(parse_decision, "maybe")
    assert parse_message("  Too dear.  ") == "Too dear."
    assert "the message is empty" in _reason(parse_message, "   ")
    assert "has 161 characters; at most 160" in _reason(parse_message, "x" * 161)


def test_checked_answer_uses_the_turn_schema():
    emotions = parse_emotions("joy=100", SHAVER)
    answer = {"message": "Fine.", "my_emotions": emotions, "decision": "accept", "price": None}
    assert "price: required when decision is accept" in _reason(lambda a: checked_answer("CustomerTurn", a, SHAVER),
                                                                answer)
    assert checked_answer("SalespersonTurn", {"message": "Hi", "predicted_customer_emotions": emotions}, SHAVER)


# --- the console ---------------------------------------------------------------------------------


def _console() -> Console:
    return Console(file=io.StringIO(), width=200, color_system=None)


def test_ask_human_asks_again_until_each_field_is_valid(monkeypatch):
    typed = ["", "x" * 200, "Welcome!", "abc", "1 2 3", "-1 0 0 0 0 0", "0 0 0 0 0 101", "0 0 0 0 0 0.5",
             "0 0 0 0 0 0", "hope=3", "love=10 joy=90"]
    monkeypatch.setattr(sys, "stdin", io.StringIO("\n".join(typed) + "\n"))
    console = _console()
    answer = negotiation_experiment.ask_human({"role": "salesperson", "schema": "SalespersonTurn", "turn": 0,
                                               "emotions": SHAVER}, console)
    assert answer == {"message": "Welcome!", "predicted_customer_emotions": {
        "love": 10, "joy": 90, "surprise": 0, "anger": 0, "sadness": 0, "fear": 0}}
    out = console.file.getvalue()
    for reason in ("message is empty", "has 200 characters", "'abc' is not a number", "got 3", "is negative",
                   "above 100", "not a whole number", "sum to 0", "unknown emotion 'hope'"):
        assert reason in out


@pytest.mark.parametrize("typed", ["Hello\n:q\n", "Hello\njoy=100\n"])  # :q, or input ending before the decision
def test_ask_human_stops_on_quit_or_end_of_input(monkeypatch, typed):
    monkeypatch.setattr(sys, "stdin", io.StringIO(typed))
    console = _console()
    request = {"role": "customer", "schema": "CustomerTurn", "turn": 1, "emotions": SHAVER}
    with pytest.raises(StopPlay) as caught:
        negotiation_experiment.ask_human(request, console)
    assert not caught.value.quiet
    # Other trials of the same run stop at their next prompt without asking (and without a second line).
    with pytest.raises(StopPlay) as caught:
        negotiation_experiment.ask_human(request, console)
    assert caught.value.quiet


def _cfg(tmp_path: Path, *overrides: str):
    with initialize_config_module(config_module="conf", version_base="1.3"):
        return compose(config_name="config", overrides=[
            "experiment=negotiation", f"paths.output_dir={tmp_path}", "salesperson/model=scripted",
            "customer/model=scripted", "model=scripted", "probe_messages=false", "cache.enabled=false",
            "scenario.max_turns=3", *overrides])


def test_salesperson_player_quits_and_resumes(tmp_path, monkeypatch, capsys):
    """player=salesperson: message and predicted customer emotions, checked the same way; :q exits 0."""
    customer = {"message": "Hmm.", "my_emotions": EMOTIONS, "decision": "continue", "price": None}
    cfg = _cfg(tmp_path, "player=salesperson")
    cfg.customer.model.responses = [json.dumps(customer)]
    monkeypatch.setattr(sys, "stdin", io.StringIO("Hello!\nabc\njoy=40 fear=60\n:q\n"))
    with pytest.raises(SystemExit) as caught:
        negotiation_experiment.run(cfg)
    assert caught.value.code == 0
    out = capsys.readouterr().out
    assert "'abc' is not a number" in out
    assert "stopped at trial 0 turn 2; rerun into the same output dir to resume" in out
    lines = transcript_records(tmp_path)
    assert [(x["turn"], x["speaker"]) for x in lines] == [(0, "salesperson"), (1, "customer")]
    assert lines[0]["prediction"] == [0, 40, 0, 0, 0, 60] and lines[0]["parse_status"] == "human"

    cfg = _cfg(tmp_path, "player=salesperson")  # a fresh script: turn 1 is checkpointed, not asked again
    cfg.customer.model.responses = [json.dumps({**customer, "decision": "accept", "price": 7}), '{"paid": 7}']
    monkeypatch.setattr(sys, "stdin", io.StringIO("Seven, then.\n0,0,0,0,50,50\n"))
    assert negotiation_experiment.run(cfg)["deals"] == 1
    assert "salesperson, trial 0, turn 2" in capsys.readouterr().out
    lines = transcript_records(tmp_path)
    assert [(x["turn"], x["speaker"]) for x in lines] == [(0, "salesperson"), (1, "customer"), (2, "salesperson"),
                                                          (3, "customer"), (4, "closing")]


# --- end to end, as a person plays it ------------------------------------------------------------


def _emolab(run_dir: Path, typed: list[str], sales: list[str], *extra: str) -> subprocess.CompletedProcess:
    responses = "[" + ",".join(f"'{s}'" for s in sales) + "]"
    return subprocess.run(
        [sys.executable, "-m", "experiments.app.main", "experiment=negotiation", "player=customer",
         "salesperson/model=scripted", "customer/model=scripted", "model=scripted", "probe_messages=false",
         "cache.enabled=false", "scenario.max_turns=3", f"salesperson.model.responses={responses}",
         f"hydra.run.dir={run_dir}", *extra],
        input="".join(f"{line}\n" for line in typed), cwd=REPO, capture_output=True, text=True,
        env={**os.environ, "HF_HUB_OFFLINE": "1"}, timeout=300,
    )


# Typos in every field, then the right answer. Turn 1: the customer's first reply.
TURN_1 = ["", "x" * 161, "Too dear.",
          "abc", "10 20 30", "-5 0 0 0 0 10", "0 0 0 0 0 120", "0 0 0 0 0 12.5", "0 0 0 0 0 0", "happy=50",
          "joy=40 fear=60",
          "maybe", "continue"]
# Turn 3: the customer accepts, after a wrong price; then the closing question, after a wrong answer.
TURN_3 = ["Fine, six.", "0,100,0,0,0,0", "accept", "cheap", "six dollars"]
CLOSING = ["abc", "$6"]
REASONS = ["the message is empty", "has 161 characters", "'abc' is not a number", "got 3", "love=-5 is negative",
           "fear=120 is above 100", "fear=12.5 is not a whole number", "sum to 0", "unknown emotion 'happy'",
           "unknown decision 'maybe'", "'cheap' is not a price", "'abc' is not a price"]


def _transcript(run_dir: Path) -> list[dict]:
    return transcript_records(run_dir)


def _assert_finished_deal(run_dir: Path) -> None:
    trials = pd.read_parquet(run_dir / "trials.parquet")
    assert trials.loc[0, "status"] == "deal" and trials.loc[0, "final_price"] == 6
    lines = _transcript(run_dir)
    assert [(x["turn"], x["speaker"]) for x in lines] == [(0, "salesperson"), (1, "customer"), (2, "salesperson"),
                                                          (3, "customer"), (4, "closing")]
    assert lines[1]["report"] == [0, 40, 0, 0, 0, 60] and lines[1]["decision"] == "continue"
    assert lines[3]["decision"] == "accept" and lines[3]["price"] == 6 and lines[4]["paid"] == 6


def test_a_person_with_typos_in_every_field_completes_a_trial(tmp_path):
    run_dir = tmp_path / "run"
    result = _emolab(run_dir, TURN_1 + TURN_3 + CLOSING, [SALES, SALES])
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Traceback" not in result.stderr
    for reason in REASONS:
        assert reason in result.stdout, reason
    _assert_finished_deal(run_dir)


def test_input_ending_mid_trial_stops_cleanly_and_a_rerun_resumes(tmp_path):
    run_dir = tmp_path / "run"
    # Input runs out in turn 3, after its message.
    result = _emolab(run_dir, TURN_1 + TURN_3[:1], [SALES, SALES])
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Traceback" not in result.stderr + result.stdout
    stop = [line for line in result.stdout.splitlines() if line.startswith("stopped")]
    assert stop == [f"stopped at trial 0 turn 3; rerun with hydra.run.dir={run_dir} to resume"]
    assert [(x["turn"], x["speaker"]) for x in _transcript(run_dir)] == [(0, "salesperson"), (1, "customer"),
                                                                         (2, "salesperson")]
    assert not (run_dir / "summary.json").exists()

    # The rerun (with the same settings, script included: a resume with other settings is refused) asks
    # turn 3 again from its start, and calls no model for the turns checkpointed before it.
    result = _emolab(run_dir, TURN_3 + CLOSING, [SALES, SALES])
    assert result.returncode == 0, result.stderr[-3000:]
    assert "customer, trial 0, turn 3" in result.stdout and "turn 1 (" not in result.stdout
    _assert_finished_deal(run_dir)  # each (turn, speaker) once
    manifest = json.loads((run_dir / "manifest.json").read_text(encoding="utf-8"))
    assert manifest["models"]["salesperson"]["usage"]["calls"].get("generate", 0) == 0


def test_a_rerun_with_other_settings_is_refused_and_changes_nothing(tmp_path):
    run_dir = tmp_path / "run"
    result = _emolab(run_dir, TURN_1 + TURN_3[:1], [SALES, SALES])
    assert result.returncode == 0, result.stderr[-3000:]

    def written() -> dict[str, bytes]:  # the run's outputs (Hydra's own log may gain lines, and .hydra/ is Hydra's)
        return {path.name: path.read_bytes() for path in run_dir.iterdir() if path.is_file() and path.suffix != ".log"}

    before = written()
    assert {"transcript.jsonl", "checkpoints.sqlite", "run_settings.json"} <= set(before)
    # Another script is another model: resuming its checkpointed turns would mix two models in one trial.
    result = _emolab(run_dir, TURN_3 + CLOSING, [SALES])
    assert result.returncode == 2, result.stderr[-3000:]
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: {run_dir} holds a run with other settings"), lines
    assert "Traceback" not in result.stderr
    assert written() == before
    # Another wheel is another emotion set: its reports cannot continue the checkpointed ones.
    result = _emolab(run_dir, TURN_3 + CLOSING, [SALES, SALES], "probe.wheel=ekman")
    assert result.returncode == 2, result.stderr[-3000:]
    assert result.stderr.startswith(f"error: {run_dir} holds a run with other settings") and "probe.wheel=ekman" in result.stderr
    assert written() == before
