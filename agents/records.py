"""What a negotiation leaves behind, one typed record per transcript line.

The graph appends these records to its state, the run writes them to transcript.jsonl, and `watch`, the
resume, the console and the analysis read them back: each reader gets the same types, never a dict whose
keys it has to guess. A line carries `schema_version`; a line written by an older emolab goes through
`upgrade` (one function per version) before it is validated, so no reader carries branches for old files.

    TranscriptHeader   the first line: the scenario as the run played it (persona merged), and the emotions
    SalespersonTurn-   a salesperson's message and its prediction of the customer's emotions
    CustomerTurn-      a customer's message, its self-report, its decision and the price it accepted
    ProbeRecord        the shared emotion probe on a customer message
    ClosingRecord      the customer's answer to "what did you pay?"
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from typing import Annotated, Any, Literal, Union

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError, model_validator

from emotion_probe.errors import ConfigError, first_validation_problem
from emotion_probe.versions import Upgrade, upgraded

#: The version every record this emolab writes carries.
SCHEMA_VERSION = 2
#: The most values a record's emotion list may hold: far more primaries than any wheel has, and few enough
#: that the matching matrix a console draws from them (values squared) stays small.
MAX_EMOTIONS = 1000
#: What a version-1 record without its own `emotions` labels reported over: transcripts written before
#: records carried labels all reported over the Shaver wheel's primaries, whatever probe.wheel said.
UNLABELLED_EMOTIONS = ("love", "joy", "surprise", "anger", "sadness", "fear")

Percent = Annotated[float, Field(ge=0, le=100, allow_inf_nan=False)]
Values = Annotated[list[Percent], Field(max_length=MAX_EMOTIONS)]
Emotions = Annotated[list[str], Field(max_length=MAX_EMOTIONS)]
Role = Literal["salesperson", "customer"]
Decision = Literal["continue", "accept", "walk_away"]
ParseStatus = Literal["ok", "failed", "human"]


class _Record(BaseModel):
    # Frozen: a record is what happened; the graph, the transcript and every reader share it unchanged.
    model_config = ConfigDict(extra="forbid", frozen=True)

    schema_version: Literal[2] = SCHEMA_VERSION
    trial: int | None = Field(description="the trial the record belongs to")
    turn: int = Field(ge=0, description="the dialogue turn (messages before it)")

    def line(self) -> dict[str, Any]:
        """The record as one transcript line (and as the graph state keeps it: plain data a checkpoint can hold)."""
        return self.model_dump(mode="json")


class CallRecord(BaseModel):
    """How one agent turn was obtained: the model's raw reply and what it took, or a person's answer."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    raw: str | None = Field(description="the model's raw reply (None for a person)")
    parse_status: ParseStatus = Field(description="ok | failed | human")
    attempts: int = Field(ge=1, description="replies the turn took")
    errors: list[str] = Field(description="why each attempt before the last was refused")
    latency_s: float = Field(ge=0, description="wall time of the turn's model calls")
    tokens: int = Field(ge=0, description="completion tokens of the turn")
    truncated: int = Field(ge=0, description="replies cut at max_tokens")

    @model_validator(mode="after")
    def _attempts_have_errors(self) -> "CallRecord":
        # Every refused attempt leaves its error (agents.structured.call_structured), so the retries a
        # console replays are bounded by the line itself.
        if self.attempts > len(self.errors) + 1:
            raise ValueError(f"{self.attempts} attempts but {len(self.errors)} errors")
        return self

    @classmethod
    def human(cls) -> "CallRecord":
        return cls(raw=None, parse_status="human", attempts=1, errors=[], latency_s=0.0, tokens=0, truncated=0)


class TurnRecord(_Record):
    """A dialogue turn: what was said, how it was obtained, and the labels of the values it reports."""

    speaker: Role
    # The call's fields, flat on the line (CallRecord), in the order transcripts have always had them.
    raw: str | None
    parse_status: ParseStatus
    attempts: int = Field(ge=1)
    errors: list[str]
    latency_s: float = Field(ge=0)
    tokens: int = Field(ge=0)
    truncated: int = Field(ge=0)
    text: str = Field(description="the message the other side read")
    emotions: Emotions = Field(description="the labels of the values, in order")

    @model_validator(mode="after")
    def _call_is_whole(self) -> "TurnRecord":
        CallRecord(**self.model_dump(include=set(CallRecord.model_fields)))  # the same checks as the call's
        return self


class SalespersonTurnRecord(TurnRecord):
    speaker: Literal["salesperson"] = "salesperson"
    prediction: Values | None = Field(description="the predicted customer emotions in percent (None: unparsed)")
    prediction_sum: int | None = Field(description="the prediction's raw sum before renormalization")


class CustomerTurnRecord(TurnRecord):
    speaker: Literal["customer"] = "customer"
    report: Values | None = Field(description="the customer's self-report in percent (None: unparsed)")
    report_sum: int | None = Field(description="the report's raw sum before renormalization")
    decision: Decision = Field(description="continue | accept | walk_away")
    price: float | None = Field(ge=0, description="the price the customer named (the agreed price on accept)")


class ProbeRecord(_Record):
    speaker: Literal["probe"] = "probe"
    emotions: Emotions = Field(description="the labels of probe_primary")
    probe: dict[str, float] = Field(description="the probe's distribution over the wheel's words")
    probe_primary: Values = Field(description="the probe's mass per primary, in percent")


