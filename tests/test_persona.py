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
from emotion_probe.models.providers.scripted import ScriptedBackend
from emotion_probe.scenarios import Scenario
from environments.recognition import RecognitionContext, build_recognition_graph
from experiments.app.common import validated
from experiments.app.config import probe_settings

CONF = Path(__file__).resolve().parents[1] / "conf"
PAPER_SET = {"neutral", "male", "female", "asian", "american", "able", "disable", "income_high", "income_low",
             "education_high", "education_low", "age_10", "age_30", "age_70"}


def _persona(*overrides: str) -> PersonaSpec:
    with initialize_config_module(config_module="conf", version_base="1.3"):
        cfg = compose(config_name="config", overrides=list(overrides))
    return validated(PersonaSpec, cfg.persona, "persona")


def test_paper_persona_set_ships_and_validates():
    names = {p.stem for p in (CONF / "persona").glob("*.yaml")} - {"intersectional", "from_file"}
    assert PAPER_SET <= names  # the authors' 33 ship too: tests/test_authors_files.py
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
    # The authors' layout: the persona sentence on a new line after the scenario.
    assert agent.probe_template == "{text}\nAs a woman, I think the emotion involved in this situation is"
    assert PersonaAgent(PersonaSpec(name="neutral"), wheel).probe_template == (
        "{text}\nI think the emotion involved in this situation is")
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
    probe = EmotionProbe(backend, wheel, probe_settings(wheel=wheel.source, template=agent.probe_template))
    scenarios = [Scenario(id="a", text="A dog growls.", emotion="fear"), Scenario(id="b", text="A gift!", emotion="happiness")]
    graph = build_recognition_graph()
    state = graph.invoke({"scenarios": scenarios}, context=RecognitionContext(agent=agent, probe=probe, chat_model=backend))
    assert state["distributions"].shape == (2, 6)
    assert [a["predicted"] for a in state["free_text"]] == ["fear", "happiness"]
    # The chat request speaks as the persona (system) and asks about this scenario (user), one per scenario.
    assert len(backend.seen) == 2
    for (system, user), scenario in zip(backend.seen, scenarios):
        assert system.role == "system" and system.content.startswith("You are a 70-year-old. Answer as yourself.")
        assert user.role == "user" and user.content.startswith(f"{scenario.text}\nWhich emotion is involved")
    # The probe scored the persona's own template.
    assert probe.settings.template == agent.probe_template and "As a 70-year-old, I think" in agent.probe_template
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
    emolab = [sys.executable, "-m", "experiments.app.main"]
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


class _TopTokensByText(ScriptedBackend):
    """The paper's method sees only the top tokens; here they depend on the text in the prompt."""

    def __init__(self, tops: dict[str, dict[str, float]]):
        super().__init__(name="by-text")
        self.tops = tops

    def top_tokens(self, prompts, k):
        return [next((dict(top) for text, top in self.tops.items() if text in prompt), {}) for prompt in prompts]


def test_persona_bias_with_the_paper_method_calibrates_despite_zeros(tmp_path, monkeypatch):
    """Words outside the top k have prior 0; the run calibrates by the floor rule instead of raising."""
    from experiments.runs import persona_bias

    scenarios = tmp_path / "labelled.jsonl"
    rows = [("a", "A dog growls.", "fear"), ("b", "A gift!", "happiness"), ("c", "Nothing here.", "sadness")]
    scenarios.write_text("\n".join(json.dumps({"id": i, "text": t, "emotion": e}) for i, t, e in rows))
    backend = _TopTokensByText({
        "N/A": {" happiness": -0.3, " fear": -2.0}, "[MASK]": {" happiness": -0.4},  # "..." names nothing
        "A dog growls.": {" happiness": -0.9, " fear": -1.0},  # happiness first, but it is the prior's favourite
        "A gift!": {" happiness": -0.2, " surprise": -3.0},
    })
    monkeypatch.setattr(persona_bias, "build_model", lambda node, run_cfg=None: backend)
    with initialize_config_module(config_module="conf", version_base="1.3"):
        cfg = compose(config_name="config", overrides=[
            "experiment=persona_bias", "model=scripted", "probe.method=paper", "probe.wheel=ekman",
            f"scenarios={scenarios}", f"paths.output_dir={tmp_path / 'run'}", "progress=false", "cache=default"])
    metrics = persona_bias.run(cfg)
    table = pd.read_parquet(tmp_path / "run" / "predictions.parquet").set_index("id")
    # "Nothing here." named no word: no prediction (null), not the wheel's first word.
    def labels(column: str) -> list[str | None]:
        return [None if pd.isna(value) else value for value in table[column]]

    assert labels("predicted") == ["happiness", "happiness", None]
    assert labels("predicted_calibrated") == ["fear", "happiness", None]
    # Accuracy over the answered rows (2 of 3): one right before calibration, both after.
    assert metrics["accuracy"] == pytest.approx(1 / 2) and metrics["calibrated_accuracy"] == pytest.approx(1.0)
    prior = json.loads((tmp_path / "run" / "prior.json").read_text())
    assert prior["anger"] == 0 and prior["happiness"] > prior["fear"] > 0
