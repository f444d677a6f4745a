"""The negotiation experiment as a user runs it: outputs, resume, human mode, watch."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hydra import compose, initialize_config_module
from rich.console import Console

from emolab_cli import transcript_records
from experiments.runs.negotiation import run as negotiation_experiment
from experiments.runs.negotiation.live import LiveView
from experiments.tools.watch import follow


def _cfg(tmp_path: Path, *overrides: str):
    with initialize_config_module(config_module="conf", version_base="1.3"):
        return compose(config_name="config", overrides=["experiment=negotiation", f"paths.output_dir={tmp_path}",
                                                        *overrides])


def _e(**values):
    return {**dict.fromkeys(["love", "joy", "surprise", "anger", "sadness", "fear"], 0), **values}


def test_human_customer_plays_through_interrupts(tmp_path, monkeypatch):
    answers = iter([
        {"message": "Too dear.", "my_emotions": _e(anger=100), "decision": "continue", "price": None},
        {"message": "Fine, 6.", "my_emotions": _e(joy=100), "decision": "accept", "price": 6},
        {"paid": "$6"},
    ])
    monkeypatch.setattr(negotiation_experiment, "ask_human", lambda request, console: next(answers))
    sales = [json.dumps({"message": m, "predicted_customer_emotions": _e(joy=100)}) for m in ("$9!", "$6 then.")]
    cfg = _cfg(tmp_path, "salesperson/model=scripted", "model=scripted", "player=customer")
    cfg.salesperson.model.responses = sales
    cfg.model.continuation_logprobs = {" joy": -1.0, " fear": -2.0}
    summary = negotiation_experiment.run(cfg)
    assert summary["deals"] == 1 and summary["mean_price"] == 6
    trials = pd.read_parquet(tmp_path / "trials.parquet")
    assert trials.loc[0, "status"] == "deal" and trials.loc[0, "mean_abs_error_pp"] == pytest.approx(100 / 6 * 2 / 2)
    lines = transcript_records(tmp_path)
    assert [x["speaker"] for x in lines if x["speaker"] != "probe"] == ["salesperson", "customer", "salesperson",
                                                                         "customer", "closing"]
    assert (tmp_path / "emotions_trial0.png").stat().st_size > 2000
    # A rerun into the same dir finds the trial finished and makes no model calls.
    cfg = _cfg(tmp_path, "salesperson/model=scripted", "model=scripted", "player=customer")
    assert negotiation_experiment.run(cfg)["deals"] == 1


def test_watch_replays_a_finished_transcript(tmp_path):
    records = [{"trial": 0, "turn": 0, "speaker": "salesperson", "text": "Hello!", "prediction": [0, 100, 0, 0, 0, 0],
                "parse_status": "ok"},
               {"trial": 0, "turn": 1, "speaker": "customer", "text": "Hi.", "report": [0, 50, 50, 0, 0, 0],
                "decision": "continue", "parse_status": "ok"},
               {"trial": 0, "turn": 1, "speaker": "probe", "probe_primary": [10, 20, 30, 20, 10, 10]}]
    (tmp_path / "transcript.jsonl").write_text("\n".join(json.dumps(r) for r in records) + "\n")
    (tmp_path / "summary.json").write_text("{}")
    console = Console(record=True, width=100)
    assert follow(tmp_path, LiveView(console, live=True)) == 3
    text = console.export_text()
    assert "salesperson: Hello!" in text and "customer: Hi." in text and "probe" in text


@pytest.mark.parametrize("wheel", ["ekman", "plutchik"])
def test_a_run_with_another_wheel_reports_and_writes_its_primaries(tmp_path, wheel):
    """probe.wheel picks the emotion set: prompts, transcript labels, trials.parquet columns, matching labels, figure."""
    from emotion_probe import EmotionWheel

    primaries = EmotionWheel.load(wheel).primaries
    first, last = primaries[0], primaries[-1]

    def report(**values: int) -> dict:
        return {**dict.fromkeys(primaries, 0), **values}

    cfg = _cfg(tmp_path, "salesperson/model=scripted", "customer/model=scripted", "model=scripted",
               "cache.enabled=false", f"probe.wheel={wheel}")
    cfg.salesperson.model.responses = [json.dumps({"message": m, "predicted_customer_emotions": report(**{first: 100})})
                                       for m in ("$9!", "$6 then.")]
    cfg.customer.model.responses = [
        json.dumps({"message": "Too dear.", "my_emotions": report(**{last: 100}), "decision": "continue", "price": None}),
        json.dumps({"message": "Fine.", "my_emotions": report(**{first: 50, last: 50}), "decision": "accept",
                    "price": 6}),
        '{"paid": 6}']
    cfg.model.continuation_logprobs = {f" {first}": -1.0, f" {last}": -2.0}
    assert negotiation_experiment.run(cfg)["deals"] == 1
    lines = [json.loads(x) for x in (tmp_path / "transcript.jsonl").read_text().splitlines()]
    turns = [x for x in lines if x["speaker"] in ("salesperson", "customer", "probe")]
    assert turns and all(x["emotions"] == primaries for x in turns)
    assert [x["report"] for x in lines if x["speaker"] == "customer"] == [
        [0] * (len(primaries) - 1) + [100], [50] + [0] * (len(primaries) - 2) + [50]]
    assert all(len(x["probe_primary"]) == len(primaries) for x in lines if x["speaker"] == "probe")
    trials = pd.read_parquet(tmp_path / "trials.parquet")
    errors = {f"abs_error_pp_{p}" for p in primaries}
    assert errors <= set(trials.columns) and not {c for c in trials.columns if c.startswith("abs_error_pp_")} - errors
    # Round 1: predicted all first, reported all last; round 2: first 100 against 50/50.
    assert trials.loc[0, f"abs_error_pp_{first}"] == 75 and trials.loc[0, f"abs_error_pp_{last}"] == 75
    assert trials.loc[0, "mean_abs_error_pp"] == pytest.approx(150 / len(primaries))
    matching = json.loads((tmp_path / "matching_trial0.json").read_text())
    assert matching["labels"] == primaries and len(matching["cooccurrence"]) == len(primaries)
    assert (tmp_path / "emotions_trial0.png").stat().st_size > 2000
    console = Console(record=True, width=160)
    follow(tmp_path, LiveView(console, live=True))  # no saved config here: the records' own labels name the rows
    shown = console.export_text()
    assert all(p in shown for p in primaries)


@pytest.mark.embedded
def test_a_default_negotiation_on_the_embedded_model_measures_every_trial(tmp_path):
    """Default settings (seeded, grammar on), cache off: turns parse, every trial is scored, nothing hidden shows."""
    result = subprocess.run(
        [sys.executable, "-m", "experiments.app.main", "trials=2", "concurrency=2", "scenario.max_turns=2",
         "cache.enabled=false", f"hydra.run.dir={tmp_path}"],
        capture_output=True, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"}, timeout=900,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    trials = pd.read_parquet(tmp_path / "trials.parquet")
    assert set(trials["status"]) <= {"deal", "walk_away", "max_turns"}
    assert (trials["scored_predictions"] >= 1).all() and np.isfinite(trials["mean_abs_error_pp"]).all()

    def no_constants(name):
        raise AssertionError(f"summary.json holds {name}, which is not JSON")

    summary = json.loads((tmp_path / "summary.json").read_text(), parse_constant=no_constants)
    assert summary["trials"] == 2 and summary["parse_failures"] == int(trials["parse_failures"].sum())
    records = [json.loads(x) for x in (tmp_path / "transcript.jsonl").read_text().splitlines()]
    turns = [r for r in records if r["speaker"] in ("salesperson", "customer")]
    assert len(turns) >= 4 * 2 - 2  # a trial may end early on a decision
    assert sum(t["parse_status"] == "ok" for t in turns) >= 0.75 * len(turns)
    for turn in turns:  # what the other side reads is a message, never a JSON report
        assert "my_emotions" not in turn["text"] and "predicted_customer_emotions" not in turn["text"]
        assert not turn["text"].lstrip().startswith("{")
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    assert sum(manifest["models"]["customer"]["usage"]["generation_batch_sizes"].values()) >= 1
