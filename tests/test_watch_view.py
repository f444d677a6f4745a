"""`experiment=watch` shows a run as the live console showed it: a recorded transcript, rendered and compared."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pandas as pd
from hydra import compose, initialize_config_module
from omegaconf import OmegaConf
from rich.console import Console

from experiments.runs.negotiation import run as negotiation_experiment
from experiments.runs.negotiation.live import LiveView
from experiments.tools.watch import follow

EMOTIONS = {"love": 10, "joy": 40, "surprise": 10, "anger": 10, "sadness": 10, "fear": 20}
GOOD = json.dumps({"message": "A fine acorn, only $9.", "predicted_customer_emotions": EMOTIONS})
RAMBLE = "no JSON here, only a long rambling reply about acorns, oak trees, the village square and the weather"
MALFORMED = "the JSON is malformed (Unterminated string starting at: line 1 column 13 (char 12))"
NO_JSON = "the reply contains no JSON object"

# Seven lines as experiments/runs/negotiation/run.py writes them (one JSON object per line, every key of a record).
TRANSCRIPT = [
    {"trial": 0, "turn": 0, "speaker": "salesperson", "raw": GOOD, "parse_status": "ok", "attempts": 2,
     "errors": [MALFORMED], "latency_s": 1.2, "tokens": 61, "truncated": 0, "text": "A fine acorn, only $9.",
     "prediction": [10.0, 40.0, 10.0, 10.0, 10.0, 20.0], "prediction_sum": 100},
    {"trial": 0, "turn": 1, "speaker": "customer",
     "raw": json.dumps({"message": "Too dear for me.", "my_emotions": EMOTIONS, "decision": "continue", "price": None}),
     "parse_status": "ok", "attempts": 1, "errors": [], "latency_s": 0.8, "tokens": 58, "truncated": 0,
     "text": "Too dear for me.", "report": [10.0, 40.0, 10.0, 10.0, 10.0, 20.0], "report_sum": 100,
     "decision": "continue", "price": None},
    {"trial": 0, "turn": 1, "speaker": "probe", "probe": {"joy": 0.5, "rage": 0.3, "fear": 0.2},
     "probe_primary": [0.0, 50.0, 0.0, 30.0, 0.0, 20.0]},
    {"trial": 0, "turn": 2, "speaker": "salesperson", "raw": RAMBLE, "parse_status": "failed", "attempts": 3,
     "errors": [NO_JSON] * 3, "latency_s": 3.1, "tokens": 240, "truncated": 0, "text": "(no answer)",
     "prediction": None, "prediction_sum": None},
    {"trial": 0, "turn": 3, "speaker": "customer",
     "raw": json.dumps({"message": "Fine, six dollars.", "my_emotions": EMOTIONS, "decision": "accept", "price": 6}),
     "parse_status": "ok", "attempts": 1, "errors": [], "latency_s": 0.9, "tokens": 57, "truncated": 0,
     "text": "Fine, six dollars.", "report": [10.0, 40.0, 10.0, 10.0, 10.0, 20.0], "report_sum": 100,
     "decision": "accept", "price": 6.0},
    {"trial": 0, "turn": 3, "speaker": "probe", "probe": {"joy": 0.7, "surprise": 0.3},
     "probe_primary": [0.0, 70.0, 30.0, 0.0, 0.0, 0.0]},
    {"trial": 0, "turn": 4, "speaker": "closing", "paid": 6.0, "paid_claimed": 6.0, "parse_status": "ok",
     "raw": '{"paid": 6}'},
]

EXPECTED = """\
──────────────────────────────────────── trial 0: an acorn ─────────────────────────────────────────
retry 2/3: the JSON is malformed (Unterminated string starting at: line 1 column 13 (char 12))
salesperson: A fine acorn, only $9.
customer: Too dear for me.
emotion   customer says  salesperson predicted  probe
love      ██ 10          ██ 10                   0
joy       ████████ 40    ████████ 40            ██████████ 50
surprise  ██ 10          ██ 10                   0
anger     ██ 10          ██ 10                  ██████ 30
sadness   ██ 10          ██ 10                   0
fear      ████ 20        ████ 20                ████ 20
matching, trial 0, 1 customer message
P(col | row)  love   joy  surprise  anger  sadness  fear
love             -     -         -      -        -     -
joy           0.00     ·      0.00   0.60     0.00  0.40
surprise         -     -         -      -        -     -
anger         0.00  0.71      0.00      ·     0.00  0.29
sadness          -     -         -      -        -     -
fear          0.00  0.62      0.00   0.38     0.00     ·
retry 2/3: the reply contains no JSON object
retry 3/3: the reply contains no JSON object
salesperson: parse failed after 3 attempts (the reply contains no JSON object): no JSON here, only a
long rambling reply about acorns, oak trees, the village s…
customer: Fine, six dollars.
customer decides: accept
emotion   customer says  salesperson predicted  probe
love      ██ 10          -                       0
joy       ████████ 40    -                      ██████████████ 70
surprise  ██ 10          -                      ██████ 30
anger     ██ 10          -                       0
sadness   ██ 10          -                       0
fear      ████ 20        -                       0
matching, trial 0, 2 customer messages
P(col | row)  love   joy  surprise  anger  sadness  fear
love             -     -         -      -        -     -
joy           0.00     ·      0.46   0.33     0.00  0.22
surprise      0.00  1.00         ·   0.00     0.00  0.00
anger         0.00  0.71      0.00      ·     0.00  0.29
sadness          -     -         -      -        -     -
fear          0.00  0.62      0.00   0.38     0.00     ·
closing: paid 6.0
                                    Negotiation summary
