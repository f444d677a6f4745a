"""Negotiation: schemas and retries, information hiding, termination, price parsing, resume, metrics."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import yaml
from langgraph.checkpoint.sqlite import SqliteSaver

from agents.negotiation import (
    NEUTRAL_LINE,
    NegotiationScenario,
    emotion_report,
    salesperson_messages,
    turn_schemas,
)
from agents.price import parse_price
from agents.structured import call_structured
from emotion_probe import ConfigError, EmotionWheel
from emotion_probe.models.providers.scripted import ScriptedBackend
from agents.human import HumanNegotiator
from agents.negotiators import negotiators
from emotion_probe.models.base import GenerateConfig
from environments.negotiation import NegotiationContext, build_negotiation_graph, initial_state
from experiments.app.common import validated
from emotion_probe.analysis.negotiation import trial_metrics
from experiments.app.config import build_probe

CONF = Path(__file__).resolve().parents[1] / "conf" / "scenario"
ACORN = NegotiationScenario.model_validate(yaml.safe_load((CONF / "acorn.yaml").read_text()))
SHAVER = tuple(EmotionWheel.load("shaver").primaries)
EmotionReport = emotion_report(SHAVER)
CustomerTurn = turn_schemas(SHAVER).customer


def E(**values: float) -> dict:
    return {**dict.fromkeys(["love", "joy", "surprise", "anger", "sadness", "fear"], 0), **values}


def sales(message: str, **emotions: float) -> str:
    return json.dumps({"message": message, "predicted_customer_emotions": E(**emotions)})


def cust(message: str, decision: str = "continue", price: float | None = None, **emotions: float) -> str:
    return json.dumps({"message": message, "my_emotions": E(**emotions), "decision": decision, "price": price})


PROBE = ScriptedBackend(continuation_logprobs={" joy": -0.5, " anger": -1.0, " fear": -2.0})


def _run(salesperson: list[str], customer: list[str], scenario: NegotiationScenario = ACORN, checkpointer=None,
         thread: str = "t0", wheel: str = "shaver", player: str | None = None):
    s, c = ScriptedBackend(responses=salesperson), ScriptedBackend(responses=customer)
    probe = build_probe(PROBE, wheel=wheel)
    context = _context(scenario, s, c, probe, max_parse_retries=1, player=player)
    graph = build_negotiation_graph(checkpointer)
    config = {"configurable": {"thread_id": thread}}
    state = graph.invoke(initial_state(0), config, context=context)
    return state, s, c


def _context(scenario, s, c, probe, max_parse_retries: int = 2, player: str | None = None) -> NegotiationContext:
    agents = negotiators({"salesperson": s, "customer": c}, max_parse_retries=max_parse_retries,
                         generate_config=GenerateConfig(max_tokens=256),
                         people={player: HumanNegotiator()} if player else None)
    return NegotiationContext(scenario=scenario, agents=agents, probe=probe, wheel=probe.wheel)


def _price(state: dict, key: str):
    """The price a finished state's records hold: the accepted one, or what the closing kept."""
    if key == "agreed_price":
        accepts = [t for t in state["turns"] if t["speaker"] == "customer" and t["decision"] == "accept"]
        return accepts[-1]["price"] if accepts else None
    return next(t["paid"] for t in state["turns"] if t["speaker"] == "closing")


def test_emotion_report_renormalizes_any_positive_sum_and_keeps_the_raw_sum():
    report = EmotionReport(**E(joy=52, anger=50))
    assert report.raw_sum == 102
    assert sum(report.normalized()) == pytest.approx(100) and report.normalized()[1] == pytest.approx(50.98, abs=0.01)
    far_off = EmotionReport(**E(joy=30))  # renormalized, not rejected: the raw sum tells how far off it was
    assert far_off.raw_sum == 30 and far_off.normalized() == [0, 100, 0, 0, 0, 0]
    with pytest.raises(ValueError, match="sum to 0"):
        EmotionReport(**E())
    with pytest.raises(ValueError, match="sum to 60, not 100"):  # a study that wants the sum itself checked
        EmotionReport.model_validate(E(joy=60), context={"sum_tolerance": 10})
    assert EmotionReport.model_validate(E(joy=95), context={"sum_tolerance": 10}).raw_sum == 95
    for bad in (E(joy=120), E(joy=-5), E(joy=50.5)):  # whole numbers from 0 to 100 only
        with pytest.raises(ValueError):
            EmotionReport(**bad)
    with pytest.raises(ValueError, match="price: required"):
        CustomerTurn.model_validate(json.loads(cust("ok", "accept", None, joy=100)))


