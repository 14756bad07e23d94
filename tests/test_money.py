from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from anoncard.errors import PolicyViolation
from anoncard.money import format_cents, parse_cents


@given(st.integers(1, 99_999_999_999))
def test_round_trip(cents):
    assert parse_cents(format_cents(cents), "amount") == cents


@given(st.integers(0, 10**9 - 1), st.integers(0, 99))
def test_short_decimals(euros, cents):
    assert parse_cents(f"{euros}.{cents:02d}", "a", allow_zero=True) == euros * 100 + cents
    if cents % 10 == 0:
        assert parse_cents(f"{euros}.{cents // 10}", "a", allow_zero=True) == euros * 100 + cents


@pytest.mark.parametrize(
    "value, rule",
    [
        ("-1", "not an amount"),
        ("0", "greater than 0"),
        ("0.00", "greater than 0"),
        ("NaN", "not an amount"),
        ("Infinity", "not an amount"),
        ("1e309", "not an amount"),
        ("3.499", "not an amount"),
        ("", "not an amount"),
        (" 3.49", "not an amount"),
        ("3,49", "not an amount"),
        ("03.49", "not an amount"),
        ("+3", "not an amount"),
        ("٣", "not an amount"),
        (3.49, "not a number"),
        (True, "not a number"),
        (None, "decimal string"),
        (-1, "whole number of euros from 0 to 999999999"),
        (10**9, "whole number of euros from 0 to 999999999"),
        ("1" * 5000, "not an amount"),
        ([1], "decimal string"),
    ],
)
def test_bad_amounts_name_the_field_and_rule(value, rule):
    with pytest.raises(PolicyViolation, match=rule) as info:
        parse_cents(value, "lines[0].amount")
    assert "'lines[0].amount'" in str(info.value)


def test_an_integer_too_long_for_str_is_refused_as_an_amount():
    with pytest.raises(PolicyViolation, match="'a': must be a whole number of euros from 0 to 999999999"):
        parse_cents(10**5000, "a")  # str() of it would raise ValueError


def test_maximum():
    assert parse_cents("100.00", "a", maximum=10_000) == 10_000
    with pytest.raises(PolicyViolation, match="at most 100.00"):
        parse_cents("100.01", "a", maximum=10_000)


@given(st.text(max_size=12))
def test_any_text_is_parsed_or_refused_cleanly(text):
    try:
        cents = parse_cents(text, "a")
    except PolicyViolation:
        return
    assert isinstance(cents, int) and cents > 0
    assert Decimal(text) * 100 == cents
