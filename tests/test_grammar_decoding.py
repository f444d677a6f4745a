"""Grammar-constrained decoding on the embedded model: every schema, many seeds, batched and alone."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import pytest
import yaml

from agents.negotiation import (
    ClosingAnswer,
    NegotiationScenario,
    closing_messages,
    customer_messages,
    salesperson_messages,
    turn_schemas,
)
from agents.persona import PersonaAgent, PersonaSpec
from agents.records import CustomerTurnRecord, SalespersonTurnRecord
from agents.scenario_writer import batch_schema, writer_messages
from emotion_probe.models.base import GenerateConfig
from emotion_probe.models.wrappers.batching import BatchingBackend
from emotion_probe.wheel import EmotionWheel

pytestmark = pytest.mark.embedded

ACORN = NegotiationScenario.model_validate(
    yaml.safe_load((Path(__file__).resolve().parents[1] / "conf" / "scenario" / "acorn.yaml").read_text()))
# Only a record's speaker and text reach a prompt: built without the rest.
TALK = [SalespersonTurnRecord.model_construct(text="Good day! This acorn is a rare find, yours for fifteen dollars."),
        CustomerTurnRecord.model_construct(text="Fifteen? That is a lot for an acorn.")]
PERSONA = PersonaAgent(PersonaSpec(name="female", phrase="a woman"), EmotionWheel.load("shaver"))
SHAVER = tuple(EmotionWheel.load("shaver").primaries)  # the default wheel's primaries: the default run's emotions
SalespersonTurn, CustomerTurn = turn_schemas(SHAVER)
# Every schema an agent answers with, as a JSON schema, with a request that asks for it.
SCHEMAS = {
    "salesperson": (SalespersonTurn.model_json_schema(), salesperson_messages(ACORN, TALK, SHAVER)),
    "customer": (CustomerTurn.model_json_schema(), customer_messages(ACORN, TALK[:1], SHAVER)),
    "closing": (ClosingAnswer.model_json_schema(), closing_messages(ACORN, TALK, SHAVER)),
    "scenario_writer": (batch_schema(2), writer_messages("joy", 2, [])),
    "persona": (PERSONA.answer_schema(), PERSONA.chat_messages("My sister surprised me with tickets to my favourite band.")),
}
SEEDS = range(6)


@pytest.mark.parametrize("name", list(SCHEMAS))
def test_grammar_decoding_gives_schema_valid_json_for_every_seed(smollm2, name):
    schema, messages = SCHEMAS[name]
    # A budget that covers the longest reply the schema allows, one token per character at worst
    # (the writer's two scenarios of up to 300 characters; a negotiation turn's 200-character message).
    budget = 700 if name == "scenario_writer" else 256
    configs = [GenerateConfig(max_tokens=budget, temperature=0.8, seed=seed, response_schema=schema) for seed in SEEDS]
    replies = smollm2.generate_batch([messages] * len(configs), configs)
    for seed, reply in zip(SEEDS, replies):
        assert reply.finish_reason == "stop", f"seed {seed} ran out of tokens: {reply.text!r}"
        # The whole reply is one JSON document of the schema's shape, nothing around it.
        jsonschema.validate(json.loads(reply.text), schema)
    # Seeds really are independent draws, not one reply repeated.
    assert len({reply.text for reply in replies}) > 1


def test_without_the_grammar_the_same_requests_fail_the_schema(smollm2):
    """The check above can fail: with structured_output=prompt, the embedded model's replies often do not parse."""
    schema, messages = SCHEMAS["customer"]
    smollm2.structured_output = "prompt"
    try:
        configs = [GenerateConfig(max_tokens=160, temperature=0.8, seed=seed, response_schema=schema) for seed in SEEDS]
        replies = smollm2.generate_batch([messages] * len(configs), configs)
    finally:
        smollm2.structured_output = "grammar"
    failures = 0
    for reply in replies:
        try:
            jsonschema.validate(json.loads(reply.text), schema)
        except (ValueError, jsonschema.ValidationError):
            failures += 1
    assert failures > 0


def test_a_seeded_greedy_prompt_gives_the_same_text_alone_and_batched(smollm2):
    schema, messages = SCHEMAS["salesperson"]
    others = [SCHEMAS["customer"][1], SCHEMAS["closing"][1], [{"role": "user", "content": "Say hello."}]]
    config = GenerateConfig(max_tokens=120, temperature=0.0, seed=7, response_schema=schema)
    alone = smollm2.generate_batch([messages], [config])[0]
    # Rows of other lengths (other padding) and other settings in the same batch.
    batched = smollm2.generate_batch([*others, messages], [GenerateConfig(max_tokens=40, seed=1)] * 3 + [config])
    assert batched[-1].text == alone.text
    json.loads(alone.text)


