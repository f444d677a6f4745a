"""Text from models, scenario files and received transcripts reaches a terminal or a log only as visible text:
no control character or escape sequence (clear screen, hyperlinks, window titles, cursor moves, bidi overrides)
gets through to act, whatever the text holds. The transcript keeps the raw text.
"""

from __future__ import annotations

import io
import json
import logging
import tempfile
import unicodedata
from pathlib import Path

import pandas as pd
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from rich.console import Console

from emotion_probe.terminal import printable
from experiments.runs.negotiation.live import LiveView, replay
from experiments.tools.watch import follow

#: Escape sequences a reply could carry: clear screen, cursor home, a hyperlink (OSC 8, both terminators),
#: a window title, C1 CSI and OSC, a full reset, and rich markup that would make a link of its own.
SEQUENCES = ["\x1b[2J", "\x1b[H", "\x1b]8;;https://evil.example/\x1b\\click\x1b]8;;\x1b\\", "\x1b]8;;https://e.x/\x07",
             "\x1b]0;owned\x07", "\x9b2J", "\x9d8;;https://e.x/\x9c", "\x1bc", "\r", "\x08", "\x07", "\x00", "\x7f",
             "\x85", "\u202e", "\u2066", "\t", "\n", "[link=https://evil.example/]x[/link]", "[bold]", "\\"]
BIDI = {*range(0x202A, 0x202F), *range(0x2066, 0x206A)}
hostile = st.lists(st.one_of(st.sampled_from(SEQUENCES), st.characters(), st.text(max_size=4)),
                   max_size=6).map("".join)


def leaked(output: str) -> set[str]:
    """Characters that act on a terminal (every C0 and C1 control, DEL, the bidi controls), bar newline and tab."""
    return {c for c in output if (unicodedata.category(c) == "Cc" and c not in "\n\t") or ord(c) in BIDI}


def _records(text: list[str]) -> list[dict]:
    """A trial's transcript as experiments/runs/negotiation/run.py writes it, every string field from `text`."""
    labels = [text[i % len(text)] + f"#{i}" for i in range(6)]
    values = [10.0, 40.0, 10.0, 10.0, 10.0, 20.0]
    return [
        {"trial": 0, "turn": 0, "speaker": "salesperson", "text": text[0], "raw": text[1], "parse_status": "ok",
         "attempts": 2, "errors": [text[2]], "emotions": labels, "prediction": values},
        {"trial": 0, "turn": 1, "speaker": "customer", "text": text[3], "raw": text[4], "parse_status": "failed",
         "attempts": 2, "errors": [text[5], text[6]], "emotions": labels, "report": values, "decision": "accept"},
        {"trial": 0, "turn": 1, "speaker": "probe", "emotions": labels, "probe_primary": values},
        {"trial": 0, "turn": 2, "speaker": "salesperson", "text": text[8], "raw": text[7], "parse_status": "ok",
         "attempts": 1, "errors": []},
        {"trial": 0, "turn": 3, "speaker": "closing", "paid": 6.0, "paid_claimed": 7.0, "parse_status": "ok",
         "raw": text[9]},
    ]


def _console(terminal: bool) -> Console:
    # No colour system: rich then writes no styling of its own, so any control character comes from the text.
    return Console(file=io.StringIO(), force_terminal=terminal, color_system=None, width=90)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(text=st.lists(hostile, min_size=10, max_size=10), terminal=st.booleans())
def test_the_live_console_shows_no_control_characters(text, terminal):
    console = _console(terminal)
    view = LiveView(console, live=True)
    view.begin_trial(0, text[0])
    for token in text:  # a reply as it streams, piece by piece
        view.handle({"event": "start", "speaker": "salesperson", "turn": 0, "trial": 0})
        view.handle({"event": "token", "speaker": "salesperson", "text": token, "trial": 0})
    view.handle({"event": "restart", "speaker": "customer", "reason": text[1], "trial": 0})
    for record in _records(text):
        for event in replay(record, attempts_allowed=3):
            view.handle(event)
    output = console.file.getvalue()
    assert not leaked(output), repr(output)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(text=st.lists(hostile, min_size=10, max_size=10))
def test_log_lines_carry_no_control_characters_and_stay_one_line(text):
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    log = logging.getLogger("emolab.negotiation")
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    try:
        view = LiveView(_console(False), live=False)
        for record in _records(text):
            for event in replay(record, attempts_allowed=3):
                view.handle(event)
    finally:
        log.removeHandler(handler)
    lines = stream.getvalue().splitlines()
    assert not leaked(stream.getvalue()) and "\t" not in stream.getvalue()
    # One line per turn, retry and closing: a newline in a reply cannot forge a log line of its own.
    assert len(lines) == sum(len(replay(r)) for r in _records(text) if r["speaker"] != "probe") + 1  # + the decision


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(text=st.lists(hostile, min_size=10, max_size=10), terminal=st.booleans())
def test_watch_shows_no_control_characters_from_a_received_run(text, terminal):
    with tempfile.TemporaryDirectory() as folder:
        run_dir = Path(folder)
        (run_dir / "transcript.jsonl").write_text("".join(json.dumps(r) + "\n" for r in _records(text)),
                                                  encoding="utf-8")
        (run_dir / ".hydra").mkdir()
        (run_dir / ".hydra" / "config.yaml").write_text(
            yaml.safe_dump({"scenario": {"item": text[0]}, "max_parse_retries": 2}), encoding="utf-8")
        pd.DataFrame([{"trial": 0, "status": text[1], "price": 6.0, "mean_abs_error_pp": 0.0, "js_divergence": 0.0,
                       "turns": text[2], "parse_failures": 0, "truncated": 0}]).to_parquet(run_dir / "trials.parquet")
        (run_dir / "summary.json").write_text("{}", encoding="utf-8")
        console = _console(terminal)
        assert follow(run_dir, LiveView(console, live=True), follow=False) == len(_records(text))
        output = console.file.getvalue()
    assert not leaked(output), repr(output)


def test_the_transcript_keeps_the_raw_text_and_the_console_shows_it_escaped(tmp_path):
    reply = "Deal!\x1b[2J\x1b]8;;https://evil.example/\x07here\x1b]8;;\x07 \u202eevil"
    record = {"trial": 0, "turn": 0, "speaker": "salesperson", "text": reply, "raw": reply, "parse_status": "ok",
              "attempts": 1, "errors": []}
    (tmp_path / "transcript.jsonl").write_text(json.dumps(record) + "\n", encoding="utf-8")
    console = _console(True)
    follow(tmp_path, LiveView(console, live=True), follow=False)
    assert json.loads((tmp_path / "transcript.jsonl").read_text(encoding="utf-8"))["text"] == reply
    assert "salesperson: Deal!\\x1b[2J\\x1b]8;;https://evil.example/\\x07here\\x1b]8;;\\x07 \\u202eevil" \
        in console.file.getvalue()


@pytest.mark.parametrize(("text", "shown"), [
    ("plain text, ünïcode and emoji 🙂", "plain text, ünïcode and emoji 🙂"),
    ("\x1b[31mred\x1b[0m", "\\x1b[31mred\\x1b[0m"),
    ("a\r\nb\tc\x00\x7f\x9b", "a\\x0d\\x0ab\\x09c\\x00\\x7f\\x9b"),
    ("right\u202eto left\u2069", "right\\u202eto left\\u2069"),
])
def test_printable_escapes_every_control_character(text, shown):
    assert printable(text) == shown
    assert printable(text, newlines=True) == shown.replace("\\x0a", "\n").replace("\\x09", "\t")