def test_no_agent_prompt_shows_example_numbers():
    """A small model copies example numbers; prompts name the fields and show no values."""
    import re

    from agents.negotiation import closing_messages, customer_messages
    from agents.records import CustomerTurnRecord, SalespersonTurnRecord

    scenario = ACORN.model_copy(update={"seller_cost": 3, "customer_budget": 29, "description": "A glossy acorn."})
    turns = [SalespersonTurnRecord.model_construct(text="Hello."), CustomerTurnRecord.model_construct(text="Hi.")]
    prompts = [*salesperson_messages(scenario, [], SHAVER), *salesperson_messages(scenario, turns, SHAVER),
               *customer_messages(scenario, [], SHAVER), *customer_messages(scenario, turns, SHAVER),
               *closing_messages(scenario, turns, SHAVER)]
    text = "\n".join(m.content for m in prompts)
    # The only numbers are the scenario's own and the 100 the percentages add up to.
    assert set(re.findall(r"\d+", text)) == {"3", "29", "100"}
    assert "{" not in text  # no JSON example to copy
    for field in ("message", "predicted_customer_emotions", "my_emotions", "decision", "price", "paid"):
        assert f'"{field}"' in text


def test_failed_turns_pass_on_only_a_recovered_message_never_emotion_numbers():
    """Invalid replies that carry emotion numbers: none of those numbers reaches the other agent."""
    salesperson = [
        # cut off after the message: the message is recovered, the numbers stay behind
        '{"message": "A rare acorn for you.", "predicted_customer_emotions": {"love": 83, "joy": 17',
        '{"message": "A rare acorn for you.", "predicted_customer_emotions": {"love": 83, "joy": 4711}}',
        "I predict love 83 and joy 17.",  # no JSON at all: the other side gets the neutral line
        "I predict love 83 and joy 17.",
        "I predict love 83 and joy 17.",
        "I predict love 83 and joy 17.",
    ]
    customer = [
        '{"my_emotions": {"love": 0, "joy": 0, "surprise": 0, "anger": 0, "sadness": 67, "fear": 33}, '
        '"message": "Too dear.", "decision": "maybe"}',
        '{"message": "Too dear.", "my_emotions": {"sadness": 67, "fear": 9133}}',
        cust("No thanks.", "walk_away", sadness=58, fear=42),
        '{"paid": null}',
    ]
    state, s, c = _run(salesperson, customer)
    seen_by_customer = "\n".join(m.content for call in c.seen for m in call if m.role != "system")
    seen_by_salesperson = "\n".join(m.content for call in s.seen for m in call if m.role != "system")
    for number in ("83", "17", "4711"):
        assert number not in seen_by_customer
    for number in ("67", "33", "9133", "58", "42"):
        assert number not in seen_by_salesperson
    failed = [t for t in state["turns"] if t.get("parse_status") == "failed"]
    assert [t["text"] for t in failed] == ["A rare acorn for you.", "Too dear.", NEUTRAL_LINE]
    assert "4711" in failed[0]["raw"] and "9133" in failed[1]["raw"]  # kept for audit
    assert "A rare acorn for you." in seen_by_customer and "Too dear." in seen_by_salesperson


def test_structured_call_retries_with_the_error_then_records_failure():
    backend = ScriptedBackend(responses=["nope", '{"message": "hi", "predicted_customer_emotions": {"joy": 5}}',
                                         "still nope"])
    reply = call_structured(backend, salesperson_messages(ACORN, [], SHAVER), turn_schemas(SHAVER).salesperson,
                            max_retries=2)
    assert reply.parse_status == "failed" and reply.attempts == 3 and reply.raw == "still nope"
    assert "Your reply was invalid: the reply contains no JSON object" in backend.seen[1][-1].content
    assert "predicted_customer_emotions.love" in reply.errors[1]


