"""Salesperson and customer agents: their scenario, output schemas, prompts and views of the talk.

Information hiding holds by construction: each agent's prompt is built only from the
*message* fields of the other side's turns, never from their emotion reports. Nothing is
cut out of strings after the fact.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from functools import cache, partial
from typing import TYPE_CHECKING, Any, Literal, NamedTuple

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationInfo,
    create_model,
    field_validator,
    model_validator,
)

from emotion_probe.limits import InputLimits
from emotion_probe.models.base import ChatMessage

if TYPE_CHECKING:
    from agents.records import TurnRecord

#: The longest message a turn may carry. The grammar enforces it, so a constrained reply always
#: has the tokens left to close its JSON within the turn's budget.
MESSAGE_MAX_CHARS = 160
#: The largest price a turn may name. With a maximum, the grammar bounds a number's digits too;
#: without one, a small model can write "15000000000..." until its token budget runs out.
PRICE_MAX = 10_000_000
#: What the other side reads after a turn that never parsed and had no readable message.
NEUTRAL_LINE = "(no answer)"


class NegotiationScenario(BaseModel):
    """A negotiation setting (`conf/scenario/*.yaml`)."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, description="the scenario's name, as transcripts and reports show it")
    item: str = Field(min_length=1, description="what is for sale")
    description: str = Field(min_length=1, description="what the salesperson knows about it")
    seller_cost: float = Field(ge=0, description="what the item cost the seller")
    customer_persona: str = Field(min_length=1, description="who the customer is")
    customer_budget: float = Field(gt=0, description="the most the customer can pay")
    max_turns: int = Field(ge=1, le=50, description="customer replies before the talk ends")
    # Optional in a scenario file a user writes; the shipped scenarios set all three.
    opening_speaker: Literal["salesperson", "customer"] = Field(default="salesperson", description="who speaks first")
    extra_instructions: str = Field(default="", description="text added to both agents' instructions")
    currency: str = Field(default="$", description="the symbol prices are written with")
    # The environment's termination rules, by name (environments.rules.RULES): a scenario may leave one out
    # (no walking away) or add one a package registered.
    rules: list[str] = Field(default=["deal", "walk_away", "max_turns"], min_length=1,
                             description="the rules that end the talk, checked in order after each customer turn")

    @field_validator("customer_budget")
    @classmethod
    def _budget_reaches_cost(cls, budget: float, info: ValidationInfo) -> float:
        # A budget below the seller's cost leaves no price that suits both sides: almost always a typo
        # (a missing zero), and a run would only measure walk-aways. Equal is allowed: a sale at cost.
        cost = info.data.get("seller_cost")  # absent when seller_cost itself failed validation
        if cost is not None and budget < cost:
            raise ValueError(f"{budget:g} is below seller_cost ({cost:g}), so no price suits both sides")
        return budget

    def within(self, limits: InputLimits, where: str = "scenario") -> "NegotiationScenario":
        """The scenario itself, once each text field is found no longer than `limits.scenario_chars`: every
        turn's prompt holds them, so a field far too long for any model is refused before a model is loaded."""
        for name, value in self:
            if isinstance(value, str):
                limits.check_text(value, f"{where}.{name}")
        return self


