"""Salesperson and customer agents: their scenario, output schemas, prompts and views of the talk.

Information hiding holds by construction: each agent's prompt is built only from the
*message* fields of the other side's turns, never from their emotion reports. Nothing is
cut out of strings after the fact.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from emotion_probe.backends.base import ChatMessage

PRIMARIES = ("love", "joy", "surprise", "anger", "sadness", "fear")
#: A report whose values sum to within this many points of 100 is renormalized; others are invalid.
SUM_TOLERANCE = 10.0


class NegotiationScenario(BaseModel):
    """A negotiation setting (`conf/scenario/*.yaml`)."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1)
    item: str = Field(min_length=1, description="what is for sale")
    description: str = Field(min_length=1, description="what the salesperson knows about it")
    seller_cost: float = Field(ge=0, description="what the item cost the seller")
    customer_persona: str = Field(min_length=1, description="who the customer is")
    customer_budget: float = Field(gt=0, description="the most the customer can pay")
    max_turns: int = Field(ge=1, le=50, description="customer replies before the talk ends")
    opening_speaker: Literal["salesperson", "customer"] = "salesperson"
    extra_instructions: str = ""
    currency: str = "$"


class EmotionReport(BaseModel):
    """Percentages over the six primary emotions, each 0-100, summing to 100 (renormalized within tolerance)."""

    model_config = ConfigDict(extra="forbid")

    love: float = Field(ge=0, le=100)
    joy: float = Field(ge=0, le=100)
    surprise: float = Field(ge=0, le=100)
    anger: float = Field(ge=0, le=100)
    sadness: float = Field(ge=0, le=100)
    fear: float = Field(ge=0, le=100)

    @model_validator(mode="after")
    def _sums_to_100(self) -> "EmotionReport":
        total = sum(self.as_list())
        if abs(total - 100.0) > SUM_TOLERANCE:
            raise ValueError(f"the six percentages sum to {total:g}, not 100")
        for name in PRIMARIES:
            object.__setattr__(self, name, getattr(self, name) * 100.0 / total)
        return self

    def as_list(self) -> list[float]:
        return [getattr(self, name) for name in PRIMARIES]


class SalespersonTurn(BaseModel):
    message: str = Field(min_length=1)
    predicted_customer_emotions: EmotionReport


class CustomerTurn(BaseModel):
    message: str = Field(min_length=1)
    my_emotions: EmotionReport
    decision: Literal["continue", "accept", "walk_away"]
    price: float | None = Field(default=None, ge=0, description="the agreed price, when accepting")

    @model_validator(mode="after")
    def _price_with_accept(self) -> "CustomerTurn":
        if self.decision == "accept" and self.price is None:
            raise ValueError("price: required when decision is accept")
        return self


class ClosingAnswer(BaseModel):
    """The customer's answer to "what did you pay?": a price, or null for no purchase."""

    paid: float | None = Field(default=None, ge=0)

    @field_validator("paid", mode="before")
    @classmethod
    def _read_messy_price(cls, value):
        if isinstance(value, str):
            from agents.price import parse_price

            return parse_price(value)
        return value


def _example(fields: dict) -> str:
    import json

    return json.dumps(fields)


def salesperson_system(scenario: NegotiationScenario) -> str:
    example = _example({
        "message": f"Good morning! This is {scenario.item}, a rare find. Only {scenario.currency}"
                   f"{max(scenario.seller_cost * 3, 1):g}!",
        "predicted_customer_emotions": {"love": 10, "joy": 40, "surprise": 30, "anger": 5, "sadness": 5, "fear": 10},
    })
    return (
        f"You are a salesperson selling {scenario.item}. {scenario.description} "
        f"It cost you {scenario.currency}{scenario.seller_cost:g}. Sell it for the highest price you can. "
        "Every turn, write your next message to the customer and predict the customer's current emotions "
        f"as percentages that sum to 100. {scenario.extra_instructions}\n"
        f"Always answer with one line of JSON like this example:\n{example}"
    )


def customer_system(scenario: NegotiationScenario) -> str:
    example = _example({
        "message": "That sounds interesting, but it is too expensive for me.",
        "my_emotions": {"love": 5, "joy": 20, "surprise": 25, "anger": 20, "sadness": 10, "fear": 20},
        "decision": "continue",
        "price": None,
    })
    return (
        f"You are {scenario.customer_persona}. A salesperson is selling you {scenario.item}. "
        f"You can spend at most {scenario.currency}{scenario.customer_budget:g}. "
        "Every turn, write your reply, report your own current emotions as percentages that sum to 100, "
        'and decide: "continue", "accept" (give the price you agree to pay) or "walk_away". '
        f"{scenario.extra_instructions}\nAlways answer with one line of JSON like this example:\n{example}"
    )


def _view(turns: list[dict], me: str) -> list[ChatMessage]:
    """The conversation as one side sees it: own messages as assistant, the other's as user."""
    return [
        ChatMessage(role="assistant" if turn["speaker"] == me else "user", content=turn["text"])
        for turn in turns
        if turn.get("text")
    ]


def _your_turn(view: list[ChatMessage], opening: str) -> list[ChatMessage]:
    # A separate instruction turn: the other side's words are passed on untouched.
    return [*view, ChatMessage(role="user", content=opening if not view else "Your turn. Answer with the JSON object.")]


def salesperson_messages(scenario: NegotiationScenario, turns: list[dict]) -> list[ChatMessage]:
    view = _your_turn(_view(turns, "salesperson"), "Greet the customer and make your first offer. Answer in JSON.")
    return [ChatMessage(role="system", content=salesperson_system(scenario)), *view]


def customer_messages(scenario: NegotiationScenario, turns: list[dict]) -> list[ChatMessage]:
    view = _your_turn(_view(turns, "customer"), "Greet the salesperson and ask about the item. Answer in JSON.")
    return [ChatMessage(role="system", content=customer_system(scenario)), *view]


def closing_messages(scenario: NegotiationScenario, turns: list[dict]) -> list[ChatMessage]:
    question = (f"The conversation is over. How much did you pay for {scenario.item}? "
                'Reply with JSON only: {"paid": <number, or null if you did not buy it>}')
    return [ChatMessage(role="system", content=customer_system(scenario)), *_view(turns, "customer"),
            ChatMessage(role="user", content=question)]
