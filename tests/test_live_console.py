"""The live console, driven by a recorded list of stream events and read back as plain text."""

from __future__ import annotations

import io
import json
import logging

import numpy as np
import pytest
from rich.console import Console

from emotion_probe.analysis.hierarchy import cooccurrence, matching_matrix
from experiments.runs.negotiation.live import LiveView

SHAVER = ["love", "joy", "surprise", "anger", "sadness", "fear"]

EMOTIONS = {"love": 10, "joy": 40, "surprise": 10, "anger": 10, "sadness": 10, "fear": 20}
BAD = 'Sure! {"message": "Hello there'
GOOD = json.dumps({"message": "A fine acorn, only $9.", "predicted_customer_emotions": EMOTIONS})
CUSTOMER = json.dumps({"message": "Too dear for me.", "my_emotions": EMOTIONS, "decision": "continue", "price": None})
RAMBLE = "no JSON here, only a long rambling reply about acorns, oak trees, the village square and the weather"


def _tokens(speaker: str, text: str) -> list[dict]:
    return [{"event": "token", "speaker": speaker, "text": piece + " ", "trial": 0} for piece in text.split(" ")]


def _retry(speaker: str, attempt: int, reason: str) -> dict:
    return {"event": "retry", "speaker": speaker, "attempt": attempt, "of": 3, "reason": reason, "trial": 0}


EVENTS = [
    {"event": "start", "speaker": "salesperson", "turn": 0, "trial": 0},
    *_tokens("salesperson", BAD),
    _retry("salesperson", 2, "the JSON is malformed (Unterminated string)"),
    *_tokens("salesperson", GOOD),
    {"event": "turn", "record": {"trial": 0, "turn": 0, "speaker": "salesperson", "text": "A fine acorn, only $9.",
                                 "raw": GOOD, "parse_status": "ok", "attempts": 2, "errors": ["malformed"],
                                 "prediction": [10, 40, 10, 10, 10, 20]}},
    {"event": "start", "speaker": "customer", "turn": 1, "trial": 0},
    *_tokens("customer", CUSTOMER),
    {"event": "turn", "record": {"trial": 0, "turn": 1, "speaker": "customer", "text": "Too dear for me.",
                                 "raw": CUSTOMER, "parse_status": "ok", "attempts": 1, "errors": [],
                                 "report": [10, 40, 10, 10, 10, 20], "decision": "continue"}},
    {"event": "probe", "record": {"trial": 0, "turn": 1, "speaker": "probe", "probe_primary": [0, 50, 0, 30, 0, 20]}},
    {"event": "start", "speaker": "salesperson", "turn": 2, "trial": 0},
    *_tokens("salesperson", RAMBLE),
    _retry("salesperson", 2, "the reply contains no JSON object"),
    *_tokens("salesperson", RAMBLE),
    _retry("salesperson", 3, "the reply contains no JSON object"),
    *_tokens("salesperson", RAMBLE),
    {"event": "turn", "record": {"trial": 0, "turn": 2, "speaker": "salesperson", "text": RAMBLE, "raw": RAMBLE,
                                 "parse_status": "failed", "attempts": 3, "prediction": None,
                                 "errors": ["the reply contains no JSON object"] * 3}},
]


def _render(events: list[dict], view: LiveView | None = None) -> list[str]:
    console = Console(record=True, width=100, force_terminal=False, color_system=None, file=io.StringIO())
    view = view or LiveView(console, live=True, emotions=SHAVER)
    view.console = console
    for event in events:
        view.handle(event)
    return [line.rstrip() for line in console.export_text().splitlines()]


def _index(lines: list[str], start: int, predicate) -> int:
    for i in range(start, len(lines)):
        if predicate(lines[i]):
            return i
    raise AssertionError(f"no line after {start} matches; lines:\n" + "\n".join(lines))


