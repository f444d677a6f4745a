"""Negotiation runs, as a user runs them, against a loopback server that fails mid-way (tests/loopback.py):
a stream dropped in the middle, a body that is not JSON, a server that hangs until the timeout.

Each run either records the failure and goes on, or stops with one clear error line (exit 2); either way
every transcript line written before the fault is still there, unchanged, and a rerun resumes.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest
from loopback import Hang, Raw, ScriptedServer, Stream, chat_chunks, chat_reply

REPO = Path(__file__).resolve().parents[1]
EMOTIONS = {"love": 10, "joy": 40, "surprise": 10, "anger": 10, "sadness": 10, "fear": 20}
REPLIES = {
    "salesperson": json.dumps({"message": "A fine acorn, $7.", "predicted_customer_emotions": EMOTIONS}),
    "customer": json.dumps({"message": "Hmm, too dear.", "my_emotions": EMOTIONS, "decision": "continue",
                            "price": None}),
}
CLOSING = json.dumps({"paid": None})
TRIALS, TURNS = 2, 2  # each trial: salesperson, customer, salesperson, customer, closing


def _pieces(text: str, size: int = 12) -> list[str]:
    return [text[i : i + size] for i in range(0, len(text), size)]


class Agents:
    """Answers as both agents (the request's model name says which), and lets a test put one fault on the
    n-th request of a kind: ("salesperson" | "customer" | "closing", n), counted from 1."""

    def __init__(self) -> None:
        self.counts: Counter[str] = Counter()
        self.faults: dict[tuple[str, int], Callable[[str], object]] = {}

    def __call__(self, path: str, body: dict):
        role = body["model"]
        kind = role if body.get("stream") else "closing"
        self.counts[kind] += 1
        fault = self.faults.pop((kind, self.counts[kind]), None)
        if fault is not None:
            return fault(role)
        if kind == "closing":
            return chat_reply(role, CLOSING)
        return Stream(chat_chunks(role, _pieces(REPLIES[role])))


@pytest.fixture()
def agents(request) -> tuple[Agents, ScriptedServer]:
    respond = Agents()
    server = ScriptedServer(respond)
    request.addfinalizer(server.close)
    return respond, server


def _run(run_dir: Path, url: str, *extra: str) -> subprocess.CompletedProcess:
    roles = [override for role in ("salesperson", "customer") for override in (
        f"{role}/model=openai", f"{role}.model.model={role}", f"{role}.model.base_url={url}",
        f"{role}.model.api_key_env=EMOLAB_FAULTS_KEY", f"{role}.model.timeout=1.0")]
    command = [sys.executable, "-m", "experiments.app.main", "experiment=negotiation", "model=scripted",
               "probe_messages=false", f"trials={TRIALS}", f"scenario.max_turns={TURNS}", "max_parse_retries=0",
               "cache.enabled=false", "retry.max_attempts=2", "retry.initial_delay_s=0", "retry.max_delay_s=0",
               "progress=false", f"hydra.run.dir={run_dir}", *roles, *extra]
    return subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "EMOLAB_FAULTS_KEY": "unused", "HF_HUB_OFFLINE": "1"})


def _lines(run_dir: Path) -> list[str]:
    return (run_dir / "transcript.jsonl").read_text(encoding="utf-8").splitlines()


def _keys(lines: list[str]) -> list[tuple]:
    records = [json.loads(line) for line in lines]  # every line whole
    records = [r for r in records if r["speaker"] != "header"]
    return [(r["trial"], r["turn"], r["speaker"]) for r in records]


def _error_line(result: subprocess.CompletedProcess) -> str:
    """The one `error:` line, as tests/test_cli.py checks it: first on stderr, the only one, no traceback."""
    assert result.returncode == 2, result.stderr[-3000:]
    lines = result.stderr.splitlines()
    assert lines and lines[0].startswith("error: "), result.stderr[-3000:]
    assert sum(line.startswith("error:") for line in lines) == 1 and "Traceback" not in result.stderr, result.stderr
    return lines[0]


def _assert_complete(run_dir: Path) -> None:
    keys = _keys(_lines(run_dir))
    assert len(keys) == len(set(keys)) == TRIALS * (2 * TURNS + 1), keys
    assert (run_dir / "summary.json").exists()


def test_a_stream_dropped_midway_is_retried_and_recorded_once(agents, tmp_path):
    respond, server = agents
    # The second customer turn breaks off after two pieces; the retry gets the whole reply.
    respond.faults[("customer", 2)] = lambda role: Stream(chat_chunks(role, _pieces(REPLIES[role])), drop_after=2)
    run_dir = tmp_path / "run"
    result = _run(run_dir, server.url)
    assert result.returncode == 0, result.stderr[-3000:]
    _assert_complete(run_dir)
    customer = [json.loads(line) for line in _lines(run_dir) if json.loads(line)["speaker"] == "customer"]
    assert [turn["raw"] for turn in customer] == [REPLIES["customer"]] * (TRIALS * TURNS)  # the whole reply, once
    assert all(turn["parse_status"] == "ok" for turn in customer)
    assert respond.counts["customer"] == TRIALS * TURNS + 1  # the dropped request, once more
    # The console says that the stream starts again, so the pieces shown before the drop are not read as
    # part of the repeat (a live console gives the repeat a block of its own: tests/test_stream_events.py).
    assert "trial 0 customer stream broke off (APIConnectionError: Connection error.); again from the start" \
        in result.stdout
    manifest = json.loads((run_dir / "manifest.json").read_text(encoding="utf-8"))
    assert manifest["models"]["customer"]["usage"]["retries"] == 1


def test_a_body_that_is_not_json_stops_the_run_with_one_line_and_a_rerun_resumes(agents, tmp_path):
    respond, server = agents
    # The second trial's closing question gets a broken body: a broken server is not retried.
    respond.faults[("closing", 2)] = lambda role: Raw(b'{"id": "chat", "choices": [')
    run_dir = tmp_path / "run"
    error = _error_line(_run(run_dir, server.url))
    assert error.startswith(f"error: customer: the server at {server.url} answered with a body that is not JSON"), error
    before = _lines(run_dir)
    # Everything up to the fault is on disk: trial 0 whole, trial 1 up to its closing.
    assert _keys(before) == [(t, turn, speaker) for t in range(TRIALS)
                             for turn, speaker in enumerate(["salesperson", "customer"] * TURNS + ["closing"])
                             ][: TRIALS * (2 * TURNS + 1) - 1]
    assert not (run_dir / "summary.json").exists()

    asked = sum(respond.counts.values())
    result = _run(run_dir, server.url)  # the server works again; the same command resumes
    assert result.returncode == 0, result.stderr[-3000:]
    assert _lines(run_dir)[: len(before)] == before  # nothing written before was changed
    _assert_complete(run_dir)
    assert sum(respond.counts.values()) == asked + 1  # only the closing question that failed


def test_a_server_that_hangs_times_out_and_stops_the_run_with_one_line(agents, tmp_path):
    respond, server = agents
    # From trial 1 on, the salesperson's server never answers: both attempts time out (1 s each).
    for n in range(TURNS + 1, TURNS + 5):
        respond.faults[("salesperson", n)] = lambda role: Hang()
    run_dir = tmp_path / "run"
    error = _error_line(_run(run_dir, server.url))
    assert error.startswith("error: the model did not answer: APITimeoutError"), error
    assert error.endswith(f"what was written is kept, rerun with hydra.run.dir={run_dir} to resume"), error
    assert respond.counts["salesperson"] == TURNS + 2  # trial 1's first turn, tried twice (retry.max_attempts=2)
    keys = _keys(_lines(run_dir))
    assert keys == [(0, turn, speaker)
                    for turn, speaker in enumerate(["salesperson", "customer"] * TURNS + ["closing"])]
