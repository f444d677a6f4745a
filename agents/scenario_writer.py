"""The scenario-writer agent: asks a model for emotional scenarios as structured output."""

from __future__ import annotations

import json
import re

from pydantic import BaseModel, Field, ValidationError

from emotion_probe.models.base import ChatMessage, GenerateConfig, ModelBackend
from emotion_probe.errors import first_validation_problem

SYSTEM_PROMPT = (
    "You write short, concrete scenarios for psychology research on emotion recognition. "
    "Each scenario is one to three sentences describing a situation that would make a person feel a given "
    "emotion. Never name the emotion or any form of its word; show it through what happens."
)


def prompt_id() -> str:
    """A short fingerprint of the writer's instructions, recorded with each row it writes (provenance)."""
    import hashlib

    return "scenario_writer/" + hashlib.sha256(SYSTEM_PROMPT.encode()).hexdigest()[:12]


_LIST_ITEM = re.compile(r"^\s*(?:\d+[.)]|[-*\u2022])\s+(.+?)\s*$", re.MULTILINE)


#: The longest scenario a grammar-constrained writer may produce: one to three sentences.
SCENARIO_MAX_CHARS = 300


class ScenarioBatch(BaseModel):
    """The schema the model must answer with."""

    scenarios: list[str] = Field(min_length=1, description="one to three sentences each")


def batch_schema(count: int) -> dict:
    """ScenarioBatch's JSON schema for a request of `count` scenarios, bounded so that a
    grammar-constrained reply has at most `count` items of at most SCENARIO_MAX_CHARS each
    and so always closes its JSON (an unbounded list ran on until the token budget cut it)."""
    schema = ScenarioBatch.model_json_schema()
    scenarios = schema["properties"]["scenarios"]
    scenarios["maxItems"] = count
    scenarios["items"] = {"type": "string", "minLength": 1, "maxLength": SCENARIO_MAX_CHARS}
    return schema


def writer_messages(emotion: str, count: int, examples_to_avoid: list[str]) -> list[ChatMessage]:
    avoid = "".join(f"\n- {text}" for text in examples_to_avoid[-5:])
    request = (
        f"Write {count} different scenarios that evoke {emotion}. Vary the setting, the person and the intensity. "
        f"Do not use the word '{emotion}' or any form of it."
        + (f"\nDo not repeat these:{avoid}" if avoid else "")
        + '\nAnswer with one JSON object whose field "scenarios" is the list of your scenarios, each a string.'
    )
    return [ChatMessage(role="system", content=SYSTEM_PROMPT), ChatMessage(role="user", content=request)]


def parse_batch(raw: str) -> ScenarioBatch:
    """Read the model's JSON, tolerating prose or code fences around it; raise ValueError with the reason."""
    match = re.search(r"\{.*\}|\[.*\]", raw, re.DOTALL)
    if match is not None:
        try:
            data = json.loads(match.group(0))
        except json.JSONDecodeError as err:
            raise ValueError(f"the JSON is malformed ({err.msg} at character {err.pos})") from None
    else:
        # Small models often answer with a numbered list despite the instruction; its items
        # are just as structured, so take them (they are validated like any other reply).
        items = [m.group(1).strip().strip('"').strip() for m in _LIST_ITEM.finditer(raw)]
        if not items:
            raise ValueError("the reply contains neither a JSON object nor a numbered list")
        data = {"scenarios": items}
    if isinstance(data, list):
        data = {"scenarios": data}
    try:
        return ScenarioBatch.model_validate(data)
    except ValidationError as err:
        raise ValueError(first_validation_problem(err)) from None


def request_scenarios(
    model: ModelBackend,
    emotion: str,
    count: int,
    examples_to_avoid: list[str],
    config: GenerateConfig,
    max_parse_retries: int,
) -> tuple[list[str], list[str]]:
    """Ask for `count` scenarios; on a malformed reply, show the model its error and ask again.

    Returns (scenarios, parse errors). Never raises on bad model output.
    """
    messages = writer_messages(emotion, count, examples_to_avoid)
    # Models that decode under a grammar (model.structured_output=grammar) can then only write this shape.
    config = config.model_copy(update={"response_schema": batch_schema(count)})
    errors: list[str] = []
    for _ in range(max_parse_retries + 1):
        raw = model.generate(messages, config).text
        try:
            return [s.strip() for s in parse_batch(raw).scenarios if isinstance(s, str)], errors
        except ValueError as err:
            errors.append(str(err))
            messages = [
                *messages,
                ChatMessage(role="assistant", content=raw),
                ChatMessage(role="user", content=f"That was not valid: {err}. Answer with the JSON object only."),
            ]
    return [], errors
