"""Structured output from any chat backend: parse, validate, and retry with the error shown."""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Generic, Literal, TypeVar

from pydantic import BaseModel, ValidationError

from emotion_probe.backends.base import ChatMessage, GenerateConfig, ModelBackend, TokenCallback
from emotion_probe.errors import first_validation_problem

Schema = TypeVar("Schema", bound=BaseModel)


def parse_json_object(raw: str, schema: type[Schema]) -> Schema:
    """The first {...} block of `raw`, validated against `schema`; ValueError names the problem."""
    start = raw.find("{")
    end = raw.rfind("}")
    if start < 0 or end <= start:
        raise ValueError("the reply contains no JSON object")
    try:
        data = json.loads(raw[start : end + 1])
    except json.JSONDecodeError as err:
        raise ValueError(f"the JSON is malformed ({err.msg})") from None
    try:
        return schema.model_validate(data)
    except ValidationError as err:
        raise ValueError(first_validation_problem(err)) from None


@dataclass
class StructuredReply(Generic[Schema]):
    """One agent turn: the parsed output (or None), the raw text, and the accounting."""

    parsed: Schema | None
    raw: str
    parse_status: Literal["ok", "failed"]
    attempts: int
    errors: list[str] = field(default_factory=list)
    latency_s: float = 0.0
    completion_tokens: int = 0


def call_structured(
    model: ModelBackend,
    messages: Sequence[ChatMessage],
    schema: type[Schema],
    *,
    max_retries: int,
    config: GenerateConfig | None = None,
    on_token: TokenCallback | None = None,
) -> StructuredReply[Schema]:
    """Ask, validate, and on failure show the model its validation error, up to `max_retries` times.

    Never raises on bad model output: after the last retry the reply is returned with
    parse_status="failed" and the raw text, and the caller carries on.
    """
    # Servers that can constrain decoding to the schema get it (see GenerateConfig.response_schema);
    # the reply is validated below all the same, since not every backend enforces it.
    config = (config or GenerateConfig()).model_copy(update={"response_schema": schema.model_json_schema()})
    history = list(messages)
    errors: list[str] = []
    started = time.perf_counter()
    tokens = 0
    raw = ""
    for attempt in range(1, max_retries + 2):
        reply = model.generate(history, config, on_token)
        raw = reply.text
        tokens += reply.completion_tokens or 0
        try:
            parsed = parse_json_object(raw, schema)
            return StructuredReply(parsed, raw, "ok", attempt, errors, time.perf_counter() - started, tokens)
        except ValueError as err:
            errors.append(str(err))
            history += [
                ChatMessage(role="assistant", content=raw),
                ChatMessage(role="user", content=f"Your reply was invalid: {err}. Reply again with only the JSON object."),
            ]
    return StructuredReply(None, raw, "failed", max_retries + 1, errors, time.perf_counter() - started, tokens)


