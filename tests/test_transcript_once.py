"""transcript.jsonl holds each (trial, turn, speaker) exactly once, whatever the moment a run dies.

A node emits its "turn" event before LangGraph commits the step. A run that dies in that window
must not leave a line behind that the resumed run writes again; a run that dies after the commit
but before the line is written must get that line on resume. The crash is injected, not timed.
"""

from __future__ import annotations

import itertools
import json
import threading
from pathlib import Path

import pytest
from hydra import compose, initialize_config_module
from langgraph.checkpoint.sqlite import SqliteSaver

import environments.negotiation as negotiation_environment
from emolab_cli import transcript_records
from experiments.runs.negotiation import run as negotiation_experiment
from experiments.runs.negotiation.live import LiveView
from environments.negotiation import build_negotiation_graph

TRIALS = 2
EMOTIONS = {"love": 10, "joy": 40, "surprise": 10, "anger": 10, "sadness": 10, "fear": 20}
SALES = json.dumps({"message": "A fine acorn, $9.", "predicted_customer_emotions": EMOTIONS})
# A customer reply parses as a ClosingAnswer too (paid: null), so one line serves every call, in any order:
# a resumed process starts its script from the top again.
CUSTOMER = json.dumps({"message": "Hmm, let me think.", "my_emotions": EMOTIONS, "decision": "continue",
                       "price": None})


class Crash(RuntimeError):
    """Stands in for a kill."""


def _cfg(tmp_path: Path):
    with initialize_config_module(config_module="conf", version_base="1.3"):
        cfg = compose(config_name="config", overrides=[
            "experiment=negotiation", f"paths.output_dir={tmp_path}", "salesperson/model=scripted",
            "customer/model=scripted", "model=scripted", "scenario.max_turns=2", f"trials={TRIALS}",
            "cache.enabled=false", "max_parse_retries=0",
        ])
    cfg.salesperson.model.responses = [SALES] * 10
    cfg.customer.model.responses = [CUSTOMER] * 10
    cfg.model.continuation_logprobs = {" joy": -1.0, " anger": -1.5, " fear": -2.0}
    return cfg


def _lines(run_dir: Path) -> list[dict]:
    return transcript_records(run_dir)


def _final_turns(run_dir: Path) -> dict[int, list[dict]]:
    with SqliteSaver.from_conn_string(str(run_dir / "checkpoints.sqlite")) as saver:
        graph = build_negotiation_graph(saver)
        prefix = negotiation_experiment.run_key(run_dir)
        states = {t: graph.get_state({"configurable": {"thread_id": f"{prefix}/acorn-trial-{t}"}})
                  for t in range(TRIALS)}
    for snapshot in states.values():
        assert snapshot.values and not snapshot.next, "every trial finishes"
    return {t: json.loads(json.dumps(s.values["turns"], default=str)) for t, s in states.items()}


def _assert_exactly_once(run_dir: Path) -> None:
    lines = _lines(run_dir)
    keys = [(r["trial"], r["turn"], r["speaker"]) for r in lines]
    duplicates = sorted({k for k in keys if keys.count(k) > 1})
    assert not duplicates, f"written twice: {duplicates}"
    final = _final_turns(run_dir)
    for trial, turns in final.items():
        assert [r for r in lines if r["trial"] == trial] == turns, f"trial {trial}: lines differ from the state"
    assert len(lines) == sum(map(len, final.values()))


# The run's Nth "turn" or "probe" event is the one the crash follows. Trial 0 has 7 (salesperson,
# customer, probe, salesperson, customer, probe, closing); trial 1 follows.
@pytest.mark.parametrize(("speaker", "crash_at"), [("customer", 9), ("probe", 10), ("salesperson", 11),
                                                   ("closing", 14)])
def test_a_crash_after_the_event_before_its_checkpoint_writes_no_line_twice(tmp_path, monkeypatch, speaker,
                                                                            crash_at):
    handled = threading.Event()
    seen: list[dict] = []

    class WatchingView(LiveView):
        def handle(self, event: dict) -> None:
            super().handle(event)
            if event.get("event") in ("turn", "probe"):
                seen.append(event["record"])
                if len(seen) == crash_at:
                    handled.set()

    emit = negotiation_environment._emit
    count = itertools.count(1)

    def emit_then_crash(kind: str, **payload) -> None:
        emit(kind, **payload)
        if kind in ("turn", "probe") and next(count) == crash_at:
            # The run has received the event: everything it does with it is done. The node dies
            # before returning, so LangGraph commits nothing for this step.
            assert handled.wait(timeout=30), "the run never received the event"
            raise Crash(f"killed after the {kind} event, before its checkpoint")

    monkeypatch.setattr(negotiation_environment, "_emit", emit_then_crash)
    monkeypatch.setattr(negotiation_experiment, "LiveView", WatchingView)
    with pytest.raises(Crash):
        negotiation_experiment.run(_cfg(tmp_path))
    assert seen[-1]["speaker"] == speaker and seen[-1]["trial"] == 1
    monkeypatch.undo()

    # Resume in the same run dir: the step that died runs again and emits its event again.
    summary = negotiation_experiment.run(_cfg(tmp_path))
    assert summary["trials"] == TRIALS
    _assert_exactly_once(tmp_path)
    # And a rerun of the finished run writes nothing more.
    before = (tmp_path / "transcript.jsonl").read_bytes()
    negotiation_experiment.run(_cfg(tmp_path))
    assert (tmp_path / "transcript.jsonl").read_bytes() == before


def test_lines_lost_after_the_commit_are_written_on_resume(tmp_path):
    """A run that dies after a step commits but before its line lands (or in the middle of a line)."""
    negotiation_experiment.run(_cfg(tmp_path))
    _assert_exactly_once(tmp_path)
    transcript = tmp_path / "transcript.jsonl"
    complete = transcript.read_bytes()
    lines = complete.splitlines(keepends=True)
    # Drop trial 1's last two lines (probe and closing) and leave half of the line before them.
    torn = b"".join(lines[:-3]) + lines[-3][: len(lines[-3]) // 2]
    transcript.write_bytes(torn)
    negotiation_experiment.run(_cfg(tmp_path))
    _assert_exactly_once(tmp_path)
    assert transcript.read_bytes() == complete


def test_matching_over_each_conversation_is_written_per_trial(tmp_path):
    negotiation_experiment.run(_cfg(tmp_path))
    final = _final_turns(tmp_path)
    for trial in range(TRIALS):
        text = (tmp_path / f"matching_trial{trial}.json").read_text(encoding="utf-8")
        data = json.loads(text, parse_constant=lambda name: pytest.fail(f"not strict JSON: {name}"))
        assert data["trial"] == trial and data["labels"] == ["love", "joy", "surprise", "anger", "sadness", "fear"]
        assert data["probed_messages"] == sum(r["speaker"] == "probe" for r in final[trial]) == 2
        assert len(data["matching"]) == 6 and len(data["cooccurrence"]) == 6
        # The probe only ever puts mass on joy, anger and fear: the other rows are undefined.
        for label, row in zip(data["labels"], data["matching"]):
            if label in ("joy", "anger", "fear"):
                assert row is not None and sum(row) == pytest.approx(1.0) and row[data["labels"].index(label)] == 0
            else:
                assert row is None
