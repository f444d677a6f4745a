"""Inputs are capped as they are read (conf/limits/default.yaml), before any tokenizer or model sees them: a
scenario's characters, a file's lines and line length, and JSON nesting. Each cap gives one clear error."""

from __future__ import annotations

import json
import time

import pytest
import yaml

from emotion_probe.errors import ConfigError
from emotion_probe.limits import InputLimits, json_depth
from emotion_probe.scenarios import load_scenarios

from emolab_cli import REPO, emolab, one_error_line


def test_the_shipped_caps_are_the_yaml(tmp_path):
    shipped = yaml.safe_load((REPO / "conf" / "limits" / "default.yaml").read_text(encoding="utf-8"))
    assert InputLimits.shipped().model_dump() == shipped
    assert shipped == {"scenario_chars": 20000, "line_chars": 1000000, "file_lines": 1000000, "json_depth": 64}


def test_a_2mb_single_line_scenario_is_refused_in_seconds(tmp_path):
    """The case that ran for over 300 s and took 5.7 GB: the line is refused as it is read, before the model loads."""
    path = tmp_path / "huge.txt"
    path.write_text("I waited all day for news and it never came. " * 48_000, encoding="utf-8")  # 2.2 MB, no newline
    started = time.monotonic()
    error = one_error_line(emolab("experiment=probe", f"scenarios={path}", f"hydra.run.dir={tmp_path / 'run'}",
                                  "progress=false"))
    assert error == f"error: {path}: line 1 is longer than 1,000,000 characters (limits.line_chars)"
    assert time.monotonic() - started < 60


def test_a_scenario_longer_than_scenario_chars_is_refused_by_the_cli(tmp_path):
    path = tmp_path / "long.jsonl"
    rows = [{"id": "ok", "text": "I won."}, {"id": "essay", "text": "So much happened. " * 1200}]
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    error = one_error_line(emolab("experiment=probe", f"scenarios={path}", f"hydra.run.dir={tmp_path / 'run'}",
                                  "progress=false"))
    assert error == (f"error: {path}: scenario 'essay': text: 21,600 characters, more than limits.scenario_chars "
                     "(20,000) allows")


def test_json_nested_deeper_than_json_depth_is_refused(tmp_path):
    path = tmp_path / "deep.jsonl"
    deep: object = "x"
    for _ in range(65):
        deep = [deep]
    path.write_text(json.dumps({"id": "a", "text": "I won.", "extra": deep}) + "\n", encoding="utf-8")
    error = one_error_line(emolab("experiment=probe", f"scenarios={path}", f"hydra.run.dir={tmp_path / 'run'}",
                                  "progress=false"))
    assert error == f"error: {path}: line 1 is not valid JSON (nested deeper than 64 levels, limits.json_depth)"
    deep = deep[0]  # 64 deep within the record (65 with the record itself): still too deep
    path.write_text(json.dumps({"id": "a", "text": "I won.", "extra": deep}) + "\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="nested deeper than 64 levels"):
        load_scenarios(path)
    path.write_text(json.dumps({"id": "a", "text": "I won.", "extra": deep[0]}) + "\n", encoding="utf-8")
    assert [s.id for s in load_scenarios(path)] == ["a"]


@pytest.mark.parametrize(("content", "limits", "message"), [
    ("a\nb\nc\nd\n", {"file_lines": 3}, "more than 3 lines (limits.file_lines)"),
    ("short\n" + "x" * 11 + "\n", {"line_chars": 10}, "line 2 is longer than 10 characters (limits.line_chars)"),
    ("ü" * 10 + "\n" + "ü" * 11, {"line_chars": 10}, "line 2 is longer than 10 characters (limits.line_chars)"),
    ("fine\n" + "y" * 9 + "\n", {"scenario_chars": 8}, "scenario 'line-2': text: 9 characters, more than "
                                                        "limits.scenario_chars (8) allows"),
])
def test_each_cap_names_the_file_and_line(tmp_path, content, limits, message):
    path = tmp_path / "mine.txt"
    path.write_text(content, encoding="utf-8")
    caps = InputLimits.shipped().model_copy(update=limits)
    with pytest.raises(ConfigError) as caught:
        load_scenarios(path, limits=caps)
    assert str(caught.value) == f"{path}: {message}"
    assert load_scenarios(path, limits=InputLimits.shipped())  # within the shipped caps, the same file reads


def test_a_line_at_the_cap_is_read_and_invalid_utf8_is_still_named(tmp_path):
    path = tmp_path / "mine.txt"
    path.write_text("é" * 10 + "\n", encoding="utf-8")
    caps = InputLimits.shipped().model_copy(update={"line_chars": 10, "scenario_chars": 10})
    assert [s.text for s in load_scenarios(path, limits=caps)] == ["é" * 10]
    path.write_bytes(b"fine\nbad \xff byte\n")
    with pytest.raises(ConfigError, match=r"line 2 is not valid UTF-8 \(invalid start byte\)"):
        load_scenarios(path)


def test_json_depth_counts_without_recursion():
    assert [json_depth(v) for v in ("x", 1, [], {}, [[]], {"a": [1, {"b": None}]})] == [0, 0, 1, 1, 2, 3]
    deep: object = 0
    for _ in range(100_000):  # far past Python's recursion limit
        deep = [deep]
    assert json_depth(deep) == 100_000


def test_a_negotiation_scenario_field_longer_than_scenario_chars_is_refused_before_any_model(tmp_path):
    description = "It is a large, glossy oak acorn. " * 700  # 23,100 characters
    error = one_error_line(emolab("experiment=negotiation", f"scenario.description={description!r}",
                                  f"hydra.run.dir={tmp_path / 'run'}"))
    assert error == "error: scenario.description: 23,100 characters, more than limits.scenario_chars (20,000) allows"


def test_watch_caps_transcript_lines_with_the_run_limits(tmp_path):
    run_dir = tmp_path / "job"
    run_dir.mkdir()
    record = {"trial": 0, "turn": 0, "speaker": "salesperson", "text": "x" * 500, "parse_status": "ok"}
    (run_dir / "transcript.jsonl").write_text(json.dumps(record) + "\n", encoding="utf-8")
    watch = ("experiment=watch", f"run_dir={run_dir}", "follow=false", f"hydra.run.dir={tmp_path / 'watch'}")
    assert emolab(*watch).returncode == 0
    error = one_error_line(emolab(*watch, "limits.line_chars=100"))
    assert error == f"error: {run_dir / 'transcript.jsonl'}: line 1 is longer than 100 characters (limits.line_chars)"
