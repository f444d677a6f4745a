"""A person plays a role (`player=customer` or `player=salesperson`): the agent, and the console it reads.

`HumanNegotiator` answers `act(view)` like any agent, by pausing the graph (LangGraph's `interrupt`) with
a request that names the schema to fill; the run loop hands the request to `ask_human`, which reads the
turn at the console, field by field, and resumes the graph with the answer. The pause is checkpointed,
so the turn survives a stopped run.

Each parser takes the text typed at one prompt and returns the value, or raises `InvalidAnswer` whose
message says what is wrong and how to type it instead; the console shows that reason and asks again.
`:q` at any prompt, or input running out, stops play (`StopPlay`); the run's checkpoint keeps the
trial, so a rerun into the same run dir asks the same turn again.
"""

from __future__ import annotations

import math
import re
import sys
import threading
import weakref
from collections.abc import Callable, Sequence
from typing import Any

from langgraph.types import interrupt
from pydantic import BaseModel, ValidationError
from rich.console import Console
from rich.prompt import Prompt
from rich.text import Text

from agents.negotiation import (
    MESSAGE_MAX_CHARS,
    PRICE_MAX,
    ClosingAnswer,
    count_word,
    emotion_report,
    turn_schemas,
)
from agents.negotiators import AgentView, ClosingTurn, Turn
from agents.price import parse_price, says_no_sale
from agents.records import CallRecord
from emotion_probe.terminal import printable_text

#: Typed at any prompt, stops play (the trial resumes on a rerun into the same run dir).
QUIT = ":q"
DECISIONS = ("continue", "accept", "walk_away")


def _example(emotions: Sequence[str]) -> list[int]:
    """An example report: 40 on the second emotion and 60 on the last (for Shaver's, joy and fear)."""
    example = [0] * len(emotions)
    if len(emotions) == 1:
        return [100]
    example[min(1, len(emotions) - 2)], example[-1] = 40, 60
    return example


def _example_pairs(emotions: Sequence[str]) -> str:
    return " ".join(f"{name}={value}" for name, value in zip(emotions, _example(emotions)) if value)


def emotion_formats(emotions: Sequence[str]) -> str:
    """How to type a report over `emotions` (the run's wheel's primaries), with an example of each way."""
    numbers = "whole numbers" if len(emotions) > 1 else "whole number"
    return (f"{count_word(len(emotions))} {numbers} in the order {', '.join(emotions)} "
            f"(e.g. {' '.join(map(str, _example(emotions)))}), or name=value pairs "
            f"(e.g. {_example_pairs(emotions)}; names left out are 0)")


def schemas(emotions: Sequence[str]) -> dict[str, type[BaseModel]]:
    """The schemas a person's turn is checked with, by the name the graph's interrupt gives."""
    turns = turn_schemas(tuple(emotions))
    return {"SalespersonTurn": turns.salesperson, "CustomerTurn": turns.customer, "ClosingAnswer": ClosingAnswer}


#: Answers to "what did you pay?" that mean nothing was bought, besides a blank and parse_price's phrases.
_NO_PURCHASE = {"none", "no", "nothing", "n/a", "na", "-", "null", "did not buy", "didn't buy"}


class InvalidAnswer(ValueError):
    """A typed answer that cannot be used; the message is the reason, for the person to read."""


class StopPlay(Exception):
    """The person typed :q, or input ran out: play stops here, and the checkpoint keeps the trial.

    `quiet`: play had already stopped in another trial of the run, which said so.
    """

    def __init__(self, reason: str, quiet: bool = False):
        super().__init__(reason)
        self.quiet = quiet


def wants_to_quit(text: str) -> bool:
    return text.strip().lower() == QUIT


def parse_message(text: str) -> str:
    message = text.strip()
    if not message:
        raise InvalidAnswer("the message is empty; type what you say to the other side")
    if len(message) > MESSAGE_MAX_CHARS:
        raise InvalidAnswer(f"the message has {len(message)} characters; at most {MESSAGE_MAX_CHARS} are allowed")
    return message


def _parse_number(token: str, emotions: Sequence[str]) -> float:
    try:
        value = float(token.strip().removesuffix("%"))
    except ValueError:
        value = math.nan
    if math.isnan(value):
        raise InvalidAnswer(f"{token!r} is not a number; type {emotion_formats(emotions)}")
    return value


def _percentage(name: str, token: str, emotions: Sequence[str]) -> int:
    value = _parse_number(token, emotions)
    if value < 0:
        raise InvalidAnswer(f"{name}={token} is negative; percentages go from 0 to 100")
    if value > 100:
        raise InvalidAnswer(f"{name}={token} is above 100; percentages go from 0 to 100")
    if not value.is_integer():
        raise InvalidAnswer(f"{name}={token} is not a whole number; type whole percentages from 0 to 100")
    return int(value)


