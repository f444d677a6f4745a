"""Probe runs over scenario files: Parquet output, resume after a crash, and file validation."""

import json

import numpy as np
import pandas as pd
import pytest

from emotion_probe import ConfigError
from emotion_probe.models.providers.scripted import ScriptedBackend
from emotion_probe.models.wrappers.core import CountingBackend
from emotion_probe.engines.local import probe_scenarios
from emotion_probe.scenarios import Scenario, load_scenarios
from experiments.app.config import build_probe

LOGPROBS = {" anger": -1.0, " disgust": -2.0, " fear": -3.0, " happiness": -0.5, " sadness": -4.0, " surprise": -5.0}


def _scenarios(n):
    return [Scenario(id=f"s{i}", text=f"scenario number {i}", emotion="anger", primary="anger") for i in range(n)]


class CrashAfter(CountingBackend):
    def __init__(self, inner, calls):
        super().__init__(inner)
        self.limit = calls

    def score(self, prompts, continuations, *, word_boundary=False):
        if self.calls["score"] >= self.limit:
            raise KeyboardInterrupt("simulated crash")
        return super().score(prompts, continuations, word_boundary=word_boundary)


def test_table_has_id_text_labels_and_one_column_per_word(tmp_path):
    probe = build_probe(ScriptedBackend(continuation_logprobs=LOGPROBS), wheel="ekman", chunk_size=4)
    table = probe_scenarios(probe, _scenarios(10), tmp_path, show_progress=False)
    on_disk = pd.read_parquet(tmp_path / "distributions.parquet")
    assert list(on_disk.columns) == ["id", "text", "emotion", "primary", *probe.words]
    assert on_disk["id"].tolist() == [f"s{i}" for i in range(10)]
    expected = np.exp([LOGPROBS[" " + w] for w in probe.words])
    np.testing.assert_allclose(on_disk[probe.words].to_numpy()[0], expected / expected.sum())
    pd.testing.assert_frame_equal(table, on_disk)


def test_interrupted_run_resumes_without_recomputing(tmp_path):
    scenarios = _scenarios(10)
    crashing = CrashAfter(ScriptedBackend(continuation_logprobs=LOGPROBS), calls=2)
    with pytest.raises(KeyboardInterrupt):
        probe_scenarios(build_probe(crashing, wheel="ekman", chunk_size=3), scenarios, tmp_path, show_progress=False)
    written = sorted((tmp_path / "probe_parts").glob("part-*.parquet"))
    assert len(written) == 2  # the two finished chunks survived the crash
    resumed = CountingBackend(ScriptedBackend(continuation_logprobs=LOGPROBS))
    table = probe_scenarios(build_probe(resumed, wheel="ekman", chunk_size=3), scenarios, tmp_path, show_progress=False)
    assert resumed.calls["scored_prompts"] == 4  # only the 4 unfinished scenarios
    assert table["id"].tolist() == [s.id for s in scenarios]
    assert table["id"].is_unique


def test_resume_refuses_different_settings(tmp_path):
    backend = ScriptedBackend(continuation_logprobs=LOGPROBS)
    probe_scenarios(build_probe(backend, wheel="ekman"), _scenarios(2), tmp_path, show_progress=False)
    with pytest.raises(ConfigError, match="different settings"):
        probe_scenarios(build_probe(backend, wheel="ekman", template="{text} I feel"), _scenarios(2), tmp_path, show_progress=False)


def test_scenario_file_errors_name_the_line(tmp_path):
    path = tmp_path / "s.jsonl"
    path.write_text('{"id": "a", "text": "fine"}\n{"id": "b", "text": ""}\n')
    with pytest.raises(ConfigError, match="line 2: field text: Value error, text is empty"):
        load_scenarios(path)
    path.write_text('{"id": "a", "text": "fine"}\n{"id": "a", "text": "again"}\n')
    with pytest.raises(ConfigError, match="line 2: duplicate scenario id 'a'"):
        load_scenarios(path)
    path.write_bytes(b'{"id": "a", "text": "fine"}\n{"id": "b", "text": "caf\xe9"}\n')
    with pytest.raises(ConfigError, match="line 2 is not valid UTF-8"):
        load_scenarios(path)
    path.write_text('{"id": "a", "text": "fine"\n')
    with pytest.raises(ConfigError, match="line 1 is not valid JSON"):
        load_scenarios(path)
    with pytest.raises(ConfigError, match="unknown scenario 'nope'"):
        load_scenarios("nope")


def test_limit_and_extra_fields(tmp_path):
    path = tmp_path / "s.jsonl"
    path.write_text("\n".join(json.dumps({"id": str(i), "text": f"t{i}", "source": "me"}) for i in range(5)))
    rows = load_scenarios(path, limit=2)
    assert [r.id for r in rows] == ["0", "1"]


def test_scripted_backend_fails_loudly_when_the_script_runs_out():
    from emotion_probe.errors import ScriptExhausted

    backend = ScriptedBackend(responses=["one"])
    assert backend.generate([{"role": "user", "content": "hi"}]).text == "one"
    with pytest.raises(ScriptExhausted, match="ran out after 1 responses; call 2 asked: 'again'"):
        backend.generate([{"role": "user", "content": "again"}])
