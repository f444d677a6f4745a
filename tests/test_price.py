"""The price parser (agents/price.py) on real phrasings of "what did you pay?", and on any string at all."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agents.price import parse_price, says_no_sale

# (answer, the documented value). Grouped as the module docstring's rules are.
PHRASINGS = [
    # plain amounts, digits and words
    ("7", 7), ("$7", 7), ("$ 7", 7), ("7 dollars", 7), ("$7.50", 7.5), ("I paid $1,200.", 1200),
    ("1.5k", 1500), ("twelve dollars", 12), ("forty-two dollars", 42), ("two hundred and fifty dollars", 250),
    ("a dollar", 1), ("One dollar.", 1), ("a buck", 1), ("twenty bucks", 20), ("about 15 bucks", 15),
    ("fifty cents", 0.5), ("5 dollars and 50 cents", 5.5), ("five dollars and fifty cents", 5.5),
    ("a grand", 1000), ("two grand", 2000), ("I paid twelve.", 12), ("Paid 9", 9),
    ("Deal at $9.", 9), ("I got it for 8 bucks", 8), ("It cost me $11 in the end.", 11),
    ("The price was 6 dollars", 6),
    # other currencies: the number, in the negotiation's own currency
    ("€12", 12), ("12 euros", 12), ("£7", 7), ("7 pounds", 7), ("10 quid", 10), ("¥500", 500), ("USD 15", 15),
    # a number that is no price beside one that is
    ("2 acorns for $14", 14), ("I bought 3 of them, $5 total", 5),
    # negations, bounds and hypotheticals are not what was paid
    ("Nothing beats it, I paid $7", 7), ("I'd never pay more than $10 ... paid $8", 8),
    ("I'd never pay more than $10, but I paid $8", 8), ("They asked $15 and I paid $12", 12),
    ("I would have paid $20, but I got it for $16", 16), ("I wouldn't pay $30 for that.", None),
    ("Not more than $5.", None), ("I paid $9, not $10", 9), ("At most $12", None),
    # ranges name no price
    ("$10-12", None), ("10 to 12 dollars", None), ("between 10 and 12 dollars", None), ("$10 or $12", None),
    # no sale
    ("I didn't buy it", None), ("I did not buy it, though I would have paid $5", None), ("No deal.", None),
    ("Nothing.", None), ("nothing at all", None), ("I paid nothing", None), ("We walked away.", None),
    ("no", None), ("", None), ("I don't know", None), ("It was great!", None),
    # free
    ("I got it for free", 0), ("It was free", 0),
]


def test_the_table_has_at_least_forty_phrasings():
    assert len(PHRASINGS) >= 40 and len({text for text, _ in PHRASINGS}) == len(PHRASINGS)


@pytest.mark.parametrize("text,price", PHRASINGS)
def test_price_phrasings(text, price):
    assert parse_price(text) == price


@pytest.mark.parametrize("text", ["I didn't buy it", "No deal.", "We walked away.", "Nothing.", "I paid nothing"])
def test_no_sale_phrases(text):
    assert says_no_sale(text)


@pytest.mark.parametrize("text", ["Nothing beats it, I paid $7", "I paid $7", "No, I paid $7"])
def test_nothing_or_no_inside_a_sentence_is_no_no_sale(text):
    assert not says_no_sale(text)


@settings(max_examples=400, deadline=None)
@given(st.text())
def test_any_text_gives_none_or_a_finite_non_negative_price(text):
    value = parse_price(text)
    assert value is None or (isinstance(value, float) and math.isfinite(value) and value >= 0)


@settings(max_examples=200, deadline=None)
@given(st.integers(min_value=0, max_value=10**30), st.sampled_from(["${}", "{} dollars", "I paid {}", "{} bucks"]))
def test_any_whole_amount_reads_back(amount, form):
    assert parse_price(form.format(amount)) == float(amount)


@settings(max_examples=200, deadline=None)
@given(st.integers(min_value=1, max_value=99))
def test_amounts_in_words_read_back(amount):
    units = "one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen sixteen " \
            "seventeen eighteen nineteen".split()
    tens = "twenty thirty forty fifty sixty seventy eighty ninety".split()
    words = units[amount - 1] if amount < 20 else tens[amount // 10 - 2] + (f"-{units[amount % 10 - 1]}" if amount % 10 else "")
    assert parse_price(f"I paid {words} dollars") == amount


def test_a_number_too_large_for_a_float_is_no_price():
    assert parse_price("$" + "9" * 400) is None
