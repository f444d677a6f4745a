"""The rules that end a negotiation: small evaluators the environment is given, not code inside its nodes.

After each customer turn the environment asks its rules in order; the first that names an outcome ends
the talk with it. A scenario picks its rules by name (`rules:` in conf/scenario/*.yaml, all three by
default); a package adds one with `register_rule`, and a scenario file may then name it. A file only
ever names a rule: nothing in it is run.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal, Protocol

from agents.negotiation import NegotiationScenario
from agents.records import CustomerTurnRecord, TurnRecord
from emotion_probe.errors import ConfigError

Outcome = Literal["deal", "walk_away", "max_turns"]


@dataclass(frozen=True)
class RuleInput:
    """What a rule sees: the customer turn just taken, the whole dialogue up to it, and the scenario."""

    turn: CustomerTurnRecord
    dialogue: Sequence[TurnRecord]
    scenario: NegotiationScenario

    @property
    def customer_turns(self) -> int:
        return sum(record.speaker == "customer" for record in self.dialogue)


class Rule(Protocol):
    name: str

    def __call__(self, seen: RuleInput) -> str | None:
        """The outcome that ends the talk now, or None to go on."""


@dataclass(frozen=True)
class Deal:
    """The customer accepted (its schema requires a price with it): the talk ends in a sale."""

    name: str = "deal"

    def __call__(self, seen: RuleInput) -> str | None:
        return "deal" if seen.turn.parse_status != "failed" and seen.turn.decision == "accept" else None


@dataclass(frozen=True)
class WalkAway:
    """The customer left without buying."""

    name: str = "walk_away"

    def __call__(self, seen: RuleInput) -> str | None:
        return "walk_away" if seen.turn.parse_status != "failed" and seen.turn.decision == "walk_away" else None


@dataclass(frozen=True)
class MaxTurns:
    """The customer has replied `scenario.max_turns` times."""

    name: str = "max_turns"

    def __call__(self, seen: RuleInput) -> str | None:
        return "max_turns" if seen.customer_turns >= seen.scenario.max_turns else None


RULES: dict[str, Rule] = {rule.name: rule for rule in (Deal(), WalkAway(), MaxTurns())}


def register_rule(rule: Rule) -> Rule:
    """Make `rule` nameable in a scenario's `rules:` (call at import time of the package that defines it)."""
    RULES[rule.name] = rule
    return rule


def rules_for(scenario: NegotiationScenario) -> tuple[Rule, ...]:
    """The scenario's rules, in its order; an unknown name is one ConfigError that lists the known ones."""
    unknown = [name for name in scenario.rules if name not in RULES]
    if unknown:
        raise ConfigError(f"scenario.rules: {', '.join(map(repr, unknown))} is not a rule; expected names from "
                          f"{sorted(RULES)}")
    return tuple(RULES[name] for name in scenario.rules)


def outcome(rules: Sequence[Rule], seen: RuleInput) -> str | None:
    """The first rule's outcome, in order; None while the talk goes on."""
    return next((result for rule in rules if (result := rule(seen)) is not None), None)
