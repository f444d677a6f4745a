"""One scenario through a run: validated once, with the customer persona merged in, and every step after
handed that object; the agents are asked one way, whoever plays; the rules that end the talk are the
scenario's choice."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hydra import compose, initialize_config_module

from agents.negotiation import NegotiationScenario
from emotion_probe.errors import ConfigError
from experiments.runs.negotiation import run as negotiation_experiment

E = dict.fromkeys(["love", "joy", "surprise", "anger", "sadness", "fear"], 0)


def _sales(message: str) -> str:
    return json.dumps({"message": message, "predicted_customer_emotions": {**E, "joy": 100}})


def _customer(message: str, decision: str = "continue", price: float | None = None) -> str:
    return json.dumps({"message": message, "my_emotions": {**E, "fear": 100}, "decision": decision, "price": price})


def negotiation_run(tmp_path: Path, *overrides: str, trials: int = 2) -> Path:
    """A negotiation on scripted models, as a user's run: each trial walks away after two customer turns."""
    with initialize_config_module(config_module="conf", version_base="1.3"):
        cfg = compose(config_name="config", overrides=[
            "experiment=negotiation", "model=scripted", "salesperson/model=scripted", "customer/model=scripted",
            f"trials={trials}", "cache.enabled=false", "progress=false", f"paths.output_dir={tmp_path}",
            *overrides])
    cfg.salesperson.model.responses = [_sales("Nine dollars."), _sales("Eight, then.")] * trials
    cfg.customer.model.responses = [_customer("Too dear."), _customer("No, thanks.", "walk_away"),
                                    '{"paid": null}'] * trials
    cfg.model.continuation_logprobs = {" joy": -1.0, " fear": -2.0}
    negotiation_experiment.run(cfg)
    return tmp_path


class _CountingValidator:
    """Stands in for a pydantic model's validator and counts the validations it is asked for."""

    def __init__(self, inner):
        self.inner, self.count = inner, 0

    def __getattr__(self, name):
        attribute = getattr(self.inner, name)
        if name.startswith("validate_"):
            def counted(*args, **kwargs):
                self.count += 1
                return attribute(*args, **kwargs)

            return counted
        return attribute


def test_the_scenario_is_validated_once_per_run_whatever_the_trials_and_turns(tmp_path, monkeypatch):
    counter = _CountingValidator(NegotiationScenario.__pydantic_validator__)
    monkeypatch.setattr(NegotiationScenario, "__pydantic_validator__", counter)
    run_dir = negotiation_run(tmp_path, "customer/persona=anxious", trials=2)
    lines = [json.loads(x) for x in (run_dir / "transcript.jsonl").read_text(encoding="utf-8").splitlines()]
    assert sum(line["speaker"] == "customer" for line in lines) == 4  # 2 trials x 2 customer turns were played
    assert counter.count == 1


def test_a_scenario_can_leave_out_a_rule(tmp_path):
    """Without `walk_away`, the customer's walking away does not end the talk: max_turns does."""
    run_dir = negotiation_run(tmp_path, "+scenario.rules=[deal,max_turns]", "scenario.max_turns=2", trials=1)
    trials = __import__("pandas").read_parquet(run_dir / "trials.parquet")
    assert trials["status"].tolist() == ["max_turns"]
    summary = json.loads((run_dir / "summary.json").read_text(encoding="utf-8"))
    assert summary["walk_aways"] == 0 and summary["max_turns_reached"] == 1


def test_an_unknown_rule_is_refused_before_any_model_loads(tmp_path):
    with pytest.raises(ConfigError, match=r"scenario.rules: 'haggle' is not a rule; expected names from"):
        negotiation_run(tmp_path, "+scenario.rules=[deal,haggle]", trials=1)
    assert not (tmp_path / "transcript.jsonl").exists()


def test_the_environment_never_asks_who_plays():
    """The graph's nodes ask `agents[role]`; nothing in the environment names the human player."""
    source = (Path(__file__).resolve().parents[1] / "environments" / "negotiation.py").read_text(encoding="utf-8")
    for word in ("player", "human", "interrupt", "call_structured"):
        assert word not in source, word