def _named(text: str, emotions: Sequence[str]) -> dict[str, str]:
    """'joy=40 fear=60' (any order, commas or spaces, spaces around '=' allowed) as {name: token}."""
    tokens = [t for t in re.split(r"[\s,;]+", re.sub(r"\s*=\s*", "=", text.strip())) if t]
    by_lower = {emotion.lower(): emotion for emotion in emotions}  # names are matched in any case
    found: dict[str, str] = {}
    for token in tokens:
        typed, equals, value = token.partition("=")
        if not equals or not typed or not value:
            raise InvalidAnswer(f"{token!r} is not name=value; type {emotion_formats(emotions)}")
        name = by_lower.get(typed.lower())
        if name is None:
            raise InvalidAnswer(f"unknown emotion {typed.lower()!r}; valid names: {', '.join(emotions)}")
        if name in found:
            raise InvalidAnswer(f"{name} is given twice")
        found[name] = value
    return found


def parse_emotions(text: str, emotions: Sequence[str]) -> dict[str, int]:
    """Whole-number percentages over `emotions` (the run's wheel's primaries), typed as one number per
    emotion in their order, or as name=value pairs.

    The sum need not be 100 (a report is renormalized, and its raw sum kept), but it must be above 0.
    """
    if not text.strip():
        raise InvalidAnswer(f"no emotions given; type {emotion_formats(emotions)}")
    if "=" in text:
        tokens = _named(text, emotions)
    else:
        values = [t for t in re.split(r"[\s,;]+", text.strip()) if t]
        for token in values:
            _parse_number(token, emotions)  # "abc" is reported as not a number before the count is
        if len(values) != len(emotions):
            raise InvalidAnswer(f"expected {len(emotions)} numbers ({', '.join(emotions)}), got {len(values)}; "
                                f"or type name=value pairs like {_example_pairs(emotions)}")
        tokens = dict(zip(emotions, values))
    report = {name: _percentage(name, tokens[name], emotions) if name in tokens else 0 for name in emotions}
    if sum(report.values()) <= 0:
        raise InvalidAnswer("the percentages sum to 0; give at least one emotion a share above 0")
    try:
        emotion_report(tuple(emotions)).model_validate(report)
    except ValidationError as err:  # pragma: no cover - the checks above match the schema's
        raise InvalidAnswer(_reason(err)) from None
    return report


def parse_decision(text: str) -> str:
    decision = re.sub(r"[\s-]+", "_", text.strip().lower())
    decision = {"walkaway": "walk_away", "walk": "walk_away"}.get(decision, decision)
    if decision not in DECISIONS:
        shown = text.strip() or "(blank)"
        raise InvalidAnswer(f"unknown decision {shown!r}; type {', '.join(DECISIONS[:-1])} or {DECISIONS[-1]}")
    return decision


def _amount(text: str) -> float | None:
    """The price a text names; None when it names none. Negative and too-large amounts are refused."""
    if re.match(r"^\s*(\$\s*)?-\s*\$?\s*\d", text):
        raise InvalidAnswer(f"{text.strip()!r} is negative; a price is 0 or more")
    value = parse_price(text)
    if value is not None and value > PRICE_MAX:
        raise InvalidAnswer(f"{value:,.0f} is above the largest price allowed, {PRICE_MAX:,}")
    return value


def parse_accept_price(text: str) -> float:
    """The price a customer accepts at: required, a number ("12", "$12", "twelve dollars")."""
    if not text.strip():
        raise InvalidAnswer("accepting needs a price; type the price you agree to, e.g. 12 or $12")
    value = _amount(text)
    if value is None:
        raise InvalidAnswer(f"{text.strip()!r} is not a price; type a number, e.g. 12, $12 or twelve dollars")
    return value


def parse_paid(text: str) -> float | None:
    """The answer to "what did you pay?": a price, or None (blank, "none", "I didn't buy it") for no purchase."""
    text = text.strip()
    if not text or text.lower() in _NO_PURCHASE or says_no_sale(text):
        return None
    value = _amount(text)
    if value is None:
        raise InvalidAnswer(f"{text!r} is not a price; type a number, e.g. 12 or $12, or leave it blank "
                            "if you did not buy")
    return value


def _reason(err: ValidationError) -> str:
    first = err.errors()[0]
    field = ".".join(str(part) for part in first["loc"])
    return f"{field}: {first['msg']}" if field else first["msg"]


