"""Structured output from any chat backend: parse, validate, and retry with the error shown."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, Literal, TypeVar

from pydantic import BaseModel, ValidationError

from emotion_probe.models.base import ChatMessage, GenerateConfig, ModelBackend, TokenCallback
from emotion_probe.errors import first_validation_problem

Schema = TypeVar("Schema", bound=BaseModel)


def parse_json_object(raw: str, schema: type[Schema], context: dict[str, Any] | None = None) -> Schema:
    """The first {...} block of `raw`, validated against `schema` (with a pydantic validation
    `context`, e.g. {"sum_tolerance": 5}); ValueError names the problem."""
    start = raw.find("{")
    end = raw.rfind("}")
    if start < 0 or end <= start:
        raise ValueError("the reply contains no JSON object")
    try:
        data = json.loads(raw[start : end + 1])
    except json.JSONDecodeError as err:
        raise ValueError(f"the JSON is malformed ({err.msg})") from None
    except ValueError:  # a number of more digits than Python reads (4300)
        raise ValueError("the JSON is malformed (a number has too many digits)") from None
    except RecursionError:  # a model that opens brackets until its budget ends
        raise ValueError("the JSON is malformed (nested too deeply)") from None
    try:
        return schema.model_validate(data, context=context)
    except ValidationError as err:
        raise ValueError(first_validation_problem(err)) from None


_MESSAGE_START = re.compile(r'"message"\s*:\s*"')


def recover_message(raw: str) -> str | None:
    """The `message` string of a reply that failed validation, read from its possibly partial JSON.

    Only that one value is taken, never any other field, so a failed turn cannot pass its
    emotion report on to the other side. A message cut off mid-string is kept up to the cut;
    None when the reply has no readable, non-empty message.
    """
    match = _MESSAGE_START.search(raw)
    if match is None:
        return None
    body = raw[match.end():]
    try:
        text, _ = json.decoder.scanstring(body, 0)
    except json.JSONDecodeError:
        # Cut off inside the string: decode what arrived, dropping a half-written escape.
        for end in range(len(body), max(len(body) - 6, -1), -1):
            try:
                text = json.loads('"' + body[:end] + '"')
                break
            except json.JSONDecodeError:
                continue
        else:
            return None
    text = text.strip()
    return text or None


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
    #: Generations that ran out of tokens before they finished (finish_reason "length").
    truncated: int = 0


def call_structured(
    model: ModelBackend,
    messages: Sequence[ChatMessage],
    schema: type[Schema],
    *,
    max_retries: int,
    config: GenerateConfig | None = None,
    on_token: TokenCallback | None = None,
    on_retry: Callable[[int, int, str], None] | None = None,
    context: dict[str, Any] | None = None,
) -> StructuredReply[Schema]:
    """Ask, validate, and on failure show the model its validation error, up to `max_retries` times.

    Never raises on bad model output: after the last retry the reply is returned with
    parse_status="failed" and the raw text, and the caller carries on. `on_retry(attempt, of,
    reason)` is called before each new attempt (a live console shows it); `context` goes to
    pydantic's validation.
    """
    # Servers that can constrain decoding to the schema get it (see GenerateConfig.response_schema);
    # the reply is validated below all the same, since not every backend enforces it.
    config = (config or GenerateConfig()).model_copy(update={"response_schema": schema.model_json_schema()})
    history = list(messages)
    errors: list[str] = []
    started = time.perf_counter()
    tokens = 0
    raw = ""
    truncated = 0
    attempts = max_retries + 1
    for attempt in range(1, attempts + 1):
        if attempt > 1 and on_retry is not None:
            on_retry(attempt, attempts, errors[-1])
        reply = model.generate(history, config, on_token)
        raw = reply.text
        tokens += reply.completion_tokens or 0
        truncated += reply.finish_reason == "length"
        try:
            parsed = parse_json_object(raw, schema, context)
            return StructuredReply(parsed, raw, "ok", attempt, errors, time.perf_counter() - started, tokens, truncated)
        except ValueError as err:
            errors.append(str(err))
            history += [
                ChatMessage(role="assistant", content=raw),
                ChatMessage(role="user", content=f"Your reply was invalid: {err}. Reply again with only the JSON object."),
            ]
    return StructuredReply(None, raw, "failed", attempts, errors, time.perf_counter() - started, tokens, truncated)


