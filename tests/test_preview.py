"""`experiment=preview`: each agent's first prompt as a run sends it, the schemas, and scenario checks."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from hydra import compose, initialize_config_module
from omegaconf import OmegaConf

from agents.negotiation import turn_schemas
from emotion_probe import EmotionWheel
from emotion_probe.models.base import GenerateConfig
from emotion_probe.models.chat_template import load_chat_template
from emotion_probe.models.providers.scripted import ScriptedBackend
from emotion_probe.errors import ConfigError
from experiments.runs.negotiation import run as negotiation_experiment
from experiments.tools.preview import compact_json, preview

EMOTIONS = {"love": 10, "joy": 40, "surprise": 10, "anger": 10, "sadness": 10, "fear": 20}
SALES = '{"message": "Yours for 15.", "predicted_customer_emotions": %s}' % str(EMOTIONS).replace("'", '"')
CUSTOMER = ('{"message": "I will take it.", "my_emotions": %s, "decision": "accept", "price": 15}'
            % str(EMOTIONS).replace("'", '"'))
HELLO = ('{"message": "Hello, how much?", "my_emotions": %s, "decision": "continue", "price": null}'
         % str(EMOTIONS).replace("'", '"'))


def _cfg(tmp_path, *overrides: str):
    with initialize_config_module(config_module="conf", version_base="1.3"):
        return compose(config_name="config", overrides=[
            "experiment=negotiation", f"paths.output_dir={tmp_path}", "salesperson/model=scripted",
            "customer/model=scripted", "model=scripted", "cache.enabled=false", "probe_messages=false", *overrides])


@pytest.mark.parametrize("scenario", ["acorn", "used_car"])  # the salesperson opens one, the customer the other
def test_the_preview_shows_the_first_prompt_each_agent_is_really_sent(tmp_path, monkeypatch, scenario):
    cfg = _cfg(tmp_path, f"scenario={scenario}", "customer/persona=anxious", "scenario.max_turns=2")
    previews = preview(cfg)
    assert [p.role for p in previews][0] == cfg.scenario.opening_speaker
    # What the run's agents send, caught where the scripted backend receives it.
    sent: dict[str, list] = {}
    original = ScriptedBackend.generate

    def generate(self, messages, config=None, on_token=None):
        sent.setdefault(self.name, []).append(list(messages))
        return original(self, messages, config, on_token)

    monkeypatch.setattr(ScriptedBackend, "generate", generate)
    cfg.salesperson.model.name, cfg.salesperson.model.responses = "sales", [SALES, SALES]
    cfg.customer.model.name, cfg.customer.model.responses = "cust", [HELLO, CUSTOMER, '{"paid": 15}']
    negotiation_experiment.run(cfg)
    first = {"salesperson": sent["sales"][0], "customer": sent["cust"][0]}
    for agent in previews:
        real = first[agent.role]
        assert agent.messages[0] == real[0] and real[0].role == "system", "the system prompt, word for word"
        assert "an anxious first-time buyer" in first["customer"][0].content
        if agent.opens:
            assert agent.messages == real and agent.placeholder is None
        else:  # the other side's opening message, which only the run knows, sits where the placeholder is
            assert [m.role for m in agent.messages] == [m.role for m in real] == ["system", "user"]
            assert agent.messages[1].content == agent.placeholder and real[1].content in ("Yours for 15.",
                                                                                         "Hello, how much?")
        schema = turn_schemas(tuple(EmotionWheel.load("shaver").primaries))._asdict()[agent.role]  # probe.wheel's
        assert agent.schema_name == schema.__name__ and agent.json_schema == schema.model_json_schema()
        assert agent.prompt is None and agent.tokens is None, "the scripted backend applies no chat template"


@pytest.mark.parametrize(("override", "message"), [
    ("scenario.customer_budget=0.5",
     "scenario.customer_budget: Value error, 0.5 is below seller_cost (1), so no price suits both sides"),
    ("scenario.opening_speaker=seller", "scenario.opening_speaker: Input should be 'salesperson' or 'customer'"),
    ("+scenario.budget=30", "scenario.budget: Extra inputs are not permitted"),
    ("salesperson/model=transformers", "salesperson.model config needs a value for: path"),
])
def test_a_bad_scenario_or_model_names_the_field(tmp_path, override, message):
    cfg = _cfg(tmp_path, override)
    with pytest.raises(ConfigError) as caught:
        preview(cfg)
    assert str(caught.value).startswith(message)


def test_on_the_command_line_a_bad_field_is_one_line_and_exit_code_2(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "experiments.app.main", "experiment=preview", "scenario=used_car",
         "scenario.customer_budget=5000", f"hydra.run.dir={tmp_path}"],
        cwd=tmp_path, capture_output=True, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"}, timeout=300)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "error: scenario.customer_budget: Value error, 5000 is below seller_cost (6500), so no price suits both sides"]


def test_servers_and_the_scripted_backend_build_no_prompt_here():
    with initialize_config_module(config_module="conf", version_base="1.3"):
        openai = compose(config_name="config", overrides=["model=openai", "model.model=x"]).model
        scripted = compose(config_name="config", overrides=["model=scripted"]).model
    assert load_chat_template(openai) is None and load_chat_template(scripted) is None


def test_compact_json_keeps_short_parts_on_one_line():
    value = {"required": ["a", "b"], "properties": {"a": {"type": "string", "description": "x" * 120}}}
    text = compact_json(value, width=60)
    assert '  "required": ["a", "b"],' in text.splitlines()
    assert OmegaConf.to_container(OmegaConf.create(text)) == value  # still the same JSON


@pytest.mark.embedded
def test_the_previewed_prompt_is_the_one_the_embedded_model_is_given(tmp_path, smollm2):
    with initialize_config_module(config_module="conf", version_base="1.3"):
        cfg = compose(config_name="config", overrides=["experiment=preview", "scenario=vintage_guitar"])
    previews = preview(cfg)
    opener = previews[0]
    assert opener.prompt.startswith("<|im_start|>system\nYou are a salesperson selling a 1968 Gibson")
    assert opener.prompt.endswith("<|im_start|>assistant\n")
    # The backend's own count of the prompt it built for these messages.
    generation = smollm2.generate(opener.messages, GenerateConfig(max_tokens=1))
    assert generation.prompt_tokens == opener.tokens["prompt"]
    assert opener.tokens["system"] + opener.tokens["first_user_turn"] < opener.tokens["prompt"]
