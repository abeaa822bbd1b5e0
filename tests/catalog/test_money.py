from decimal import Decimal

import pytest

from catalog.money import format_money, in_minor_units, minor_unit_exponent, round_money


@pytest.mark.parametrize(
    ("currency", "exponent"), [("usd", 2), ("EUR", 2), ("jpy", 0), ("krw", 0), ("kwd", 3)]
)
def test_minor_unit_exponent_follows_iso_4217(currency, exponent):
    assert minor_unit_exponent(currency) == exponent


@pytest.mark.parametrize(
    ("amount", "currency", "expected"),
    [
        ("0.005", "usd", "0.01"),
        ("-0.005", "usd", "-0.01"),
        ("2.5", "jpy", "3"),
        ("1.0005", "kwd", "1.001"),
        ("0.004999", "usd", "0.00"),
    ],
)
def test_round_money_rounds_half_away_from_zero(amount, currency, expected):
    assert round_money(Decimal(amount), currency) == Decimal(expected)
    assert str(round_money(Decimal(amount), currency)) == expected


def test_format_money_uses_symbol_and_thousands_separators():
    assert format_money(Decimal("1234567.5"), "usd") == "$1,234,567.50"
    assert format_money(Decimal("1234"), "jpy") == "¥1,234"
    assert format_money(Decimal("1.2345"), "kwd") == "1.235 KWD"


@pytest.mark.parametrize(
    ("amount", "currency", "whole"),
    [
        ("10.50", "usd", True),
        ("10.505", "usd", False),
        ("100.00", "jpy", True),
        ("0.5", "jpy", False),
        ("1.0001", "kwd", False),
        ("1" * 40, "usd", True),  # beyond the context's precision: no InvalidOperation
        ("10." + "0" * 30 + "1", "usd", False),  # not rounded away
        ("Infinity", "usd", False),
    ],
)
def test_in_minor_units_is_exact_at_any_size(amount, currency, whole):
    assert in_minor_units(Decimal(amount), currency) is whole
