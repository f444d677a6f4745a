"""The salesperson and the customer as agents: whoever plays a role answers `act(view) -> Turn`.

The negotiation environment asks the agent of the role whose turn it is, and never asks who that agent
is: a model (`ModelNegotiator`), a person at the console (`agents.human.HumanNegotiator`), or anything
else that answers the same two questions, a turn and (for the customer) what it paid at closing.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from pydantic import BaseModel

from agents.negotiation import NEUTRAL_LINE, ClosingAnswer, NegotiationScenario, agent_turns, closing_messages
from agents.price import parse_price
from agents.records import CallRecord, Role, TurnRecord
from agents.structured import call_structured, recover_message
from emotion_probe.models.base import GenerateConfig, ModelBackend


class TurnEvents(Protocol):
    """What an agent may tell a console while it acts (a model's streamed tokens and retries)."""

    def start(self) -> None: ...

    def token(self, text: str) -> None: ...

    def restart(self, reason: str) -> None: ...

    def retry(self, attempt: int, of: int, reason: str) -> None: ...


class _Silent:
    def start(self) -> None:
        pass

    def token(self, text: str) -> None:
        pass

    def restart(self, reason: str) -> None:
        pass

    def retry(self, attempt: int, of: int, reason: str) -> None:
        pass


@dataclass(frozen=True)
class AgentView:
    """All an agent is given for one turn: the scenario, the talk so far and the emotions to report over.

    `dialogue` holds the records of both sides; the prompts read only their messages (agents.negotiation).
    """

    role: Role
    scenario: NegotiationScenario
    dialogue: tuple[TurnRecord, ...]
    emotions: tuple[str, ...]
    trial: int | None
    turn: int
    events: TurnEvents = field(default_factory=_Silent)


@dataclass(frozen=True)
class Turn:
    """An agent's answer: the parsed reply (None when it never parsed), the message the other side reads,
    and how the answer was obtained."""

    parsed: BaseModel | None
    text: str
    call: CallRecord


@dataclass(frozen=True)
class ClosingTurn:
    paid: float | None
    parse_status: str
    raw: str | None


class Negotiator(Protocol):
    def act(self, view: AgentView) -> Turn: ...

    def close(self, view: AgentView) -> ClosingTurn: ...


@dataclass(frozen=True)
class ModelNegotiator:
    """A model plays the role: the role's prompt and schema (agents.negotiation.agent_turns), asked with
    `call_structured`, which shows the model its validation error and asks again up to `max_parse_retries`."""

    model: ModelBackend
    max_parse_retries: int
    #: The run's sampling settings; each turn draws with a seed of its own (`turn_config`).
    generate_config: GenerateConfig
    #: None: any report with a positive sum is renormalized to 100; a number: reports whose raw sum is
    #: further than this from 100 are invalid (and retried), for studies that want the sum itself right.
    report_sum_tolerance: float | None = None

    def act(self, view: AgentView) -> Turn:
        build, schema = agent_turns(view.emotions)[view.role]
        view.events.start()
        reply = call_structured(
            self.model, build(view.scenario, view.dialogue), schema, max_retries=self.max_parse_retries,
            config=turn_config(self.generate_config, view.trial, view.turn), on_token=_Tokens(view.events),
            on_retry=view.events.retry, context={"sum_tolerance": self.report_sum_tolerance},
        )
        call = CallRecord(raw=reply.raw, parse_status=reply.parse_status, attempts=reply.attempts,
                          errors=reply.errors, latency_s=round(reply.latency_s, 3), tokens=reply.completion_tokens,
                          truncated=reply.truncated)
        # `text` is all the other side ever reads. After a failed turn it is the message recovered from the
        # partial JSON, never another field, or a fixed neutral line; the raw reply stays in the record.
        text = reply.parsed.message if reply.parsed is not None else recover_message(reply.raw or "") or NEUTRAL_LINE
        return Turn(reply.parsed, text, call)

    def close(self, view: AgentView) -> ClosingTurn:
        reply = call_structured(self.model, closing_messages(view.scenario, view.dialogue, view.emotions),
                                ClosingAnswer, max_retries=self.max_parse_retries,
                                config=turn_config(self.generate_config, view.trial, view.turn))
        paid = reply.parsed.paid if reply.parsed else parse_price(reply.raw)
        return ClosingTurn(paid, reply.parse_status, reply.raw)


class _Tokens:
    """A model turn's `on_token`: each piece as a token event, and a restart when a stream that broke off
    midway starts again (RetryingBackend calls `restart`), so a console can start its block anew."""

    def __init__(self, events: TurnEvents):
        self.events = events

    def __call__(self, text: str) -> None:
        self.events.token(text)

    def restart(self, reason: str) -> None:
        self.events.restart(reason)


def negotiators(models: Mapping[Role, ModelBackend], *, max_parse_retries: int, generate_config: GenerateConfig,
                report_sum_tolerance: float | None = None,
                people: Mapping[Role, Negotiator] | None = None) -> dict[Role, Negotiator]:
    """Who plays each role: `people[role]` where a person plays it (agents.human.HumanNegotiator), else
    the role's model, asked the same way for both roles."""
    people = people or {}
    return {role: people.get(role) or ModelNegotiator(model, max_parse_retries, generate_config, report_sum_tolerance)
            for role, model in models.items()}


def turn_config(config: GenerateConfig, trial: int | None, turn: int) -> GenerateConfig:
    """The run's sampling settings with a seed of its own for this trial and turn.

    One seed for every call would make trials replay each other word for word (their first
    prompts are identical), and a response cache would then hand every trial the same talk.
    """
    return config.reseeded(trial or 0, turn)


def turn_fields(role: Role, parsed: Any) -> dict[str, Any]:
    """The record fields a role's parsed reply fills (the emotions renormalized, their raw sum kept);
    None for each when the reply never parsed (a failed customer turn continues the talk)."""
    if role == "salesperson":
        emotions = parsed.predicted_customer_emotions if parsed is not None else None
        return {"prediction": emotions.normalized() if emotions else None,
                "prediction_sum": emotions.raw_sum if emotions else None}
    emotions = parsed.my_emotions if parsed is not None else None
    return {"report": emotions.normalized() if emotions else None,
            "report_sum": emotions.raw_sum if emotions else None,
            "decision": parsed.decision if parsed is not None else "continue",
            "price": parsed.price if parsed is not None else None}
