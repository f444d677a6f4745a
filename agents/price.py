"""Reading a price out of messy text: "$1,200", "twelve dollars", "I didn't buy it"."""

from __future__ import annotations

import re

_UNITS = {w: i for i, w in enumerate(
    "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen sixteen "
    "seventeen eighteen nineteen".split())}
_TENS = {w: 10 * (i + 2) for i, w in enumerate("twenty thirty forty fifty sixty seventy eighty ninety".split())}
_SCALES = {"hundred": 100, "thousand": 1_000, "million": 1_000_000}
_NO_SALE = re.compile(
    r"\b(didn'?t|did not|never|no)\s+(buy|purchase|pay|deal|sale)|\bwalked away\b|\bno deal\b|\bnothing\b|\bnot buy",
    re.IGNORECASE,
)
_DIGITS = re.compile(r"(?<![\w.])\$?\s*(\d{1,3}(?:,\d{3})+|\d+)(?:\.(\d+))?\s*(k\b)?", re.IGNORECASE)


def _words_to_number(tokens: list[str]) -> float | None:
    total, current, seen = 0, 0, False
    for token in tokens:
        if token in _UNITS:
            current += _UNITS[token]
        elif token in _TENS:
            current += _TENS[token]
        elif token in _SCALES:
            current = max(current, 1) * _SCALES[token]
            if _SCALES[token] >= 1000:
                total, current = total + current, 0
        elif token == "and" and seen:
            continue
        else:
            break
        seen = True
    return float(total + current) if seen else None


def says_no_sale(text: str) -> bool:
    """Whether a text says there was no sale ("I didn't buy it", "no deal", "walked away")."""
    return bool(text) and _NO_SALE.search(text) is not None


def parse_price(text: str) -> float | None:
    """The price a text states, or None when it says there was no sale or names no amount."""
    if not text or _NO_SALE.search(text):
        return None
    match = _DIGITS.search(text)
    if match:
        whole = float(match.group(1).replace(",", ""))
        cents = float(f"0.{match.group(2)}") if match.group(2) else 0.0
        return (whole + cents) * (1000 if match.group(3) else 1)
    words = re.findall(r"[a-z]+", text.lower().replace("-", " "))
    for start, word in enumerate(words):
        if word in _UNITS or word in _TENS or word in _SCALES:
            value = _words_to_number(words[start:])
            if value is not None:
                rest = words[start:]
                # "five dollars and fifty cents"
                if "cents" in rest and "and" in rest:
                    cents = _words_to_number(rest[rest.index("and") + 1 :])
                    if cents is not None and cents < 100:
                        value += cents / 100
                return value
    return None
