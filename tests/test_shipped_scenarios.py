"""Every scenario in conf/scenario/ composes, validates as a run reads it, gives both agents a first prompt,
and plays one trial end to end on scripted models: the customer accepts at a price both sides can live
with, and the trial is recorded as a deal at that price. Parametrized over the folder, so a new file is
covered without touching this test."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
from hydra import compose, initialize_config_module

from emotion_probe.limits import InputLimits
from experiments.runs.negotiation import run as negotiation_experiment
from experiments.runs.negotiation.run import read_scenario
from experiments.tools.preview import preview

SCENARIOS = Path(__file__).resolve().parents[1] / "conf" / "scenario"
E = dict.fromkeys(["love", "joy", "surprise", "anger", "sadness", "fear"], 0)


def _config(name: str, out: Path):
    with initialize_config_module(config_module="conf", version_base="1.3"):
        return compose(config_name="config", overrides=[
            "experiment=negotiation", f"scenario={name}", "model=scripted", "salesperson/model=scripted",
            "customer/model=scripted", "trials=1", "cache.enabled=false", "progress=false",
            "probe_messages=false", f"paths.output_dir={out}"])


@pytest.mark.parametrize("name", sorted(p.stem for p in SCENARIOS.glob("*.yaml")))
def test_shipped_scenario_validates_previews_and_closes_a_deal(name, tmp_path):
    cfg = _config(name, tmp_path)
    _, scenario = read_scenario(cfg, InputLimits.shipped())
    assert scenario.name == name  # the name outputs show is the one users type

    previews = preview(cfg)
    assert [p.role for p in previews][0] == scenario.opening_speaker
    assert {p.role for p in previews} == {"salesperson", "customer"}
    for agent in previews:
        system = agent.messages[0]
        assert system.role == "system" and scenario.item in system.content, agent.role
        assert len(agent.messages) >= 2 and agent.messages[-1].content, agent.role

    # The customer accepts on its first turn, halfway between the seller's cost and its budget, and the
    # closing answer pays that price. The salesperson speaks only when it opens.
    price = (scenario.seller_cost + scenario.customer_budget) / 2
    assert scenario.seller_cost <= price <= scenario.customer_budget
    sales = [json.dumps({"message": "Welcome, it is a fine piece.", "predicted_customer_emotions": {**E, "joy": 100}})]
    cfg.salesperson.model.responses = sales if scenario.opening_speaker == "salesperson" else []
    cfg.customer.model.responses = [
        json.dumps({"message": "I will take it.", "my_emotions": {**E, "joy": 100}, "decision": "accept",
                    "price": price}),
        json.dumps({"paid": price}),
    ]
    negotiation_experiment.run(cfg)

    trials = pd.read_parquet(tmp_path / "trials.parquet")
    assert len(trials) == 1
    trial = trials.iloc[0]
    assert trial["scenario"] == name and trial["status"] == "deal" and bool(trial["deal"])
    assert trial["final_price"] == pytest.approx(price) and trial["closing_paid"] == pytest.approx(price)
    assert not trial["over_budget"]
    assert trial["parse_failures"] == 0