@pytest.mark.parametrize("text,price", [("$1,200", 1200), ("twelve dollars", 12), ("I didn't buy it", None),
                                        ("I paid $3.50 for it.", 3.5), ("two hundred and fifty dollars", 250),
                                        ("No deal.", None), ("forty-two dollars", 42), ("about 15 bucks", 15),
                                        ("", None)])
def test_price_parser_on_messy_text(text, price):
    assert parse_price(text) == price


def test_deal_ends_the_talk_and_closing_reads_the_price():
    state, s, c = _run(
        [sales("Fine acorn, $15.", joy=60, surprise=40), sales("For you, $9.", joy=100)],
        [cust("Too much.", anger=50, surprise=50), cust("Deal at $9.", "accept", 9, joy=100), json.dumps({"paid": "$9"})],
    )
    assert state["status"] == "deal" and _price(state, "agreed_price") == 9 and _price(state, "final_price") == 9
    speakers = [t["speaker"] for t in state["turns"]]
    assert speakers == ["salesperson", "customer", "probe", "salesperson", "customer", "probe", "closing"]
    assert s.remaining == 0 and c.remaining == 0


def test_walk_away_and_max_turns_terminate():
    walked, _, _ = _run([sales("$19, final.", joy=100)], [cust("Bye.", "walk_away", sadness=100), '{"paid": null}'])
    assert walked["status"] == "walk_away" and _price(walked, "final_price") is None
    short = ACORN.model_copy(update={"max_turns": 2})
    capped, _, _ = _run([sales("a", joy=100), sales("b", joy=100)],
                        [cust("no", fear=100), cust("no", fear=100), '{"paid": 5}'], short)
    # No deal, so a claimed payment is recorded but not believed.
    assert capped["status"] == "max_turns" and _price(capped, "final_price") is None
    assert capped["turns"][-1]["paid_claimed"] == 5


def test_each_side_sees_only_the_others_messages():
    state, s, c = _run(
        [sales("This lovely acorn is $15.", love=77, joy=23), sales("$9 then.", joy=100)],
        [cust("Hmm.", sadness=61, fear=39), cust("Deal.", "accept", 9, joy=100), '{"paid": 9}'],
    )
    seen_by_salesperson = "\n".join(m.content for call in s.seen for m in call)
    seen_by_customer = "\n".join(m.content for call in c.seen for m in call)
    assert "61" not in seen_by_salesperson and "sadness\": 6" not in seen_by_salesperson
    assert "77" not in seen_by_customer and "lovely acorn" in seen_by_customer  # "lovely" survives intact
    assert any(m.content == "Hmm." and m.role == "user" for m in s.seen[1])


def test_failed_parses_never_crash_and_are_counted():
    state, _, _ = _run(["garbage", "garbage", sales("b", joy=100), sales("c", joy=100)],
                       [cust("no", anger=100), "junk", "junk", cust("ok", "accept", 3, joy=100), '{"paid": 3}'])
    metrics = trial_metrics(state["turns"])
    assert metrics["parse_failures"] == 2 and state["status"] == "deal"
    assert state["turns"][0]["parse_status"] == "failed" and state["turns"][0]["text"] == NEUTRAL_LINE


def test_metrics_on_a_scripted_conversation():
    turns = [
        {"speaker": "salesperson", "prediction": [0, 50, 50, 0, 0, 0]},
        {"speaker": "customer", "report": [0, 100, 0, 0, 0, 0]},
        {"speaker": "probe"},
        {"speaker": "salesperson", "prediction": [0, 100, 0, 0, 0, 0]},
        {"speaker": "customer", "report": [0, 100, 0, 0, 0, 0]},
    ]
    metrics = trial_metrics(turns)
    # |0-0|+|50-100|+|50-0| over 6 emotions = 100/6 pp, then 0: mean 8.33 pp.
    assert metrics["mean_abs_error_pp"] == pytest.approx(100 / 12)
    assert metrics["js_divergence"] == pytest.approx(0.5 * 0.311278, abs=1e-4)
    assert metrics["turns"] == 4 and metrics["scored_predictions"] == 2


