"""Grammar-constrained decoding on the embedded model: every schema, many seeds, batched and alone."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from agents.negotiation import (
    ClosingAnswer,
    CustomerTurn,
    NegotiationScenario,
    SalespersonTurn,
    closing_messages,
    customer_messages,
    salesperson_messages,
)
from agents.scenario_writer import ScenarioBatch, writer_messages
from agents.structured import parse_json_object
from emotion_probe.backends.base import GenerateConfig
from emotion_probe.backends.batching import BatchingBackend

pytestmark = pytest.mark.embedded

ACORN = NegotiationScenario.model_validate(
    yaml.safe_load((Path(__file__).resolve().parents[1] / "conf" / "scenario" / "acorn.yaml").read_text()))
TALK = [{"speaker": "salesperson", "text": "Good day! This acorn is a rare find, yours for fifteen dollars."},
        {"speaker": "customer", "text": "Fifteen? That is a lot for an acorn."}]
SCHEMAS = {
    "salesperson": (SalespersonTurn, salesperson_messages(ACORN, TALK)),
    "customer": (CustomerTurn, customer_messages(ACORN, TALK[:1])),
    "closing": (ClosingAnswer, closing_messages(ACORN, TALK)),
    "scenario_writer": (ScenarioBatch, writer_messages("joy", 2, [])),
}
SEEDS = range(6)


@pytest.mark.parametrize("name", list(SCHEMAS))
def test_grammar_decoding_gives_schema_valid_json_for_every_seed(smollm2, name):
    schema, messages = SCHEMAS[name]
    configs = [GenerateConfig(max_tokens=220, temperature=0.8, seed=seed, response_schema=schema.model_json_schema())
               for seed in SEEDS]
    replies = smollm2.generate_batch([messages] * len(configs), configs)
    for seed, reply in zip(SEEDS, replies):
        assert reply.finish_reason == "stop", f"seed {seed} ran out of tokens: {reply.text!r}"
        parse_json_object(reply.text, schema)  # raises on anything the schema does not allow
        assert reply.text.lstrip().startswith("{")
    # Seeds really are independent draws, not one reply repeated.
    assert len({reply.text for reply in replies}) > 1


def test_without_the_grammar_the_same_requests_fail_the_schema(smollm2):
    """The check above can fail: with structured_output=prompt, the embedded model's replies often do not parse."""
    schema, messages = SCHEMAS["customer"]
    smollm2.structured_output = "prompt"
    try:
        configs = [GenerateConfig(max_tokens=160, temperature=0.8, seed=seed,
                                  response_schema=schema.model_json_schema()) for seed in SEEDS]
        replies = smollm2.generate_batch([messages] * len(configs), configs)
    finally:
        smollm2.structured_output = "grammar"
    failures = 0
    for reply in replies:
        try:
            parse_json_object(reply.text, schema)
        except ValueError:
            failures += 1
    assert failures > 0


def test_a_seeded_greedy_prompt_gives_the_same_text_alone_and_batched(smollm2):
    schema, messages = SCHEMAS["salesperson"]
    others = [SCHEMAS["customer"][1], SCHEMAS["closing"][1], [{"role": "user", "content": "Say hello."}]]
    config = GenerateConfig(max_tokens=120, temperature=0.0, seed=7, response_schema=schema.model_json_schema())
    alone = smollm2.generate_batch([messages], [config])[0]
    # Rows of other lengths (other padding) and other settings in the same batch.
    batched = smollm2.generate_batch([*others, messages], [GenerateConfig(max_tokens=40, seed=1)] * 3 + [config])
    assert batched[-1].text == alone.text
    json.loads(alone.text)


def test_each_row_samples_with_its_own_seed_alone_or_batched(smollm2):
    messages = [{"role": "user", "content": "Write one sentence about an acorn."}]
    configs = [GenerateConfig(max_tokens=24, temperature=1.0, seed=seed) for seed in (11, 12, 13)]
    alone = [smollm2.generate_batch([messages], [config])[0].text for config in configs]
    together = [reply.text for reply in smollm2.generate_batch([messages] * 3, configs)]
    assert together == alone
    assert len(set(alone)) == 3


def test_concurrent_seeded_requests_share_one_batch(smollm2):
    """Under default settings every trial and turn has its own seed; they must still batch together."""
    from concurrent.futures import ThreadPoolExecutor

    batched = BatchingBackend(smollm2, max_batch=4, wait_s=0.5)
    schema, messages = SCHEMAS["customer"]
    base = GenerateConfig(max_tokens=8, temperature=0.5, seed=0, response_schema=schema.model_json_schema())
    with ThreadPoolExecutor(4) as pool:
        list(pool.map(lambda trial: batched.generate(messages, base.reseeded(trial, 1)), range(4)))
    assert max(batched.batch_sizes) == 4
    assert batched.usage() == {"generation_batch_sizes": {"4": 1}}
