"""Scenario files (JSONL): validated on the way in, with errors that name the line."""

from __future__ import annotations

import json
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from emotion_probe.data import resolve_data_file
from emotion_probe.errors import ConfigError, first_validation_problem


class Scenario(BaseModel):
    """One emotional text; `emotion`/`primary` are present in labelled sets only."""

    model_config = ConfigDict(extra="allow")

    id: str = Field(min_length=1)
    text: str
    emotion: str | None = None
    primary: str | None = None

    @field_validator("text")
    @classmethod
    def _not_blank(cls, text: str) -> str:
        if not text.strip():
            raise ValueError("text is empty")
        return text


def load_scenarios(name_or_path: str | Path, limit: int | None = None) -> list[Scenario]:
    """Read a bundled scenario set by name ("shaver_labelled") or a JSONL path."""
    path = resolve_data_file("scenarios", name_or_path)
    try:
        lines = path.read_bytes().decode("utf-8").splitlines()
    except UnicodeDecodeError as err:
        line = path.read_bytes()[: err.start].count(b"\n") + 1
        raise ConfigError(f"{path}: line {line} is not valid UTF-8 ({err.reason})") from None
    scenarios: list[Scenario] = []
    seen: set[str] = set()
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            scenario = Scenario.model_validate(json.loads(line))
        except json.JSONDecodeError as err:
            raise ConfigError(f"{path}: line {number} is not valid JSON ({err.msg})") from None
        except ValidationError as err:
            raise ConfigError(f"{path}: line {number}: field {first_validation_problem(err)}") from None
        if scenario.id in seen:
            raise ConfigError(f"{path}: line {number}: duplicate scenario id {scenario.id!r}")
        seen.add(scenario.id)
        scenarios.append(scenario)
        if limit is not None and len(scenarios) >= limit:
            break
    if not scenarios:
        raise ConfigError(f"{path}: holds no scenarios")
    return scenarios