def test_probe_builds_a_running_matching_matrix():
    from environments.negotiation import matching_over_conversation

    state, _, _ = _run([sales("a", joy=100), sales("b", joy=100)],
                       [cust("no", fear=100), cust("yes", "accept", 2, joy=100), '{"paid": 2}'])
    probes = [t for t in state["turns"] if t["speaker"] == "probe"]
    assert len(probes) == 2 and len(probes[0]["probe"]) == 135
    M = matching_over_conversation(state, SHAVER)
    assert M.shape == (6, 6) and np.allclose(M.sum(axis=1)[M.sum(axis=1) > 0], 1)


def test_crash_mid_trial_resumes_from_the_last_completed_step(tmp_path):
    database = str(tmp_path / "checkpoints.sqlite")
    salesperson = [sales("a", joy=100), sales("b", joy=100)]
    with SqliteSaver.from_conn_string(database) as saver:
        with pytest.raises(Exception, match="ran out"):  # the customer's script ends mid-talk: a crash
            _run(salesperson, [cust("no", fear=100)], checkpointer=saver, thread="trial-0")
    with SqliteSaver.from_conn_string(database) as saver:
        graph = build_negotiation_graph(saver)
        config = {"configurable": {"thread_id": "trial-0"}}
        done = graph.get_state(config).values["turns"]
        assert [t["speaker"] for t in done] == ["salesperson", "customer", "probe", "salesperson"]
        s, c = ScriptedBackend(responses=[]), ScriptedBackend(responses=[cust("ok", "accept", 4, joy=100), '{"paid": 4}'])
        probe = build_probe(PROBE, wheel="shaver")
        context = _context(ACORN, s, c, probe)
        state = graph.invoke(None, config, context=context, durability="sync")
    assert state["status"] == "deal" and _price(state, "final_price") == 4
    assert state["turns"][:4] == done  # finished steps were kept, not redone


def test_every_scenario_validates_and_bad_ones_name_the_field(tmp_path):
    names = sorted(p.stem for p in CONF.glob("*.yaml"))
    assert {"acorn", "used_car", "vintage_guitar"} <= set(names)
    for name in names:
        validated(NegotiationScenario, yaml.safe_load((CONF / f"{name}.yaml").read_text()), "scenario")
    broken = {**yaml.safe_load((CONF / "acorn.yaml").read_text()), "customer_budget": -3}
    with pytest.raises(ConfigError, match="^scenario.customer_budget: Input should be greater than 0"):
        validated(NegotiationScenario, broken, "scenario")


# --- the emotion set is the wheel's primaries ------------------------------------------------------


