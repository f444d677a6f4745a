"""Reading a price out of messy text: "$1,200", "twelve dollars", "I didn't buy it".

The text is the customer's answer to "what did you pay?", so the rules pick the amount that was paid:

- An *amount* is a number in digits ("7", "$1,200", "3.50", "1.5k") or in words ("twelve", "a dollar",
  "two hundred and fifty"). It is *marked* when a currency goes with it: a symbol or code before it
  ($ € £ ¥, usd eur gbp) or a word after it (dollars, bucks, euros, pounds, quid, cents, grand).
  Other currencies are read as amounts in the negotiation's own currency, unconverted. When any
  amount is marked, unmarked numbers ("2 acorns for $14") are not prices; words count only when
  marked or right after a verb of paying ("paid twelve").
- An amount is *ruled out* when its clause (the text since the last . ; ! ? … , "but" or "and")
  before it negates, bounds or imagines it: "never", "not", "n't", "more/less than", "up to",
  "at most/least", "would", "could", "if". Both ends of a range ("$10-12", "10 to 12 dollars",
  "between 10 and 12") are ruled out: a range names no price.
- The price is the first amount not ruled out whose clause has a verb of paying before it (paid,
  pay, cost, spent, gave, for, at); else None if the text says there was no sale ("didn't buy",
  "no deal", "walked away", "nothing", "paid nothing"); else the first amount not ruled out.
  "for free" and "it was free" are 0.
- Anything else (no amount, only ruled-out amounts, an amount too large for a float) is None.
  The parser never raises on any string.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

_UNITS = {w: i for i, w in enumerate(
    "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen sixteen "
    "seventeen eighteen nineteen".split())}
_TENS = {w: 10 * (i + 2) for i, w in enumerate("twenty thirty forty fifty sixty seventy eighty ninety".split())}
_SCALES = {"hundred": 100, "thousand": 1_000, "million": 1_000_000}
_CURRENCY_AFTER = {"dollar": 1, "dollars": 1, "buck": 1, "bucks": 1, "euro": 1, "euros": 1, "pound": 1,
                   "pounds": 1, "quid": 1, "usd": 1, "eur": 1, "gbp": 1, "cent": 0.01, "cents": 0.01,
                   "grand": 1000}

_NO_SALE = re.compile(
    r"\b(didn'?t|did not|never|not|won'?t)\s+(buy|purchase|get)\b|\b(didn'?t|did not)\s+pay\s+anything\b"
    r"|\bwalked away\b|\bno (deal|sale|purchase)\b|\b(paid|bought|spent)\s+nothing\b|\bpassed on it\b"
    r"|^\W*(nothing|none|no)\b\W*(at all)?\W*$",
    re.IGNORECASE,
)
_FREE = re.compile(r"\b(for free|was free|free of charge|for nothing)\b", re.IGNORECASE)
_BOUNDARY = re.compile(r"[.;!?…]\s|[,;!?…]|\.\.\.|\s(but|and|though|although|while)\s|\.$", re.IGNORECASE)
_RULED_OUT = re.compile(
    r"\b(never|not|no more than|more than|less than|up to|at most|at least|over|under|would|could|might|if|"
    r"wouldn'?t|couldn'?t|won'?t)\b|n't\b", re.IGNORECASE)
_PAID = re.compile(r"\b(paid|pay|paying|cost|costs|spent|spend|gave|give|handed|for|at)\b", re.IGNORECASE)
_DIGITS = re.compile(
    r"(?<![\w.,$€£¥])(?P<pre>[$€£¥]|\b(?:usd|eur|gbp)\b)?\s*"
    r"(?P<num>\d{1,3}(?:,\d{3})+(?:\.\d+)?|\d+(?:\.\d+)?)(?P<k>k)?(?![\w.,]\w|\w)"
    r"(?:\s*(?P<post>dollars?|bucks?|euros?|pounds?|quid|usd|eur|gbp|cents?|grand)\b)?",
    re.IGNORECASE,
)
_WORD = re.compile(r"[a-z]+", re.IGNORECASE)


@dataclass
class _Amount:
    value: float
    start: int
    end: int
    marked: bool
    digits: bool
    ruled_out: bool = False
    paid: bool = False


def _words_to_number(tokens: list[str]) -> tuple[float, int] | None:
    """The number that `tokens` begin with, and how many tokens it takes ("two hundred and fifty")."""
    total, current, used, last = 0, 0, 0, 0
    for i, token in enumerate(tokens):
        if token in _UNITS:
            current += _UNITS[token]
        elif token in _TENS:
            current += _TENS[token]
        elif token in _SCALES:
            current = max(current, 1) * _SCALES[token]
            if _SCALES[token] >= 1000:
                total, current = total + current, 0
        elif token == "and" and used and i + 1 < len(tokens) and (tokens[i + 1] in _UNITS or tokens[i + 1] in _TENS):
            continue
        elif token in ("a", "an") and not used and i + 1 < len(tokens) and (
                tokens[i + 1] in _SCALES or tokens[i + 1] in _CURRENCY_AFTER):
            current = 1  # "a hundred", "a dollar", "a grand"
        else:
            break
        used, last = used + 1, i + 1
    return (float(total + current), last) if used else None


def _digit_amounts(text: str) -> list[_Amount]:
    found = []
    for match in _DIGITS.finditer(text):
        try:
            value = float(match["num"].replace(",", ""))
        except ValueError:
            continue
        post = (match["post"] or "").lower()
        if match["k"]:
            value *= 1000
        value *= _CURRENCY_AFTER.get(post, 1)
        amount = _Amount(value, match.start("num") if not match["pre"] else match.start(), match.end(),
                         marked=bool(match["pre"] or post or match["k"]), digits=True)
        previous = found[-1] if found else None
        # "5 dollars and 50 cents", "$5 and 50 cents": one amount
        if post.startswith("cent") and previous is not None and value < 1 and \
                text[previous.end:amount.start].strip().lower() in ("", "and") and previous.value == int(previous.value):
            previous.value += value
            previous.end = amount.end
            continue
        found.append(amount)
    return found


def _word_amounts(text: str) -> list[_Amount]:
    spans = [(m.group().lower(), m.start(), m.end()) for m in _WORD.finditer(text.replace("-", " "))]
    tokens = [token for token, _, _ in spans]
    found, i = [], 0
    while i < len(tokens):
        parsed = _words_to_number(tokens[i:]) if tokens[i] in _UNITS or tokens[i] in _TENS or tokens[i] in (
            "a", "an") else None
        if parsed is None:
            i += 1
            continue
        value, used = parsed
        end_index = i + used
        unit = tokens[end_index] if end_index < len(tokens) else ""
        marked = unit in _CURRENCY_AFTER
        if marked:
            value *= _CURRENCY_AFTER[unit]
            end_index += 1
            # "five dollars and fifty cents"
            if unit in ("dollar", "dollars", "buck", "bucks") and end_index < len(tokens) and tokens[end_index] == "and":
                cents = _words_to_number(tokens[end_index + 1:])
                if cents is not None and cents[0] < 100 and end_index + 1 + cents[1] < len(tokens) and \
                        tokens[end_index + 1 + cents[1]] in ("cent", "cents"):
                    value += cents[0] / 100
                    end_index += 2 + cents[1]
        elif tokens[i] in ("a", "an"):
            i += 1
            continue
        found.append(_Amount(value, spans[i][1], spans[end_index - 1][2], marked=marked, digits=False))
        i = end_index
    return found


def _clause_before(text: str, position: int) -> str:
    """The text of the clause that `position` is in, up to `position`."""
    start = 0
    for match in _BOUNDARY.finditer(text, 0, position):
        start = match.end()
    return text[start:position]


def _mark_ranges(text: str, amounts: list[_Amount]) -> None:
    for first, second in zip(amounts, amounts[1:]):
        between = text[first.end:second.start].strip().lower()
        joined_by_and = between == "and" and re.search(r"\bbetween\s*$", text[:first.start], re.IGNORECASE)
        if between in ("-", "–", "—", "to", "or", "-$", "to $", "or $") or joined_by_and:
            first.ruled_out = second.ruled_out = True


def parse_price(text: str) -> float | None:
    """The price a text says was paid, or None (see the module docstring for the rules)."""
    if not isinstance(text, str) or not text.strip():
        return None
    digits = _digit_amounts(text)
    words = [w for w in _word_amounts(text) if not any(w.start < d.end and d.start < w.end for d in digits)]
    amounts = sorted(digits + words, key=lambda amount: amount.start)
    _mark_ranges(text, amounts)
    for amount in amounts:
        clause = _clause_before(text, amount.start)
        amount.ruled_out = amount.ruled_out or bool(_RULED_OUT.search(clause)) or not math.isfinite(amount.value)
        amount.paid = bool(_PAID.search(clause))
    if any(a.marked for a in amounts):
        amounts = [a for a in amounts if a.marked]
    else:
        amounts = [a for a in amounts if a.digits or a.paid]
    usable = [a for a in amounts if not a.ruled_out]
    paid = next((a for a in usable if a.paid), None)
    if paid is not None:
        return paid.value
    if _FREE.search(text) and not usable:
        return 0.0
    if _NO_SALE.search(text):
        return None
    return usable[0].value if usable else None


def says_no_sale(text: str) -> bool:
    """Whether a text says there was no sale ("I didn't buy it", "no deal", "walked away")."""
    return bool(text) and _NO_SALE.search(text) is not None