┏━━━━━━━┳━━━━━━━━━┳━━━━━━━┳━━━━━━━━━━━━━━━━━┳━━━━━━━━━┳━━━━━━━┳━━━━━━━━━━━━━━━━┳━━━━━━━━━━━┓
┃ trial ┃ outcome ┃ price ┃ mean error (pp) ┃ JS div. ┃ turns ┃ parse failures ┃ truncated ┃
┡━━━━━━━╇━━━━━━━━━╇━━━━━━━╇━━━━━━━━━━━━━━━━━╇━━━━━━━━━╇━━━━━━━╇━━━━━━━━━━━━━━━━╇━━━━━━━━━━━┩
│     0 │    deal │     6 │             0.0 │   0.000 │     4 │              1 │         0 │
└───────┴─────────┴───────┴─────────────────┴─────────┴───────┴────────────────┴───────────┘
"""


def _console() -> Console:
    # Fixed width, no colour and no terminal: what is rendered is exactly what export_text gives back.
    return Console(record=True, width=100, force_terminal=False, color_system=None, file=io.StringIO())


def _text(console: Console) -> list[str]:
    return [line.rstrip() for line in console.export_text().splitlines()]


def _recorded_run(run_dir: Path, *, with_config: bool = True, wheel: str = "shaver") -> Path:
    """A finished job's files: the transcript, Hydra's saved config, the summary and the trials table."""
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "transcript.jsonl").write_text("".join(json.dumps(r) + "\n" for r in TRANSCRIPT), encoding="utf-8")
    if with_config:
        (run_dir / ".hydra").mkdir()
        OmegaConf.save(OmegaConf.create({"scenario": {"item": "an acorn"}, "max_parse_retries": 2,
                                         "probe": {"wheel": wheel}}),
                       run_dir / ".hydra" / "config.yaml")
    pd.DataFrame([{"trial": 0, "status": "deal", "price": 6.0, "mean_abs_error_pp": 0.0, "js_divergence": 0.0,
                   "turns": 4, "parse_failures": 1, "truncated": 0}]).to_parquet(run_dir / "trials.parquet")
    (run_dir / "summary.json").write_text("{}", encoding="utf-8")
    return run_dir


def test_watching_a_recorded_transcript_renders_the_expected_view(tmp_path):
    console = _console()
    assert follow(_recorded_run(tmp_path / "job"), LiveView(console, live=True)) == len(TRANSCRIPT)
    assert _text(console) == EXPECTED.splitlines()


def test_records_without_labels_are_shaver_whatever_the_saved_wheel(tmp_path):
    """Transcripts written before records named their emotions always reported over Shaver's six,
    even under probe.wheel=ekman (then only the probe used it): the saved wheel must not rename them."""
    console = _console()
    follow(_recorded_run(tmp_path / "job", wheel="ekman"), LiveView(console, live=True), follow=False)
    assert _text(console) == EXPECTED.splitlines()


def test_without_the_jobs_saved_config_only_what_the_transcript_holds_is_shown(tmp_path):
    console = _console()
    follow(_recorded_run(tmp_path / "job", with_config=False), LiveView(console, live=True), follow=False)
    lines = _text(console)
    assert lines[0].strip("─ ") == "trial 0", "no item to name without the config"
    # An ok turn does not say how many attempts were allowed; a failed one used them all.
    assert [x for x in lines if x.startswith("retry")] == [f"retry 2: {MALFORMED}", f"retry 2/3: {NO_JSON}",
                                                           f"retry 3/3: {NO_JSON}"]


def test_watch_shows_what_the_live_console_showed_for_a_real_run(tmp_path, monkeypatch):
    """A scripted negotiation run with its live console recorded, then watched from its run dir: the two views
    agree line for line, once the live view's streamed attempts (the raw replies, token by token) are left out."""
    sales = ['Sure! {"message": "Hello there', GOOD, "no JSON", "still no JSON", RAMBLE]
    customer = [json.dumps({"message": "Too dear for me.", "my_emotions": EMOTIONS, "decision": "continue",
                            "price": None}),
                json.dumps({"message": "Fine, $6.", "my_emotions": {**EMOTIONS, "joy": 70}, "decision": "accept",
                            "price": 6}),
                '{"paid": 6}']
    run_dir = tmp_path / "job"
    with initialize_config_module(config_module="conf", version_base="1.3"):
        cfg = compose(config_name="config", overrides=[
            "experiment=negotiation", f"paths.output_dir={run_dir}", "salesperson/model=scripted",
            "customer/model=scripted", "model=scripted", "cache.enabled=false"])
    cfg.salesperson.model.responses, cfg.customer.model.responses = sales, customer
    cfg.model.continuation_logprobs = {" joy": -1.0, " anger": -1.5, " fear": -2.0}
    live = _console()
    monkeypatch.setattr(negotiation_experiment, "Console", lambda *args, **kwargs: live)
    monkeypatch.setattr(negotiation_experiment, "stdout_is_live", lambda: True)
    negotiation_experiment.run(cfg)
    (run_dir / ".hydra").mkdir()
    OmegaConf.save(cfg, run_dir / ".hydra" / "config.yaml")  # as Hydra saves it when a job starts

    watched = _console()
    follow(run_dir, LiveView(watched, live=True))

    # The scripted backend streams a reply word by word, so each attempt shows as "<speaker> <reply>".
    streamed = {f"salesperson {reply}" for reply in sales} | {f"customer {reply}" for reply in customer}
    shown_live = _text(live)
    assert streamed & set(shown_live), "the live console streamed the attempts"
    shown_live = shown_live[: next(i for i, x in enumerate(shown_live) if x.startswith("wrote "))]
    expected = [x for x in shown_live if x and x not in streamed]
    assert _text(watched) == expected
    assert any(x.startswith("retry 3/3: ") for x in expected) and any("parse failed" in x for x in expected)
