"""Dialogue-quality checks of one negotiation trial: did the agents talk, or parrot each other?

A small model can keep a negotiation's form while losing its content: the customer repeats the
salesperson's opening word for word, every report is the uniform 100/P, the closing names a price
although no deal was made. The metrics still come out as numbers, so nothing shows it. Each check
here reads one trial's records (the transcript lines, as plain dicts) and returns a flag and a
number; the run writes both per trial (`quality_<name>`, `flag_<name>`), and `analysis.exclude`
leaves trials flagged by the named checks out of the price and error statistics.

A check is a plain function `check(turns, context) -> QualityResult`, registered by name in
`CHECKS` (the `check` decorator); the config's `analysis.exclude` may name any registered check.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field

from emotion_probe.analysis.stats import finite_or_none

__all__ = ["CHECKS", "QualityContext", "QualityResult", "QualitySettings", "check", "excluded_mask",
           "flag_counts", "flagged_checks", "longest_shared_run", "quality_row", "words"]


class QualitySettings(BaseModel):
    """conf/experiment/negotiation.yaml `analysis.quality:` the checks' thresholds."""

    model_config = ConfigDict(extra="forbid")

    # No defaults here: they live in conf/experiment/negotiation.yaml, and the YAML's comments explain them.
    copy_words: int = Field(ge=1, description="a message sharing a run of at least this many words with an earlier "
                                              "message of the other side is copying")
    repeat_words: int = Field(ge=1, description="a message sharing a run of at least this many words with one of "
                                                "its speaker's own earlier messages is self-repetition")
    flat_tolerance_pp: float = Field(ge=0, allow_inf_nan=False,
                                     description="values within this many percentage points count as equal")
    flat_share: float = Field(gt=0, le=1, description="flat_reports flags a trial when at least this share of "
                                                      "its reports and predictions are flat")
    neutral_turns: int = Field(ge=1, description="neutral_turns flags a trial with at least this many failed turns")


@dataclass(frozen=True)
class QualityContext:
    """What a check may need besides the records: the thresholds, and the scenario's price bounds."""

    settings: QualitySettings
    seller_cost: float | None = None  # None: no lower bound on an accepted price
    budget: float | None = None  # None: no upper bound
    # The line a failed turn stands in with (agents.negotiation.NEUTRAL_LINE): the same words every time,
    # so it is never counted as copied or repeated (neutral_turns counts those turns).
    placeholder: str | None = None


@dataclass(frozen=True)
class QualityResult:
    """A check's verdict on one trial: whether it is flagged, and the number it is flagged on.

    `details` are further numbers of the check, written as `quality_<name>_<key>` columns.
    """

    flag: bool
    value: float
    details: Mapping[str, float] = field(default_factory=dict)


Check = Callable[[Sequence[dict], QualityContext], QualityResult]
#: name -> check, in the order their columns are written.
CHECKS: dict[str, Check] = {}


def check(name: str) -> Callable[[Check], Check]:
    """Register a check under `name` (its columns are quality_<name> and flag_<name>)."""

    def register(function: Check) -> Check:
        if name in CHECKS:
            raise ValueError(f"a quality check named {name!r} is already registered")
        CHECKS[name] = function
        return function

    return register


# --- words -------------------------------------------------------------------------------------

# Letters and digits, with an inner apostrophe kept ("don't" is one word); case is ignored.
_WORD = re.compile(r"\w+(?:['\u2019]\w+)*")


def words(text: str) -> list[str]:
    """The lowercase word tokens of a message."""
    return _WORD.findall(text.casefold())


def longest_shared_run(a: Sequence[str], b: Sequence[str]) -> int:
    """The length of the longest run of consecutive words that occurs in both `a` and `b`."""
    if not a or not b:
        return 0
    best, previous = 0, [0] * (len(b) + 1)
    for word in a:
        current = [0] * (len(b) + 1)
        for j, other in enumerate(b, start=1):
            if word == other:
                current[j] = previous[j - 1] + 1
                best = max(best, current[j])
        previous = current
    return best


def _messages(turns: Sequence[dict], context: QualityContext) -> list[tuple[str, list[str]]]:
    """(speaker, words) of each dialogue message, in order, less the placeholder of failed turns."""
    return [(t["speaker"], words(t.get("text") or "")) for t in turns
            if t.get("speaker") in ("salesperson", "customer")
            and not (context.placeholder is not None and t.get("text") == context.placeholder)]


def _runs(turns: Sequence[dict], context: QualityContext, same_side: bool) -> list[int]:
    """Per message, its longest shared run with an earlier message of the same side or of the other."""
    messages = _messages(turns, context)
    return [max((longest_shared_run(said, earlier) for who, earlier in messages[:i] if (who == speaker) == same_side),
                default=0)
            for i, (speaker, said) in enumerate(messages)]


def _run_result(runs: list[int], threshold: int) -> QualityResult:
    longest = max(runs, default=0)
    share = sum(run >= threshold for run in runs) / len(runs) if runs else 0.0
    return QualityResult(longest >= threshold, float(longest), {"share": share})


# --- the checks --------------------------------------------------------------------------------