@pytest.mark.parametrize("wheel", ["ekman", "plutchik"])
def test_schemas_and_prompts_follow_the_wheels_primaries(wheel):
    from agents.negotiation import agent_turns, closing_messages

    primaries = tuple(EmotionWheel.load(wheel).primaries)
    schemas = turn_schemas(primaries)
    assert turn_schemas(primaries) is schemas, "built once per emotion set"
    for schema, field in ((schemas.salesperson, "predicted_customer_emotions"), (schemas.customer, "my_emotions")):
        report = schema.model_json_schema()["$defs"]["EmotionReport"]
        assert list(report["properties"]) == list(primaries) and report["required"] == list(primaries)
        assert next(iter(schema.model_fields)) == "message", "the grammar writes the message first"
        assert schema.model_fields[field].annotation is emotion_report(primaries)
    assert list(schemas.customer.model_fields) == ["message", "my_emotions", "decision", "price"]
    # The same checks as the default's: renormalized, a zero sum refused, whole percentages from 0 to 100.
    report = emotion_report(primaries)
    values = dict.fromkeys(primaries, 0)
    assert report(**{**values, "fear": 30, "surprise": 10}).normalized()[primaries.index("fear")] == 75
    with pytest.raises(ValueError, match=f"the {'six' if len(primaries) == 6 else 'eight'} percentages sum to 0"):
        report(**values)
    with pytest.raises(ValueError, match="sum to 60, not 100"):
        report.model_validate({**values, "fear": 60}, context={"sum_tolerance": 10})
    for bad in ({**values, "fear": 120}, {**values, "fear": 50.5}, E(joy=100)):  # E(): Shaver's names
        with pytest.raises(ValueError):
            report(**bad)
    with pytest.raises(ValueError, match="price: required"):
        schemas.customer.model_validate({"message": "ok", "my_emotions": {**values, "fear": 100}, "decision": "accept"})
    # The prompts list the wheel's primaries, and no other emotion.
    listed = f"{', '.join(primaries[:-1])} and {primaries[-1]}"
    turns = agent_turns(primaries)
    system = [turns[role].messages(ACORN, [])[0].content for role in ("salesperson", "customer")]
    system.append(closing_messages(ACORN, [], primaries)[0].content)
    for text in system:
        assert f"how much {listed}" in text
        assert "love" not in text
    assert turns["customer"].schema is schemas.customer


def test_the_default_wheel_keeps_its_prompt_and_schema():
    """Shaver's six, in the words the default run has always used (the embedded model was tuned on them)."""
    from agents.negotiation import customer_system

    assert "rate how much love, joy, surprise, anger, sadness and fear you feel now" in customer_system(ACORN, SHAVER)
    report = turn_schemas(SHAVER).customer.model_json_schema()["$defs"]["EmotionReport"]
    assert report["description"].startswith("Whole-number percentages over the six primary emotions.")
    assert report["properties"]["love"] == {"description": "percentage of love, a whole number from 0 to 100",
                                            "maximum": 100, "minimum": 0, "title": "Love", "type": "integer"}


def test_an_ekman_negotiation_reports_probes_and_labels_ekmans_primaries():
    ekman = tuple(EmotionWheel.load("ekman").primaries)

    def report(**values: int) -> dict:
        return {**dict.fromkeys(ekman, 0), **values}

    salesperson = [json.dumps({"message": "Yours for 9.", "predicted_customer_emotions": report(happiness=100)})]
    customer = [json.dumps({"message": "Deal.", "my_emotions": report(happiness=60, surprise=40),
                            "decision": "accept", "price": 9}), '{"paid": 9}']
    state, _, c = _run(salesperson, customer, wheel="ekman")
    assert "how much anger, disgust, fear, happiness, sadness and surprise" in c.seen[0][0].content
    by_speaker = {t["speaker"]: t for t in state["turns"]}
    assert by_speaker["salesperson"]["emotions"] == list(ekman) and by_speaker["customer"]["emotions"] == list(ekman)
    assert by_speaker["customer"]["report"] == [0, 0, 0, 60, 0, 40]
    assert by_speaker["salesperson"]["prediction"] == [0, 0, 0, 100, 0, 0]
    probe = by_speaker["probe"]
    # PROBE scores " anger" and " fear" among Ekman's words: all the mass lands on those two primaries.
    assert probe["emotions"] == list(ekman) and len(probe["probe_primary"]) == 6
    assert probe["probe_primary"][0] > probe["probe_primary"][2] > 0 and sum(probe["probe_primary"]) == pytest.approx(100)
    assert np.asarray(state["probe_cooccurrence"]).shape == (6, 6)
    metrics = trial_metrics(state["turns"], emotions=ekman)
    assert metrics["abs_error_pp_happiness"] == 40 and metrics["abs_error_pp_surprise"] == 40
    assert metrics["mean_abs_error_pp"] == pytest.approx(80 / 6)


def test_a_probe_over_another_wheel_is_refused():
    with pytest.raises(ValueError, match="the probe's wheel 'shaver' has other primaries"):
        NegotiationContext(scenario=ACORN, agents={}, probe=build_probe(PROBE, wheel="shaver"),
                           wheel=EmotionWheel.load("ekman"))