class ClosingRecord(_Record):
    speaker: Literal["closing"] = "closing"
    paid: float | None = Field(description="the price paid: the customer's answer, kept only after a deal")
    paid_claimed: float | None = Field(description="what the customer said it paid, deal or not")
    parse_status: ParseStatus
    raw: str | None


class TranscriptHeader(BaseModel):
    """The first line of a transcript: what every trial in it played."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    schema_version: Literal[2] = SCHEMA_VERSION
    speaker: Literal["header"] = "header"  # one discriminator for every line
    scenario: dict[str, Any] = Field(description="the scenario as played, the customer persona merged in")
    emotions: Emotions = Field(description="the emotions every report and prediction is over")
    attempts_allowed: int = Field(ge=1, description="replies a model turn may take (max_parse_retries + 1)")

    def line(self) -> dict[str, Any]:
        return self.model_dump(mode="json")


Record = Annotated[
    Union[SalespersonTurnRecord, CustomerTurnRecord, ProbeRecord, ClosingRecord, TranscriptHeader],
    Field(discriminator="speaker"),
]
_RECORD = TypeAdapter(Record)


# --- older versions ------------------------------------------------------------------------------


#: What a version-1 line may lack, by speaker: lines grew fields over time (the call's accounting, the raw
#: sums, the claimed price), and a missing one reads as "not recorded".
_VERSION_1_DEFAULTS: dict[str, dict[str, Any]] = {
    "turn": {"raw": None, "parse_status": "ok", "attempts": 1, "errors": [], "latency_s": 0.0, "tokens": 0,
             "truncated": 0, "text": "", "emotions": list(UNLABELLED_EMOTIONS)},
    "salesperson": {"prediction": None, "prediction_sum": None},
    "customer": {"report": None, "report_sum": None, "decision": "continue", "price": None},
    "probe": {"emotions": list(UNLABELLED_EMOTIONS), "probe": {}},
    "closing": {"paid": None, "parse_status": "ok", "raw": None},
}


def _from_version_1(data: dict[str, Any]) -> dict[str, Any]:
    """Version 1 (no `schema_version`): the same fields, of which older lines lack some (records before
    labels carried no `emotions`: their values are over the Shaver primaries)."""
    speaker = data.get("speaker")
    defaults = {**(_VERSION_1_DEFAULTS["turn"] if speaker in ("salesperson", "customer") else {}),
                **_VERSION_1_DEFAULTS.get(speaker, {})}
    if speaker == "closing":
        defaults["paid_claimed"] = data.get("paid")
    return {**defaults, **data, "schema_version": 2}


#: version -> the function that lifts a record of that version to the next one.
UPGRADES: dict[int, Upgrade] = {1: _from_version_1}


def upgrade(data: dict[str, Any]) -> dict[str, Any]:
    """A transcript line of any version emolab wrote, as this version writes it."""
    return upgraded(data, "schema_version", SCHEMA_VERSION, UPGRADES)


def record_from(data: Any) -> Any:
    """One record from its data (a transcript line's object, or the graph state's entry), upgraded and
    validated; a ValueError (pydantic's ValidationError among them) when it is none."""
    if not isinstance(data, dict):
        raise ValueError("not a JSON object")
    return _RECORD.validate_python(upgrade(data))


def records_from(lines: Iterable[dict[str, Any]]) -> list[Any]:
    """The graph state's records, typed (the state keeps their plain `line()` data)."""
    return [record_from(line) for line in lines]


def read_record(text: str, where: str, loads: Callable[[str], Any] = json.loads) -> Any:
    """One transcript.jsonl line as its record, or a ConfigError naming `where` (the file and line number):
    a line that is not JSON, not an object, or not a record emolab writes. `loads` parses the JSON (the
    run's input limits cap its nesting and numbers)."""
    try:
        data = loads(text)
    except json.JSONDecodeError as err:
        raise ConfigError(f"{where} is not valid JSON ({err.msg})") from None
    except ValueError as err:  # nested too deeply, or a number of more digits than Python reads
        raise ConfigError(f"{where} is not valid JSON ({str(err).split(';')[0]})") from None
    if not isinstance(data, dict):
        kind = {list: "an array", str: "a string", bool: "a boolean", type(None): "null"}.get(type(data), "a number")
        raise ConfigError(f"{where} is not a transcript record ({kind} where a JSON object belongs)")
    try:
        return record_from(data)
    except ValidationError as err:
        raise ConfigError(f"{where} is not a transcript record: {_problem(err)}") from None
    except ValueError as err:
        raise ConfigError(f"{where} is not a transcript record: {err}") from None


def _problem(err: ValidationError) -> str:
    """The first problem as 'field: message', without the speaker a discriminated union puts first."""
    first = err.errors()[0]
    if len(first["loc"]) > 1 and first["loc"][0] in _SPEAKERS:
        return first_validation_problem(ValidationError.from_exception_data(
            err.title, [{**first, "loc": first["loc"][1:]}]))  # type: ignore[list-item]
    return first_validation_problem(err)


_SPEAKERS = ("salesperson", "customer", "probe", "closing", "header")


def dialogue(records: Iterable[Any]) -> list[TurnRecord]:
    """The salesperson's and the customer's turns, in order: what either side could have read."""
    return [record for record in records if isinstance(record, TurnRecord)]