class CustomerPersona(BaseModel):
    """conf/customer/persona/*.yaml: who the customer is, swept as config."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, description="name of the persona in outputs")
    description: str | None = Field(min_length=1, description="who the customer is, as the customer agent is "
                                                              "told; null = the scenario's own customer_persona")


def played_scenario(scenario: Mapping[str, Any], persona: CustomerPersona, limits: InputLimits,
                    where: str = "scenario") -> NegotiationScenario:
    """The scenario as a run plays it, validated once: the persona's description, if it has one, replaces
    the scenario's own customer_persona before validation, so the merged scenario is the checked one. A
    text field longer than `limits.scenario_chars` is refused (every turn's prompt holds them all)."""
    data = dict(scenario)
    if persona.description is not None:
        data["customer_persona"] = persona.description
    return NegotiationScenario.model_validate(data).within(limits, where)


def _percent(emotion: str, alias: str | None = None) -> Any:
    return Field(ge=0, le=100, description=f"percentage of {emotion}, a whole number from 0 to 100", alias=alias)


_COUNT_WORDS = ("no", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "eleven",
                "twelve")


def count_word(n: int) -> str:
    """A count in words ("six"): prompts and the errors shown to a model carry no digits, which it copies."""
    return _COUNT_WORDS[n] if n < len(_COUNT_WORDS) else str(n)


def listed(emotions: Sequence[str], conjunction: str = "and") -> str:
    """'love, joy and fear': the emotions in prose, in their order."""
    return emotions[0] if len(emotions) == 1 else f"{', '.join(emotions[:-1])} {conjunction} {emotions[-1]}"


class EmotionReport(BaseModel):
    """Whole-number percentages over the run's emotions (its wheel's primaries): the base of the per-set
    schemas `emotion_report(emotions)` builds, one field per emotion, whose docstring (_REPORT_DOC, the
    description a backend's structured output sees) says how the values are checked and renormalized."""

    model_config = ConfigDict(extra="forbid")

    @model_validator(mode="after")
    def _sum_is_usable(self, info: ValidationInfo) -> "EmotionReport":
        total = self.raw_sum
        count = count_word(len(type(self).model_fields))
        if total <= 0:
            raise ValueError(f"the {count} percentages sum to 0; give each emotion its share of 100")
        tolerance = (info.context or {}).get("sum_tolerance")
        if tolerance is not None and abs(total - 100) > tolerance:
            raise ValueError(f"the {count} percentages sum to {total}, not 100 (tolerance {tolerance:g})")
        return self

    @property
    def raw_sum(self) -> int:
        return sum(getattr(self, name) for name in type(self).model_fields)

    def normalized(self) -> list[float]:
        """The values rescaled to sum to 100, in the order of `emotions()`."""
        total = self.raw_sum
        return [100.0 * getattr(self, name) / total for name in type(self).model_fields]


def _field_name(emotion: str, i: int) -> str:
    # An emotion becomes a field of that name when Python and pydantic allow it; any other (a custom
    # wheel's "self-esteem", or a name BaseModel already uses) gets a stand-in name and keeps its own
    # as the alias, which is what the JSON and the model see.
    usable = emotion.isidentifier() and not emotion.startswith(("_", "model_")) and not hasattr(BaseModel, emotion)
    return emotion if usable else f"emotion_{i}"


@cache
def emotion_report(emotions: tuple[str, ...]) -> type[EmotionReport]:
    """The report schema over these emotions: one whole-number percentage field per emotion, in order.

    Built once per emotion set; every set's schema is named EmotionReport, so the JSON schema a
    backend receives differs between sets only in its fields.
    """
    if not emotions:
        raise ValueError("an emotion report needs at least one emotion")
    fields: dict[str, Any] = {}
    for i, emotion in enumerate(emotions):
        name = _field_name(emotion, i)
        fields[name] = (int, _percent(emotion, alias=None if name == emotion else emotion))
    return create_model("EmotionReport", __base__=EmotionReport,
                        __doc__=_REPORT_DOC.format(count=count_word(len(emotions))), **fields)


# The schema's description, as a backend's structured output sees it. It is part of every prompt a
# grammar-constrained or schema-following backend receives, so changing a word changes what the
# response cache has stored for every run.
_REPORT_DOC = """Whole-number percentages over the {count} primary emotions.

    A report whose values sum to anything above 0 is renormalized to 100 (`normalized`), and its
    raw sum is kept (`raw_sum`) so that a study can see how far off the model was. A zero sum says
    nothing and is invalid. Studies that want the sum itself checked pass a tolerance in the
    validation context: `model_validate(data, context={{"sum_tolerance": 5}})`.
    """


_MESSAGE = Field(min_length=1, max_length=MESSAGE_MAX_CHARS, description="what you say to the other side now")


class _Turn(BaseModel):
    # `message` comes first: the grammar writes fields in this order, so even a reply cut short
    # has its message, and a failed turn can pass on that message and nothing else.
    message: str = _MESSAGE


class _CustomerChecks(_Turn):
    @model_validator(mode="after")
    def _price_with_accept(self) -> "_CustomerChecks":
        # The subclass turn_schemas builds declares `decision` and `price`.
        if self.decision == "accept" and self.price is None:
            raise ValueError("price: required when decision is accept")
        return self


class TurnSchemas(NamedTuple):
    """The reply schemas of one emotion set."""

    salesperson: type[BaseModel]
    customer: type[BaseModel]


@cache
def turn_schemas(emotions: tuple[str, ...]) -> TurnSchemas:
    """SalespersonTurn and CustomerTurn over these emotions, built once per set.

    The customer's fields are declared here, after `message`, in the order the grammar writes them.
    """
    report = emotion_report(emotions)
    salesperson = create_model("SalespersonTurn", __base__=_Turn, __doc__=None,
                               predicted_customer_emotions=(report, ...))
    customer = create_model(
        "CustomerTurn", __base__=_CustomerChecks, __doc__=None,
        my_emotions=(report, ...),
        decision=(Literal["continue", "accept", "walk_away"], ...),
        price=(float | None, Field(default=None, ge=0, le=PRICE_MAX, description="the agreed price, when accepting")),
    )
    return TurnSchemas(salesperson, customer)


class ClosingAnswer(BaseModel):
    """The customer's answer to "what did you pay?": a price, or null for no purchase."""

    paid: float | None = Field(default=None, ge=0, le=PRICE_MAX)

    @field_validator("paid", mode="before")
    @classmethod
    def _read_messy_price(cls, value):
        if isinstance(value, str):
            from agents.price import parse_price

            return parse_price(value)
        return value


# The prompts name each field and say what it means, in prose, and show no example values: the
# embedded 135M model copies an example's numbers, or a field's description, instead of answering
# (tests/test_negotiation.py checks every prompt for numbers).
# The emotions are the run's wheel's primaries, in the wheel's order. Without the second sentence of
# _SHARES the embedded model gave the same value to all six Shaver primaries in 12 of 16 sampled
# reports; with it, in 4 of 16.
_SHARES = ("as whole-number percentages that add up to 100. Most feelings are mixed, with one or two "
           "emotions much stronger than the rest.")


def salesperson_system(scenario: NegotiationScenario, emotions: Sequence[str]) -> str:
    return (
        f"You are a salesperson selling {scenario.item}. {scenario.description} "
        f"It cost you {scenario.currency}{scenario.seller_cost:g}. Sell it for the highest price you can. "
        f"{scenario.extra_instructions}\n"
        'Reply to the customer in JSON. Put your spoken reply in "message". In "predicted_customer_emotions", '
        f"guess how much {listed(emotions)} the customer feels now, {_SHARES}"
    )


def customer_system(scenario: NegotiationScenario, emotions: Sequence[str]) -> str:
    return (
        f"You are {scenario.customer_persona}. A salesperson is trying to sell you {scenario.item}. "
        f"You can spend at most {scenario.currency}{scenario.customer_budget:g}. {scenario.extra_instructions}\n"
        'Reply to the salesperson in JSON. Put your spoken reply in "message". In "my_emotions", rate how much '
        f"{listed(emotions)} you feel now, {_SHARES} "
        'Set "decision" to "continue" to keep talking, "accept" to buy at the price you name in "price", '
        'or "walk_away" to leave without buying; "price" is null unless you accept.'
    )


def _view(dialogue: Sequence["TurnRecord"], me: str) -> list[ChatMessage]:
    """The conversation as one side sees it: own messages as assistant, the other's as user. Only the
    messages: the other side's emotion reports never reach a prompt."""
    return [
        ChatMessage(role="assistant" if turn.speaker == me else "user", content=turn.text)
        for turn in dialogue
        if turn.text
    ]


def _your_turn(view: list[ChatMessage], opening: str) -> list[ChatMessage]:
    # The other side's words are passed on untouched, and end the view: the system prompt says how
    # to reply. (An extra "Your turn" message was copied into the small model's replies.) Only the
    # opening turn, with nothing said yet, gets an instruction of its own.
    return view if view else [ChatMessage(role="user", content=opening)]


def salesperson_messages(scenario: NegotiationScenario, dialogue: Sequence["TurnRecord"],
                         emotions: Sequence[str]) -> list[ChatMessage]:
    view = _your_turn(_view(dialogue, "salesperson"), "Greet the customer and make your first offer. Answer in JSON.")
    return [ChatMessage(role="system", content=salesperson_system(scenario, emotions)), *view]


def customer_messages(scenario: NegotiationScenario, dialogue: Sequence["TurnRecord"],
                      emotions: Sequence[str]) -> list[ChatMessage]:
    view = _your_turn(_view(dialogue, "customer"), "Greet the salesperson and ask about the item. Answer in JSON.")
    return [ChatMessage(role="system", content=customer_system(scenario, emotions)), *view]


class AgentTurn(NamedTuple):
    """How an agent is asked for a turn: its conversation so far as chat messages, and the schema its reply must fill."""

    messages: Callable[[NegotiationScenario, Sequence["TurnRecord"]], list[ChatMessage]]
    schema: type[BaseModel]


def agent_turns(emotions: Sequence[str]) -> dict[str, AgentTurn]:
    """The one place that pairs each agent with its prompt and its schema, over the run's emotions (its
    wheel's primaries): the negotiation graph asks with these, and `emolab experiment=preview` shows
    them, so the preview cannot drift from what runs. Built once per emotion set (the graph asks every turn)."""
    return _agent_turns(tuple(emotions))


@cache
def _agent_turns(emotions: tuple[str, ...]) -> dict[str, AgentTurn]:
    schemas = turn_schemas(emotions)
    return {
        "salesperson": AgentTurn(partial(salesperson_messages, emotions=emotions), schemas.salesperson),
        "customer": AgentTurn(partial(customer_messages, emotions=emotions), schemas.customer),
    }


def closing_messages(scenario: NegotiationScenario, dialogue: Sequence["TurnRecord"],
                     emotions: Sequence[str]) -> list[ChatMessage]:
    question = (f"The conversation is over. How much did you pay for {scenario.item}? "
                'Answer with one JSON object with the field "paid": the price you paid, or null if you did not buy it.')
    return [ChatMessage(role="system", content=customer_system(scenario, emotions)), *_view(dialogue, "customer"),
            ChatMessage(role="user", content=question)]
