"""Scenario files (JSONL): validated on the way in, with errors that name the line."""

from __future__ import annotations

import io
import json
from pathlib import Path

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
)

from emotion_probe.data import resolve_data_file
from emotion_probe.errors import ConfigError, first_validation_problem


class Scenario(BaseModel):
    """One emotional text; `emotion`/`primary` are present in labelled sets only."""

    model_config = ConfigDict(extra="allow")

    id: str = Field(min_length=1)
    text: str
    emotion: str | None = None
    primary: str | None = None
    #: Provenance: "hand-written" (possibly "hand-written (rewritten: why)"), or the model and the
    #: writer prompt's fingerprint for rows from experiment=generate_scenarios.
    source: str | None = None

    @field_validator("text")
    @classmethod
    def _not_blank(cls, text: str, info: ValidationInfo) -> str:
        if not text.strip() and not (info.context or {}).get("allow_empty"):
            raise ValueError("text is empty (keep_empty=true keeps empty rows)")
        return text


def load_scenarios(name_or_path: str | Path, limit: int | None = None, keep_empty: bool = False) -> list[Scenario]:
    """Read a bundled scenario set by name ("shaver_labelled"), a JSONL path or a plain-text path.

    JSONL rows need `text`; `id` defaults to "line-<n>" and the authors' `label` is read as `emotion`
    (their recognition_scenarios.jsonl). A `.txt` file holds one sentence per line (their
    hierarchy_prompts.txt), id "line-<n>". Empty rows and repeated sentences are dropped unless
    `keep_empty`: the authors scored every physical row, so reproducing their numbers needs them.
    """
    path = resolve_data_file("scenarios", name_or_path)
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as err:
        line = path.read_bytes()[: err.start].count(b"\n") + 1
        raise ConfigError(f"{path}: line {line} is not valid UTF-8 ({err.reason})") from None
    if path.suffix == ".txt":
        scenarios = _sentences(text, keep_empty, limit)
    else:
        scenarios = _jsonl(path, text, keep_empty, limit)
    if not scenarios:
        raise ConfigError(f"{path}: holds no scenarios")
    return scenarios


def _sentences(text: str, keep_empty: bool, limit: int | None) -> list[Scenario]:
    # Physical lines as Python's text mode reads them (\n, \r\n or \r), not str.splitlines(), which
    # would also split inside a sentence at characters such as U+2028.
    lines = io.StringIO(text, newline=None).read().split("\n")
    if lines and lines[-1] == "":
        lines.pop()  # the newline that ends the last line starts no new row
    scenarios, seen = [], set()
    for number, line in enumerate(lines, start=1):
        sentence = line.strip()
        if not keep_empty and (not sentence or sentence in seen):
            continue
        seen.add(sentence)
        scenarios.append(Scenario.model_validate({"id": f"line-{number}", "text": line},
                                                 context={"allow_empty": keep_empty}))
        if limit is not None and len(scenarios) >= limit:
            break
    return scenarios


def _jsonl(path: Path, text: str, keep_empty: bool, limit: int | None) -> list[Scenario]:
    scenarios: list[Scenario] = []
    seen: set[str] = set()
    # Lines end at \n only, as JSON Lines says (a \r before it is JSON whitespace): str.splitlines() would
    # also split at characters a JSON string may hold as they are, such as U+2028, and misread the row.
    for number, line in enumerate(text.split("\n"), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
            if isinstance(record, dict):
                record.setdefault("id", f"line-{number}")
                if "label" in record and "emotion" not in record:
                    record["emotion"] = record.pop("label")
            scenario = Scenario.model_validate(record, context={"allow_empty": keep_empty})
        except json.JSONDecodeError as err:
            raise ConfigError(f"{path}: line {number} is not valid JSON ({err.msg})") from None
        except ValidationError as err:  # before ValueError, which it is a kind of
            raise ConfigError(f"{path}: line {number}: field {first_validation_problem(err)}") from None
        except (ValueError, RecursionError) as err:  # a number of more digits than Python reads, or deep nesting
            reason = "nested too deeply" if isinstance(err, RecursionError) else str(err).split(";")[0]
            raise ConfigError(f"{path}: line {number} is not valid JSON ({reason})") from None
        if scenario.id in seen:
            raise ConfigError(f"{path}: line {number}: duplicate scenario id {scenario.id!r}")
        seen.add(scenario.id)
        scenarios.append(scenario)
        if limit is not None and len(scenarios) >= limit:
            break
    return scenarios