def checked_answer(schema: str, answer: dict[str, Any], emotions: Sequence[str]) -> dict[str, Any]:
    """The answer, once it validates under the turn's schema over `emotions` (the graph validates it again,
    the same way)."""
    try:
        schemas(emotions)[schema].model_validate(answer)
    except ValidationError as err:
        raise InvalidAnswer(_reason(err)) from None
    return answer


# --- the agent ------------------------------------------------------------------------------------


class HumanNegotiator:
    """A person plays the role: each turn pauses the graph until the console (`ask_human`) answers."""

    def act(self, view: AgentView) -> Turn:
        schema = schemas(view.emotions)["SalespersonTurn" if view.role == "salesperson" else "CustomerTurn"]
        answer = interrupt({"role": view.role, "schema": schema.__name__, "turn": view.turn,
                            "emotions": list(view.emotions)})
        parsed = schema.model_validate(answer)  # checked at the console already; a resumed answer too
        return Turn(parsed, parsed.message, CallRecord.human())

    def close(self, view: AgentView) -> ClosingTurn:
        answer = interrupt({"role": view.role, "schema": "ClosingAnswer", "turn": view.turn})
        return ClosingTurn(ClosingAnswer.model_validate(answer).paid, "human", None)


# --- the console --------------------------------------------------------------------------------

#: One prompt at a time, when concurrent trials wait for a person.
_PROMPT_LOCK = threading.Lock()
#: Consoles (runs) whose person stopped play: their other trials stop at their next prompt, without asking.
_STOPPED_CONSOLES: "weakref.WeakSet[Console]" = weakref.WeakSet()


def _ask(console: Console, prompt: str | Text, parse: Callable[[str], Any], default: Any = ...) -> Any:
    """Ask until `parse` accepts the answer, showing its reason after each wrong one.

    `:q`, end of input (EOF) or Ctrl-C raise StopPlay. Works with piped stdin: rich reads with input().
    """
    # Piped answers are not echoed by a terminal: show them, so the console reads as a dialogue.
    echo = sys.stdin is not None and not sys.stdin.isatty()
    while True:
        try:
            text = Prompt.ask(prompt, console=console, default=default, show_default=default not in (..., ""))
        except (EOFError, KeyboardInterrupt):
            console.print()
            raise StopPlay("input ended") from None
        if echo:
            console.print(Text(text), soft_wrap=True)
        if wants_to_quit(text):
            raise StopPlay(QUIT)
        try:
            return parse(text)
        except InvalidAnswer as err:
            console.print(Text(f"  {err} (:q stops)", style="red"), soft_wrap=True)


def ask_human(request: dict, console: Console) -> dict:
    """Read the turn a `HumanNegotiator` asked for (the graph's interrupt) at the console, validated field
    by field. Raises StopPlay when the person types :q or input runs out."""
    with _PROMPT_LOCK:
        if console in _STOPPED_CONSOLES:
            raise StopPlay("stopped in another trial", quiet=True)
        try:
            return _ask_turn(request, console)
        except StopPlay:
            _STOPPED_CONSOLES.add(console)
            raise


def _ask_turn(request: dict, console: Console) -> dict:
    role, schema = request["role"], request["schema"]
    where = f"trial {request['trial']}, turn {request['turn']}" if "trial" in request else f"turn {request['turn']}"
    if schema == "ClosingAnswer":
        console.print(Text(f"closing, {where} (:q stops)", style="bold"))
        return {"paid": _ask(console, "[green]what did you pay?[/] (blank = did not buy)", parse_paid, default="")}
    console.print(Text(f"{role}, {where} (:q stops)", style="bold"))
    whose = "your emotions" if role == "customer" else "the customer's emotions"
    names = request["emotions"]  # the run's wheel's primaries, which the interrupt names
    while True:
        message = _ask(console, f"[bold]{role}[/] your message", parse_message)
        # The names come from the wheel file: shown as text, so a `[...]` in one is not read as markup.
        emotions = _ask(console, printable_text(f"{whose}: {' '.join(names)}, or name=value"),
                        lambda text: parse_emotions(text, names))
        if role == "salesperson":
            answer = {"message": message, "predicted_customer_emotions": emotions}
        else:
            decision = _ask(console, "decision: continue, accept or walk_away", parse_decision, default="continue")
            price = _ask(console, "price you accept", parse_accept_price) if decision == "accept" else None
            answer = {"message": message, "my_emotions": emotions, "decision": decision, "price": price}
        try:
            return checked_answer(schema, answer, names)
        except InvalidAnswer as err:  # the field checks above should leave nothing for the schema to refuse
            console.print(Text(f"  {err}; type the turn again (:q stops)", style="red"), soft_wrap=True)