@check("copying")
def copying(turns: Sequence[dict], context: QualityContext) -> QualityResult:
    """The longest run of words a message shares with an earlier message of the other side (value, in
    words); detail `share`: the share of messages with a run of at least `copy_words`."""
    return _run_result(_runs(turns, context, same_side=False), context.settings.copy_words)


@check("self_repetition")
def self_repetition(turns: Sequence[dict], context: QualityContext) -> QualityResult:
    """As copying, against the speaker's own earlier messages (threshold `repeat_words`)."""
    return _run_result(_runs(turns, context, same_side=True), context.settings.repeat_words)


@check("flat_reports")
def flat_reports(turns: Sequence[dict], context: QualityContext) -> QualityResult:
    """The share of reports and predictions that are flat: all values equal (the uniform 100/P, which
    says nothing), or one of a side's reports that are identical across all of its turns (two or more)."""
    tolerance = context.settings.flat_tolerance_pp
    sides = {"customer": "report", "salesperson": "prediction"}
    flat = total = 0
    for speaker, key in sides.items():
        values = [np.asarray(t[key], dtype=float) for t in turns
                  if t.get("speaker") == speaker and t.get(key) is not None and len(t[key])]
        if not values:
            continue
        frozen = len(values) > 1 and all(v.shape == values[0].shape and np.all(np.abs(v - values[0]) <= tolerance)
                                         for v in values[1:])
        flat += len(values) if frozen else sum(float(np.ptp(v)) <= tolerance for v in values)
        total += len(values)
    share = flat / total if total else 0.0
    return QualityResult(bool(total) and share >= context.settings.flat_share, share)


@check("price_out_of_range")
def price_out_of_range(turns: Sequence[dict], context: QualityContext) -> QualityResult:
    """How far an accepted price lies outside [seller_cost, budget] (0 inside; NaN with no accepted price)."""
    prices = [p for t in turns if t.get("speaker") == "customer" and t.get("decision") == "accept"
              if (p := finite_or_none(t.get("price"))) is not None]
    if not prices:
        return QualityResult(False, float("nan"))
    low = context.seller_cost if context.seller_cost is not None else -math.inf
    high = context.budget if context.budget is not None else math.inf
    distance = max(max(low - price, price - high, 0.0) for price in prices)
    return QualityResult(distance > 0, float(distance))


@check("closing_price_without_deal")
def closing_price_without_deal(turns: Sequence[dict], context: QualityContext) -> QualityResult:
    """The price a closing answer claims although no deal was made (`paid` None, `paid_claimed` set);
    NaN when there is no such claim."""
    claims = [t.get("paid_claimed") for t in turns
              if t.get("speaker") == "closing" and t.get("paid") is None and t.get("paid_claimed") is not None]
    if not claims:
        return QualityResult(False, float("nan"))
    claimed = finite_or_none(claims[-1])
    return QualityResult(True, claimed if claimed is not None else float("nan"))


@check("neutral_turns")
def neutral_turns(turns: Sequence[dict], context: QualityContext) -> QualityResult:
    """The number of dialogue turns that never parsed (the other side read the recovered message or the
    neutral line instead)."""
    failed = sum(t.get("speaker") in ("salesperson", "customer") and t.get("parse_status") == "failed" for t in turns)
    return QualityResult(failed >= context.settings.neutral_turns, float(failed))


# --- per trial and across trials ---------------------------------------------------------------


def quality_row(turns: Sequence[dict], context: QualityContext) -> dict[str, Any]:
    """Every registered check on one trial: `quality_<name>` (its number), `quality_<name>_<detail>`, and
    `flag_<name>` (bool)."""
    row: dict[str, Any] = {}
    for name, function in CHECKS.items():
        result = function(turns, context)
        row[f"quality_{name}"] = float(result.value)
        row.update({f"quality_{name}_{key}": float(value) for key, value in result.details.items()})
        row[f"flag_{name}"] = bool(result.flag)
    return row


def flagged_checks(row: Mapping[str, Any]) -> list[str]:
    """The checks that flagged one trial (a row of trials.parquet), in registry order; a check whose
    column the row lacks (a file written before it) is not counted."""
    return [name for name in CHECKS if _is_true(row.get(f"flag_{name}"))]


def _is_true(value: Any) -> bool:
    # A row of a frame pooled with older files holds None, NaN or pd.NA there: not flagged.
    return bool(pd.notna(value) and value)


def flag_counts(trials: pd.DataFrame, names: Iterable[str] | None = None) -> dict[str, int]:
    """How many trials each check flagged (by default every registered check whose column the frame has)."""
    names = [n for n in CHECKS if f"flag_{n}" in trials.columns] if names is None else list(names)
    return {name: int(_flags(trials, name).sum()) for name in names}


def _flags(trials: pd.DataFrame, name: str) -> pd.Series:
    column = f"flag_{name}"
    if column not in trials.columns:
        return pd.Series(False, index=trials.index)
    return trials[column].eq(True)  # a frame pooled with older files holds NaN there: not flagged


def excluded_mask(trials: pd.DataFrame, exclude: Iterable[str]) -> pd.Series:
    """True for each trial flagged by any of the checks in `exclude`."""
    mask = pd.Series(False, index=trials.index)
    for name in exclude:
        mask |= _flags(trials, name)
    return mask
