"""A run dir written before records and manifests carried a schema version still opens in `watch` and the
report, through the upgrade functions; and what this emolab writes carries its version and reads back."""

from __future__ import annotations

import io
import json
import shutil
from pathlib import Path

import pandas as pd
import pytest
from hydra import compose, initialize_config_module
from rich.console import Console

from agents.records import (
    SCHEMA_VERSION,
    ClosingRecord,
    CustomerTurnRecord,
    ProbeRecord,
    SalespersonTurnRecord,
    TranscriptHeader,
    read_record,
    record_from,
    upgrade,
)
from emotion_probe.errors import ConfigError
from experiments.app.manifest import MANIFEST_VERSION, RunManifest
from experiments.reports import report
from experiments.reports.common import read_json
from experiments.runs.negotiation.live import LiveView
from experiments.tools.watch import follow

OLD_RUN = Path(__file__).parent / "data" / "run_dir_v1" / "negotiation"


def _old_lines() -> list[dict]:
    return [json.loads(line) for line in (OLD_RUN / "transcript.jsonl").read_text(encoding="utf-8").splitlines()]


def test_the_old_run_dir_is_version_1():
    """The kept dir stands for files users have: no version anywhere, no header line."""
    assert all("schema_version" not in line for line in _old_lines())
    assert "manifest_version" not in json.loads((OLD_RUN / "manifest.json").read_text(encoding="utf-8"))


def test_every_old_transcript_line_upgrades_to_a_typed_record():
    records = [record_from(line) for line in _old_lines()]
    kinds = [type(record) for record in records]
    assert kinds == [SalespersonTurnRecord, CustomerTurnRecord, ProbeRecord, SalespersonTurnRecord,
                     CustomerTurnRecord, ProbeRecord, ClosingRecord]
    assert all(record.schema_version == SCHEMA_VERSION for record in records)
    customer = records[4]
    assert customer.decision == "accept" and customer.price == 6 and customer.parse_status == "human"
    # The upgrade changes nothing the old line said: its fields come back as they were.
    for line, record in zip(_old_lines(), records):
        assert {key: value for key, value in record.line().items() if key in line} == line


def test_watch_replays_the_old_run_dir(tmp_path):
    run_dir = tmp_path / "old"
    shutil.copytree(OLD_RUN, run_dir)
    console = Console(file=io.StringIO(), width=120, record=True)
    shown = follow(run_dir, LiveView(console, live=True), follow=False)
    text = console.export_text()
    assert shown == 7
    assert "trial 0: an acorn" in text  # the item, from the old run's saved config (it has no header)
    assert "customer: Fine, six." in text and "Negotiation summary" in text


def test_the_report_reads_the_old_run_dir(tmp_path):
    sweep = tmp_path / "sweep"
    shutil.copytree(OLD_RUN, sweep / "0")
    with initialize_config_module(config_module="conf", version_base="1.3"):
        cfg = compose(config_name="config", overrides=["experiment=report", f"sweep_dir={sweep}",
                                                        f"paths.output_dir={tmp_path / 'report'}"])
    report.run(cfg)
    results = pd.read_parquet(tmp_path / "report" / "results.parquet")
    trials = results[results["table"] == "trials"]
    assert len(trials) == 1 and trials["final_price"].iloc[0] == 6 and bool(trials["deal"].iloc[0])
    assert "negotiation" in (tmp_path / "report" / "report.html").read_text(encoding="utf-8")


def test_an_old_manifest_upgrades_and_a_new_one_carries_its_version():
    old = read_json(OLD_RUN / "manifest.json", RunManifest)
    assert old.manifest_version == MANIFEST_VERSION and old.config["scenario"]["item"] == "an acorn"
    assert old.models["salesperson"].usage is not None
    earliest = {"written_at": "2025-01-01T00:00:00+00:00", "config": {}}  # before host, job and usage were kept
    assert RunManifest.model_validate(earliest).host is None
    with pytest.raises(ValueError, match="manifest_version 9"):
        RunManifest.model_validate({**earliest, "manifest_version": 9})


def test_a_line_of_an_unknown_version_or_kind_is_one_error(tmp_path):
    where = "transcript.jsonl: line 1"
    with pytest.raises(ConfigError, match="schema_version 3 is not one this emolab reads"):
        read_record(json.dumps({"schema_version": 3, "speaker": "closing"}), where)
    with pytest.raises(ConfigError, match="is not a transcript record"):
        read_record(json.dumps({"schema_version": 2, "speaker": "narrator", "trial": 0, "turn": 0}), where)
    # Version 2 is strict: a field a version-2 writer always writes may not be missing.
    line = SalespersonTurnRecord(trial=0, turn=0, raw=None, parse_status="human", attempts=1, errors=[],
                                 latency_s=0, tokens=0, truncated=0, text="Hi.", emotions=["joy"],
                                 prediction=[100.0], prediction_sum=100).line()
    assert read_record(json.dumps(line), where).text == "Hi."
    del line["prediction_sum"]
    with pytest.raises(ConfigError, match="prediction_sum"):
        read_record(json.dumps(line), where)
    assert upgrade({"speaker": "closing", "trial": 0, "turn": 2, "paid": 5})["paid_claimed"] == 5


def test_a_new_transcript_opens_with_the_scenario_as_played(tmp_path):
    from test_scenario_once import negotiation_run

    run_dir = negotiation_run(tmp_path, "customer/persona=anxious")
    lines = [json.loads(x) for x in (run_dir / "transcript.jsonl").read_text(encoding="utf-8").splitlines()]
    header = record_from(lines[0])
    assert isinstance(header, TranscriptHeader) and all(line["schema_version"] == SCHEMA_VERSION for line in lines)
    manifest = read_json(run_dir / "manifest.json", RunManifest)
    # The persona's description replaced the scenario's own, in both records of what was played.
    assert header.scenario == manifest.model_extra["scenario"]
    assert header.scenario["customer_persona"] != manifest.config["scenario"]["customer_persona"]
    assert header.scenario["customer_persona"] == manifest.config["customer"]["persona"]["description"]