def test_each_row_draws_from_its_own_generator_whatever_the_batch(smollm2):
    """Seeded sampling is per row: the same seed gives the same draws for the same logits, whatever rows sample beside it.

    Texts sampled at temperature > 0 alone and in a batch are not compared: the batch shape changes the
    floating-point sums of the logits, and at temperature 1.0 that can flip a token on one CPU and not on
    another (`make bench` measures how often). What must hold everywhere is tested here: each row's
    generator starts from its own seed, and a row's draw depends on its logits and generator alone.
    """
    import torch

    messages = [{"role": "user", "content": "Write one sentence about an acorn."}]
    configs = [GenerateConfig(max_tokens=24, temperature=1.0, seed=seed) for seed in (11, 12, 13)]
    alone = [smollm2._rows([messages], [config], [None], first_index=0)[0] for config in configs]
    batched = smollm2._rows([messages] * 3, configs, [None] * 3, first_index=0)
    for one, row, seed in zip(alone, batched, (11, 12, 13)):
        assert torch.equal(one.generator.get_state(), row.generator.get_state())
        assert torch.equal(row.generator.get_state(), torch.Generator().manual_seed(seed).get_state())

    logits = torch.randn(smollm2.model.config.vocab_size, generator=torch.Generator().manual_seed(0)) * 3
    sampling = GenerateConfig(temperature=1.0, top_p=0.95)

    def draws(seed: int, neighbours: list[int], steps: int = 40) -> list[int]:
        own = torch.Generator().manual_seed(seed)
        others = [torch.Generator().manual_seed(s) for s in neighbours]
        tokens = []
        for _ in range(steps):  # one decoding step: every row of the batch samples once, in order
            for other in others[: len(others) // 2]:
                smollm2._sample(logits, sampling, other)
            tokens.append(smollm2._sample(logits, sampling, own))
            for other in others[len(others) // 2:]:
                smollm2._sample(logits, sampling, other)
        return tokens

    for seed in (11, 12, 13):
        assert draws(seed, []) == draws(seed, [12, 13]) == draws(seed, [1, 2, 3, 4, 5, seed])
    assert len({tuple(draws(seed, [])) for seed in (11, 12, 13)}) == 3  # seeds are independent draws

    # End to end: three seeds in one batch give three replies (rows do not share one stream of draws).
    assert len({reply.text for reply in smollm2.generate_batch([messages] * 3, configs)}) == 3


def test_a_request_that_joins_a_running_batch_gets_the_text_it_gets_alone(smollm2):
    """Continuous batching: a late request is prefilled and joins mid-decode, with its cache left-padded."""
    import threading

    schema, messages = SCHEMAS["salesperson"]
    late_messages = SCHEMAS["customer"][1]
    long = GenerateConfig(max_tokens=60, temperature=0.0, seed=1)
    # Greedy: at temperature > 0 the joined batch's other floating-point sums may flip a sampled token.
    late = GenerateConfig(max_tokens=60, temperature=0.0, seed=5, response_schema=SCHEMAS["customer"][0])
    alone = smollm2.generate_batch([late_messages], [late])[0].text
    batched = BatchingBackend(smollm2, max_batch=4, wait_s=0.0)
    started = threading.Event()
    first = threading.Thread(target=lambda: batched.generate(messages, long, lambda _: started.set()))
    first.start()
    started.wait(timeout=120)  # the first request is decoding: the next one must join it
    joined = batched.generate(late_messages, late).text
    first.join()
    assert joined == alone
    assert max(int(size) for size in batched.usage()["generation_batch_sizes"]) == 2


def test_concurrent_seeded_requests_share_one_batch(smollm2):
    """Under default settings every trial and turn has its own seed; they must still batch together."""
    from concurrent.futures import ThreadPoolExecutor

    batched = BatchingBackend(smollm2, max_batch=4, wait_s=0.5)
    schema, messages = SCHEMAS["customer"]
    base = GenerateConfig(max_tokens=8, temperature=0.5, seed=0, response_schema=schema)
    with ThreadPoolExecutor(4) as pool:
        list(pool.map(lambda trial: batched.generate(messages, base.reseeded(trial, 1)), range(4)))
    # Every decoding step ran all four rows (none finishes before its 8-token budget).
    assert batched.usage() == {"generation_batch_sizes": {"4": 8}}
