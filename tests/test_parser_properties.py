"""Every parser of outside input, on any input at all: a clear error of the documented kind, or a documented value.

- scenario JSONL (emotion_probe.scenarios.load_scenarios): random bytes, JSON of any type, records with
  fields of the wrong type, lines cut short. A ConfigError that names the file and, past the file's
  first checks, the line; or scenarios with unique ids and non-blank texts.
- wheel files (emotion_probe.wheel.EmotionWheel.load), YAML and JSON: random text, documents of the
  wheel's shape with values of any type, files cut short. A ConfigError that names the file; or a wheel
  whose words are unique, non-blank and stripped, primaries first.
- agent replies (agents.structured.parse_json_object with the negotiation schemas): random text, JSON
  fragments, huge, negative and non-finite numbers, strings where numbers go. A ValueError with the
  reason (call_structured shows it to the model and asks again); or a reply whose percentages are whole
  numbers in [0, 100] with a positive sum, whose prices are finite and in [0, PRICE_MAX], and whose
  accept names a price. As pydantic's lax mode documents, "40" and 40.0 read as 40.
"""

from __future__ import annotations

import json
import math

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from agents.negotiation import PRICE_MAX, ClosingAnswer, turn_schemas
from agents.structured import parse_json_object
from emotion_probe.errors import ConfigError
from emotion_probe.scenarios import load_scenarios
from emotion_probe.wheel import EmotionWheel

# JSON values of every type, with the numbers a parser is most likely to trip on.
NUMBERS = st.one_of(st.integers(), st.integers(min_value=-(10**30), max_value=10**30),
                    st.floats(allow_nan=True, allow_infinity=True), st.sampled_from([0, -1, 100, 101, 10**400]))
SCALARS = st.one_of(st.none(), st.booleans(), NUMBERS, st.text(max_size=30))
VALUES = st.recursive(SCALARS, lambda inner: st.one_of(st.lists(inner, max_size=4),
                                                        st.dictionaries(st.text(max_size=8), inner, max_size=4)),
                      max_leaves=12)
DEEP = "[" * 100_000  # deeper than Python's recursion limit
DEEP_REPLY = '{"paid": ' + DEEP + "}"


def _dumps(value) -> str:
    return json.dumps(value, allow_nan=True)  # NaN and Infinity as bare tokens, as Python's json reads them


def _cut(text: str, data) -> str:
    """`text`, or a prefix of it: a line or a file cut short."""
    return text[: data.draw(st.integers(0, len(text)), label="cut")] if data.draw(st.booleans(), label="cut?") else text


def _one_clear_line(err: Exception, path) -> None:
    message = str(err)
    assert message.startswith(str(path)) or str(path) in message, message
    assert "\n" not in message and "Traceback" not in message, message


# ---------------------------------------------------------------------------------------- scenario JSONL
SCENARIO_FIELDS = st.dictionaries(st.sampled_from(["id", "text", "emotion", "primary", "label", "source"]),
                                  st.one_of(st.text(max_size=20), VALUES), max_size=6)


def _check_scenarios(path) -> None:
    try:
        scenarios = load_scenarios(path)
    except ConfigError as err:
        _one_clear_line(err, path)
        return
    assert scenarios and len({s.id for s in scenarios}) == len(scenarios)
    for scenario in scenarios:
        assert isinstance(scenario.id, str) and scenario.id and isinstance(scenario.text, str) and scenario.text.strip()
        assert scenario.emotion is None or isinstance(scenario.emotion, str)


@settings(max_examples=200, deadline=None)
@given(data=st.binary(max_size=400))
@example(data=b"\xff\xfe")
@example(data=DEEP.encode())
@example(data=b'{"id": "a", "text": "' + b"9" * 5000 + b'"}\n{"id": 1' + b"0" * 5000 + b', "text": "x"}')
def test_scenario_files_of_random_bytes(tmp_path_factory, data):
    path = tmp_path_factory.mktemp("scenarios") / "random.jsonl"
    path.write_bytes(data)
    _check_scenarios(path)


@settings(max_examples=200, deadline=None)
@given(rows=st.lists(st.one_of(SCENARIO_FIELDS, VALUES), min_size=1, max_size=6), newline=st.sampled_from(["\n", "\r\n"]),
       data=st.data())
def test_scenario_files_of_records_with_wrong_types_and_cut_lines(tmp_path_factory, rows, newline, data):
    lines = [_cut(_dumps(row), data) for row in rows]
    path = tmp_path_factory.mktemp("scenarios") / "rows.jsonl"
    path.write_text(newline.join(lines), encoding="utf-8")
    _check_scenarios(path)


