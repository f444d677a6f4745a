"""The scenario generator graph: validation, regeneration, resume; scripted and on the embedded model."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hydra import compose, initialize_config_module

from agents.scenario_writer import parse_batch
from emotion_probe.models.providers.scripted import ScriptedBackend
from emotion_probe.scenario_checks import leaked_form, problems, sentence_count
from emotion_probe.scenarios import load_scenarios
from experiments.runs.generate_scenarios import run


def _cfg(tmp_path: Path, *overrides: str):
    with initialize_config_module(config_module="conf", version_base="1.3"):
        cfg = compose(config_name="config", overrides=["experiment=generate_scenarios", "progress=false",
                                                        f"output={tmp_path / 'out.jsonl'}",
                                                        f"paths.output_dir={tmp_path / 'run'}", *overrides])
    return cfg


def test_leak_and_shape_checks():
    assert leaked_form("Pure joy filled the room.", "joy") == "joy"
    assert leaked_form("She was joyful all day.", "joy") == "joyful"
    assert leaked_form("We enjoyed the show.", "joy") == "enjoyed"
    assert leaked_form("He was so angry.", "anger") == "angry"
    assert leaked_form("Such a lovely gift.", "love") == "lovely"
    assert leaked_form("The kids laughed at the puppy.", "joy") is None
    assert problems("Fine text.", "joy", {"fine text"}) == ["duplicates an earlier scenario"]
    assert sentence_count("One. Two! Three? Four.") == 4 and sentence_count("Dr. Smith said no.") == 1


def test_parse_batch_reads_json_or_a_numbered_list():
    assert parse_batch('Sure! {"scenarios": ["a b", "c d"]}').scenarios == ["a b", "c d"]
    assert parse_batch('1. "First one."\n2) Second one.\n- Third').scenarios == ["First one.", "Second one.", "Third"]
    with pytest.raises(ValueError, match="neither a JSON object nor a numbered list"):
        parse_batch("no structure here")
    with pytest.raises(ValueError, match="scenarios"):
        parse_batch('{"items": []}')


def test_graph_retries_parse_errors_and_regenerates_rejects(tmp_path, monkeypatch):
    script = [
        "I refuse to use JSON.",                                               # parse error, sent back
        '{"scenarios": ["Pure joy everywhere.", "The puppy licked my face."]}',  # one leaks its emotion
        '{"scenarios": ["The puppy licked my face.", "We won the final on penalties."]}',  # one duplicate
    ]
    backend = ScriptedBackend(responses=script)
    monkeypatch.setattr("experiments.runs.generate_scenarios.build_model", lambda node, run_cfg=None: backend)
    result = run(_cfg(tmp_path, "words=[joy]", "per_emotion=2"))
    rows = [json.loads(line) for line in (tmp_path / "out.jsonl").read_text().splitlines()]
    assert [r["text"] for r in rows] == ["The puppy licked my face.", "We won the final on penalties."]
    assert [r["id"] for r in rows] == ["joy-1", "joy-2"] and result["written"] == 2
    # Provenance: the model that wrote each row and the fingerprint of the writer's instructions.
    from agents.scenario_writer import prompt_id

    assert {r["source"] for r in rows} == {f"scripted; prompt {prompt_id()}"}
    assert prompt_id().startswith("scenario_writer/") and len(prompt_id()) == len("scenario_writer/") + 12
    # The model was shown its parse error before the retry.
    assert "That was not valid" in backend.seen[1][-1].content


def test_resume_never_rewrites_and_skips_complete_words(tmp_path, monkeypatch):
    output = tmp_path / "out.jsonl"
    output.write_text(json.dumps({"id": "joy-1", "text": "The puppy licked my face.", "emotion": "joy", "primary": "joy"}) + "\n")
    before = output.read_text()
    backend = ScriptedBackend(responses=['{"scenarios": ["We won the final on penalties."]}',
                                         '{"scenarios": ["The dog died in the night."]}'])
    monkeypatch.setattr("experiments.runs.generate_scenarios.build_model", lambda node, run_cfg=None: backend)
    run(_cfg(tmp_path, "words=[joy,grief]", "per_emotion=1"))
    assert output.read_text().startswith(before)
    assert [s.id for s in load_scenarios(output)] == ["joy-1", "grief-1"]  # joy was complete: not asked
    run(_cfg(tmp_path, "words=[joy,grief]", "per_emotion=1"))  # nothing left: no calls
    assert backend.remaining == 1


@pytest.mark.embedded
def test_embedded_model_rows_all_pass_validation(tmp_path):
    cfg = _cfg(tmp_path, "words=[joy,relief]", "per_emotion=2", "max_tokens=160",
               "max_attempts=2", "max_parse_retries=1")
    result = run(cfg)
    # The small model passes some rows (with the seed of the config: 3 of 4); a run that wrote none
    # would check nothing below.
    assert result["written"] >= 1
    rows = load_scenarios(tmp_path / "out.jsonl")
    seen: set[str] = set()
    from emotion_probe.scenario_checks import normalized

    for row in rows:
        assert problems(row.text, row.emotion, seen) == [], row
        seen.add(normalized(row.text))
        assert row.emotion in {"joy", "relief"} and row.primary == "joy"
        assert row.id.startswith(f"{row.emotion}-")
    assert len(rows) == result["written"] and len(rows) <= 4
