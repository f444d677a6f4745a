"""Personas as config, the persona agent, and the recognition environment on a scripted backend."""

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

from agents.persona import PersonaAgent, PersonaSpec
from emotion_probe import ConfigError, EmotionProbe, EmotionWheel
from emotion_probe.backends.scripted import ScriptedBackend
from emotion_probe.scenarios import Scenario
from environments.recognition import RecognitionContext, build_recognition_graph
from experiments.common import validated

CONF = Path(__file__).resolve().parents[1] / "conf"
PAPER_SET = {"neutral", "male", "female", "asian", "american", "able", "disable", "income_high", "income_low",
             "education_high", "education_low", "age_10", "age_30", "age_70"}


def _persona(*overrides: str) -> PersonaSpec:
    with initialize_config_module(config_module="conf", version_base="1.3"):
        cfg = compose(config_name="config", overrides=list(overrides))
    return validated(PersonaSpec, cfg.persona, "persona")


def test_paper_persona_set_ships_and_validates():
    names = {p.stem for p in (CONF / "persona").glob("*.yaml")} - {"intersectional"}
    assert names == PAPER_SET
    for name in names:
        spec = _persona(f"persona={name}")
        assert spec.name == name
    assert _persona("persona=neutral").is_neutral
    assert _persona("persona=income_low").phrase == "a low-income person"


def test_intersectional_personas_are_composed_by_config():
    spec = _persona("persona=intersectional")
    assert spec.phrase == "a low-income disabled woman" and spec.name == "low_income_disabled_woman"
    other = _persona("persona=intersectional", "persona.attributes.income=high-income", "persona.attributes.disability=")
    assert other.phrase == "a high-income woman" and other.name == "high_income_woman"
    older = _persona("persona=intersectional", "persona.attributes.income=elderly")
    assert older.phrase.startswith("an elderly")


def test_bad_persona_names_the_field():
    with pytest.raises(ConfigError, match="persona: .*phrase: empty"):
        validated(PersonaSpec, {"name": "x", "phrase": "  "}, "persona")
    with pytest.raises(ConfigError, match="name: a persona needs a name"):
        validated(PersonaSpec, {"phrase": "a pilot"}, "persona")


def test_agent_prompts_and_free_text_parsing():
    wheel = EmotionWheel.load("shaver")
    agent = PersonaAgent(PersonaSpec(name="female", phrase="a woman"), wheel)
    assert agent.probe_template == "{text} As a woman, I think the emotion involved in this situation is"
    assert PersonaAgent(PersonaSpec(name="neutral"), wheel).probe_template.endswith("{text} I think the emotion involved in this situation is".split("{text}")[1])
    assert agent.parse_answer("I think it is Hopelessness, mostly.") == "hopelessness"
    assert agent.parse_answer("Probably hope.") == "hope"
    assert agent.parse_answer("No idea") is None
    assert "You are a woman" in agent.chat_messages("text")[0].content


def test_recognition_graph_records_probe_and_free_text():
    wheel = EmotionWheel.load("ekman")
    backend = ScriptedBackend(
        responses=["Fear, clearly.", "I would say happiness"],
        continuation_logprobs={" anger": -3.0, " disgust": -3.0, " fear": -0.1, " happiness": -2.0,
                               " sadness": -3.0, " surprise": -3.0},
    )
    agent = PersonaAgent(PersonaSpec(name="age_70", phrase="a 70-year-old"), wheel)
    probe = EmotionProbe(backend, wheel, template=agent.probe_template)
    scenarios = [Scenario(id="a", text="A dog growls.", emotion="fear"), Scenario(id="b", text="A gift!", emotion="happiness")]
    graph = build_recognition_graph()
    state = graph.invoke({"scenarios": scenarios}, context=RecognitionContext(agent=agent, probe=probe, chat_model=backend))
    assert state["distributions"].shape == (2, 6)
    assert [a["predicted"] for a in state["free_text"]] == ["fear", "happiness"]
    assert "As a 70-year-old" in backend.seen[0][0].content or "You are a 70-year-old" in backend.seen[0][0].content
    probe_only = graph.invoke({"scenarios": scenarios}, context=RecognitionContext(agent=agent, probe=probe))
    assert "free_text" not in probe_only


@pytest.mark.embedded
def test_two_persona_sweep_and_report_on_the_embedded_model(tmp_path):
    scenarios = tmp_path / "labelled.jsonl"
    rows = [("The dog growled and lunged at me in the dark.", "terror", "fear"),
            ("My grandmother died last night.", "grief", "sadness"),
            ("I won the chess final!", "triumph", "joy"),
            ("Someone stole my bike again.", "rage", "anger")]
    scenarios.write_text("\n".join(json.dumps({"id": f"s{i}", "text": t, "emotion": e, "primary": p})
                                   for i, (t, e, p) in enumerate(rows)))
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    emolab = [sys.executable, "-m", "experiments.main"]
    sweep = subprocess.run([*emolab, "-m", "experiment=persona_bias", "persona=income_high,income_low",
                            f"scenarios={scenarios}", f"hydra.sweep.dir={tmp_path / 'sweep'}", "progress=false"],
                           capture_output=True, text=True, env=env, timeout=600)
    assert sweep.returncode == 0, sweep.stderr[-3000:]
    report = subprocess.run([*emolab, "experiment=persona_report", f"sweep_dir={tmp_path / 'sweep'}",
                             f"hydra.run.dir={tmp_path / 'report'}"], capture_output=True, text=True, env=env, timeout=600)
    assert report.returncode == 0, report.stderr[-3000:]
    out = tmp_path / "report"
    accuracy = pd.read_parquet(out / "accuracy.parquet")
    assert set(accuracy.index) == {"income_high", "income_low"}
    comparison = pd.read_parquet(out / "compare_income_high_vs_income_low.parquet")
    assert len(comparison) == 2 * 135 and set(comparison["calibrated"]) == {False, True}
    for name in ["accuracy.png", "confusion_primary.png", "radar_income_high_vs_income_low.png", "pies_fear.png"]:
        assert (out / name).stat().st_size > 3000, name
    predictions = pd.read_parquet(tmp_path / "sweep" / "0" / "predictions.parquet")
    assert np.allclose(predictions[EmotionWheel.load("shaver").words].sum(axis=1), 1)
