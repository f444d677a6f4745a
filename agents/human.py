"""A person's answers in human play (`player=customer` or `player=salesperson`): parsing only, no I/O.

Each parser takes the text typed at one prompt and returns the value, or raises `InvalidAnswer`
whose message says what is wrong and how to type it instead; the console
(`experiments.runs.negotiation.run.ask_human`) shows that reason and asks again. `:q` at any prompt, or
input running out, stops play (`StopPlay`); the run's checkpoint keeps the trial, so a rerun into
the same run dir asks the same turn again.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from typing import Any

from pydantic import BaseModel, ValidationError

from agents.negotiation import (
    MESSAGE_MAX_CHARS,
    PRICE_MAX,
    ClosingAnswer,
    count_word,
    emotion_report,
    turn_schemas,
)
from agents.price import parse_price, says_no_sale

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


def _number(token: str, emotions: Sequence[str]) -> float:
    try:
        value = float(token.strip().removesuffix("%"))
    except ValueError:
        value = math.nan
    if math.isnan(value):
        raise InvalidAnswer(f"{token!r} is not a number; type {emotion_formats(emotions)}")
    return value


def _percentage(name: str, token: str, emotions: Sequence[str]) -> int:
    value = _number(token, emotions)
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
            _number(token, emotions)  # "abc" is reported as not a number before the count is
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