def test_a_text_with_a_line_separator_inside_is_one_row(tmp_path):
    # U+2028 may stand unescaped inside a JSON string; it does not end a JSON Lines row.
    path = tmp_path / "s.jsonl"
    path.write_text('{"id": "a", "text": "one\u2028two"}\n', encoding="utf-8")
    assert [s.text for s in load_scenarios(path)] == ["one\u2028two"]


@pytest.mark.parametrize(("line", "reason"), [(DEEP, "line 1 is not valid JSON (nested deeper than 64 levels, "
                                                     "limits.json_depth)"),
                                               ('{"id": "a", "text": "x", "n": 1' + "0" * 5000 + "}",
                                                "line 1 is not valid JSON (Exceeds the limit (4300 digits)")])
def test_scenario_lines_python_cannot_read_are_named(tmp_path, line, reason):
    path = tmp_path / "s.jsonl"
    path.write_text(line + "\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"s\.jsonl: " + reason.replace("(", r"\(").replace(")", r"\)")):
        load_scenarios(path)


# ------------------------------------------------------------------------------------------------ wheels
def _check_wheel(path) -> None:
    try:
        wheel = EmotionWheel.load(path)
    except ConfigError as err:
        _one_clear_line(err, path)
        return
    assert wheel.primaries and wheel.words[: len(wheel.primaries)] == wheel.primaries
    assert len({w.lower() for w in wheel.words}) == len(wheel.words)
    assert all(isinstance(w, str) and w and w == w.strip() for w in wheel.words)
    assert all(wheel.primary_of(w) in wheel.primaries for w in wheel.words)


GROUP = st.fixed_dictionaries({"primary": st.one_of(st.text(max_size=8), SCALARS),
                               "color": st.one_of(st.sampled_from(["#a1b2c3", "#FFFFFF"]), SCALARS),
                               "words": st.one_of(st.lists(st.one_of(st.text(max_size=8), SCALARS), max_size=4),
                                                  SCALARS)})
WHEEL = st.one_of(
    st.fixed_dictionaries({"name": st.one_of(st.text(max_size=8), SCALARS), "groups": st.one_of(
        st.lists(GROUP, max_size=3), SCALARS)}, optional={"description": SCALARS, "extra": SCALARS}),
    st.fixed_dictionaries({"primary_emotions": st.lists(st.text(max_size=6), max_size=3),
                           "children": st.dictionaries(st.text(max_size=6), st.lists(st.text(max_size=6), max_size=3),
                                                       max_size=3)}),
    VALUES,
)


@settings(max_examples=200, deadline=None)
@given(text=st.text(max_size=300), suffix=st.sampled_from([".yaml", ".json"]))
@example(text="name: 2001-13-01", suffix=".yaml")  # a date PyYAML reads, and Python cannot build
@example(text="name: !!int abc", suffix=".yaml")
@example(text="&a [*a]", suffix=".yaml")  # a list that holds itself
@example(text=DEEP, suffix=".json")
@example(text="1" * 5000, suffix=".json")
def test_wheel_files_of_random_text(tmp_path_factory, text, suffix):
    path = tmp_path_factory.mktemp("wheels") / f"random{suffix}"
    path.write_text(text, encoding="utf-8")
    _check_wheel(path)


@settings(max_examples=200, deadline=None)
@given(document=WHEEL, suffix=st.sampled_from([".yaml", ".json"]), data=st.data())
def test_wheel_files_of_the_wheel_shape_with_any_values(tmp_path_factory, document, suffix, data):
    import yaml

    text = _dumps(document) if suffix == ".json" else yaml.safe_dump(document, allow_unicode=True)
    path = tmp_path_factory.mktemp("wheels") / f"doc{suffix}"
    path.write_text(_cut(text, data), encoding="utf-8")
    _check_wheel(path)


def test_a_yaml_value_python_cannot_build_is_named(tmp_path):
    path = tmp_path / "w.yaml"
    path.write_text("name: 2001-13-01\ngroups: []\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"w\.yaml is not valid YAML \(a value cannot be read: month must be in 1\.\.12\)"):
        EmotionWheel.load(path)


# ------------------------------------------------------------------------------------------ agent replies
PRIMARIES = tuple(EmotionWheel.load("shaver").primaries)  # the default run's emotions
SalespersonTurn, CustomerTurn = turn_schemas(PRIMARIES)


def _report(values) -> st.SearchStrategy:
    return st.fixed_dictionaries({name: values for name in PRIMARIES})


PERCENT = st.one_of(st.integers(0, 100), NUMBERS, st.sampled_from(["40", "forty", "", None, True, 40.0, 40.5]))
PRICE = st.one_of(NUMBERS, st.sampled_from(["$7", "seven", "nothing", "", None, 7]))
REPLIES = st.one_of(
    st.fixed_dictionaries({"message": st.one_of(st.text(max_size=200), SCALARS),
                           "predicted_customer_emotions": st.one_of(_report(PERCENT), VALUES)}),
    st.fixed_dictionaries({"message": st.one_of(st.text(max_size=200), SCALARS),
                           "my_emotions": st.one_of(_report(PERCENT), VALUES),
                           "decision": st.one_of(st.sampled_from(["continue", "accept", "walk_away", "buy"]), SCALARS),
                           "price": PRICE}),
    st.fixed_dictionaries({"paid": PRICE}),
    VALUES,
)
SCHEMAS = [SalespersonTurn, CustomerTurn, ClosingAnswer]


def _check_report(report) -> None:
    values = [getattr(report, name) for name in PRIMARIES]
    assert all(type(v) is int and 0 <= v <= 100 for v in values) and sum(values) > 0
    assert math.isclose(sum(report.normalized()), 100)


def _finite_price(price) -> bool:
    return price is None or (isinstance(price, float | int) and math.isfinite(price) and 0 <= price <= PRICE_MAX)


def _check_reply(raw: str, schema) -> None:
    try:
        parsed = parse_json_object(raw, schema)
    except ValueError as err:
        assert str(err) and "\n" not in str(err), str(err)
        return
    if schema is ClosingAnswer:
        assert _finite_price(parsed.paid)
        return
    assert isinstance(parsed.message, str) and 1 <= len(parsed.message) <= 160
    if schema is SalespersonTurn:
        _check_report(parsed.predicted_customer_emotions)
    else:
        _check_report(parsed.my_emotions)
        assert parsed.decision in ("continue", "accept", "walk_away") and _finite_price(parsed.price)
        assert parsed.decision != "accept" or parsed.price is not None


@settings(max_examples=300, deadline=None)
@given(reply=REPLIES, schema=st.sampled_from(SCHEMAS), before=st.text(max_size=10), after=st.text(max_size=10))
def test_agent_replies_of_any_shape(reply, schema, before, after):
    _check_reply(before + _dumps(reply) + after, schema)


@settings(max_examples=200, deadline=None)
@given(reply=REPLIES, schema=st.sampled_from(SCHEMAS), data=st.data())
def test_agent_replies_cut_short(reply, schema, data):
    _check_reply(_cut(_dumps(reply), data), schema)


NAN, INF = float("nan"), float("inf")


@pytest.mark.parametrize(("reply", "schema"), [
    ({"paid": NAN}, ClosingAnswer), ({"paid": INF}, ClosingAnswer), ({"paid": -1}, ClosingAnswer),
    ({"paid": 10**30}, ClosingAnswer),
    ({"message": "Deal.", "my_emotions": dict.fromkeys(PRIMARIES, 10), "decision": "accept", "price": NAN},
     CustomerTurn),
    ({"message": "Hi.", "predicted_customer_emotions": dict.fromkeys(PRIMARIES, INF)}, SalespersonTurn),
    ({"message": "Hi.", "predicted_customer_emotions": dict.fromkeys(PRIMARIES, NAN)}, SalespersonTurn),
    ({"message": "Hi.", "predicted_customer_emotions": dict.fromkeys(PRIMARIES, -10)}, SalespersonTurn),
])
def test_non_finite_and_out_of_range_numbers_are_refused(reply, schema):
    with pytest.raises(ValueError):
        parse_json_object(_dumps(reply), schema)


@settings(max_examples=200, deadline=None)
@given(raw=st.text(max_size=200), schema=st.sampled_from(SCHEMAS))
@example(raw=DEEP_REPLY, schema=CustomerTurn)
@example(raw='{"paid": 1' + "0" * 5000 + "}", schema=ClosingAnswer)
def test_agent_replies_of_random_text(raw, schema):
    _check_reply(raw, schema)


@pytest.mark.parametrize(("raw", "reason"), [
    (DEEP_REPLY, "the JSON is malformed (nested too deeply)"),
    ('{"paid": 1' + "0" * 5000 + "}", "the JSON is malformed (a number has too many digits)"),
])
def test_replies_python_cannot_read_get_a_reason_the_model_can_act_on(raw, reason):
    with pytest.raises(ValueError, match=r"^" + reason.replace("(", r"\(").replace(")", r"\)") + "$"):
        parse_json_object(raw, ClosingAnswer)