def test_each_attempt_streams_as_its_own_block_and_a_parsed_turn_shows_its_message():
    lines = _render(EVENTS)
    first = _index(lines, 0, lambda x: x.startswith("salesperson Sure!"))
    retry = _index(lines, first + 1, lambda x: x.strip())
    assert lines[retry] == "retry 2/3: the JSON is malformed (Unterminated string)", "the retry is a line of its own"
    second = _index(lines, retry + 1, lambda x: x.strip())
    assert lines[second].startswith('salesperson {"message": "A fine acorn'), "the second attempt is a new block"
    parsed = _index(lines, second + 1, lambda x: x.strip())
    assert lines[parsed] == "salesperson: A fine acorn, only $9."
    customer = _index(lines, parsed + 1, lambda x: x.startswith("customer: "))
    assert lines[customer] == "customer: Too dear for me."
    # No turn line carries raw JSON: only the streamed attempts do.
    assert not [x for x in lines if x.startswith(("salesperson: ", "customer: ")) and "{" in x]


def test_the_probe_step_shows_bars_and_the_running_matching_heatmap():
    lines = _render(EVENTS)
    bars = _index(lines, 0, lambda x: x.split() == ["emotion", "customer", "says", "salesperson", "predicted", "probe"])
    title = _index(lines, bars + 1, lambda x: x.startswith("matching, trial 0, 1 customer message"))
    header = lines[title + 1].split()
    assert header == ["P(col", "|", "row)", "love", "joy", "surprise", "anger", "sadness", "fear"]
    rows = {line.split()[0]: line.split()[1:] for line in lines[title + 2: title + 8]}
    assert list(rows) == ["love", "joy", "surprise", "anger", "sadness", "fear"]
    assert rows["love"] == ["-"] * 6, "a primary the probe never gave mass has an undefined row"
    assert rows["joy"] == ["0.00", "·", "0.00", "0.60", "0.00", "0.40"]
    assert rows["anger"][1] == "0.71"


def test_a_failed_turn_is_one_line_with_the_raw_text_cut_short():
    lines = _render(EVENTS)
    retries = [x for x in lines if x.startswith("retry ")]
    assert retries == ["retry 2/3: the JSON is malformed (Unterminated string)",
                       "retry 2/3: the reply contains no JSON object", "retry 3/3: the reply contains no JSON object"]
    failed = [x for x in lines if x.startswith("salesperson: ")][-1]
    assert failed.startswith("salesperson: parse failed after 3 attempts (the reply contains no JSON object): no JSON")
    text = " ".join(_render(EVENTS)[lines.index(failed):])  # the line may wrap at 100 columns
    shown = text.split("object): ", 1)[1]
    assert shown.startswith(RAMBLE[:60]) and "…" in shown and RAMBLE not in text
    assert len(shown[: shown.index("…") + 1]) == 80


def test_the_matrix_runs_over_the_conversation_and_resumes_from_earlier_records():
    probes = [[0, 50, 0, 30, 0, 20], [20, 20, 20, 20, 10, 10], [0, 0, 70, 10, 10, 10]]
    records = [{"trial": 3, "turn": 2 * i + 1, "speaker": "probe", "probe_primary": p} for i, p in enumerate(probes)]
    console = Console(record=True, width=100, force_terminal=False, color_system=None, file=io.StringIO())
    view = LiveView(console, live=True, emotions=SHAVER)
    view.remember(records[:2])  # a resumed trial: the first two were shown by the run that died
    lines = _render([{"event": "probe", "record": records[2]}], view)
    title = _index(lines, 0, lambda x: x.startswith("matching, trial 3, 3 customer messages"))
    P = np.asarray(probes, dtype=float) / 100
    expected = matching_matrix(cooccurrence(P))
    for i, line in enumerate(lines[title + 2: title + 8]):
        cells = line.split()[1:]
        for j, cell in enumerate(cells):
            if i != j:
                assert float(cell) == pytest.approx(expected[i, j], abs=0.0051)


def test_off_a_terminal_retries_and_turns_are_log_lines(caplog):
    console = Console(record=True, width=100, force_terminal=False, color_system=None, file=io.StringIO())
    with caplog.at_level(logging.INFO, logger="emolab.negotiation"):
        _render(EVENTS, LiveView(console, live=False))
    messages = [r.getMessage() for r in caplog.records]
    assert "trial 0 salesperson retry 2/3: the JSON is malformed (Unterminated string)" in messages
    assert any(m.startswith("trial 0 turn 0 salesperson: A fine acorn") for m in messages)
    assert console.export_text().strip() == ""
