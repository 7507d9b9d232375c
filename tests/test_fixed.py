"""Fixed-point units of 10^-8: exact both ways, and a clear error for anything that does not fit."""

from __future__ import annotations

from decimal import Context, Decimal, Inexact

import pytest
from hypothesis import given
from hypothesis import strategies as st

from orderflow_plugin.fixed import LIMIT, FixedPointError, from_e8, from_e16, parse_e8, to_e8


@pytest.mark.parametrize("text,units", [
    ("0", 0), ("0.00000001", 1), ("1", 10**8), ("87648.21000000", 8764821000000), ("87648.21", 8764821000000),
    ("0.10000000000", 10**7), ("92233720368.54775807", LIMIT - 1),
], ids=["zero", "one-unit", "one", "spot-price", "usdm-price", "zeros-past-8", "largest"])
def test_parse_e8_reads_the_digits_exactly(text: str, units: int) -> None:
    """A plain decimal string becomes its exact number of 10^-8 units."""
    assert parse_e8(text) == units
    assert to_e8(Decimal(text)) == units


@pytest.mark.parametrize("text,why", [
    ("0.000000001", "more than 8 decimals"), ("92233720368.54775808", "out of range"), ("-1", "not a plain"),
    ("1e5", "not a plain"), (" 1", "not a plain"), ("1_000", "not a plain"), ("", "not a plain"),
    (".5", "not a plain"), ("1.2.3", "not a plain"), ("NaN", "not a plain"), ("\u0661", "not a plain"),
], ids=["9-decimals", "past-limit", "negative", "exponent", "space", "underscore", "empty", "no-whole-part",
        "two-dots", "nan", "arabic-digit"])
def test_parse_e8_refuses_what_does_not_fit(text: str, why: str) -> None:
    """Too many decimals, out of range or not plain digits: FixedPointError saying which."""
    with pytest.raises(FixedPointError, match=why):
        parse_e8(text)


@pytest.mark.parametrize("value,why", [
    ("0.000000001", "more than 8 decimals"), ("92233720368.54775808", "out of range"), ("-0.5", "out of range"),
    ("NaN", "not a finite"), ("Infinity", "not a finite"),
], ids=["9-decimals", "past-limit", "negative", "nan", "infinity"])
def test_to_e8_refuses_what_does_not_fit(value: str, why: str) -> None:
    """A Decimal with more decimals, out of range or not finite: FixedPointError."""
    with pytest.raises(FixedPointError, match=why):
        to_e8(Decimal(value))


@given(st.integers(min_value=0, max_value=LIMIT - 1))
def test_units_round_trip_through_text_and_decimal(units: int) -> None:
    """units -> Decimal -> text -> units is the identity, and the Decimal has 8 decimals (0 is written 0)."""
    value = from_e8(units)
    assert value.as_tuple().exponent == (-8 if units else 0)
    assert parse_e8(format(value, "f")) == units == to_e8(value)


@given(st.integers(min_value=0, max_value=LIMIT - 1), st.integers(min_value=0, max_value=LIMIT - 1))
def test_a_notional_in_units_of_1e_16_is_the_exact_product(price: int, qty: int) -> None:
    """price units x quantity units, read as 10^-16, is the exact Decimal product (fits 128 bits signed)."""
    assert from_e16(price * qty) == Context(prec=80, traps=[Inexact]).multiply(from_e8(price), from_e8(qty))
    assert price * qty < 2**126
