from decimal import Decimal

import pytest

from config.admin import DecimalInput, plain_decimal


@pytest.mark.parametrize(
    ("stored", "shown"),
    [
        ("3.000000000000", "3"),
        ("0E-12", "0"),
        ("1000000.000000000000", "1000000"),
        ("0.000015000000", "0.000015"),
        ("-2.500000000000", "-2.5"),
    ],
)
def test_decimals_show_as_written(stored, shown):
    assert plain_decimal(Decimal(stored)) == shown
    assert DecimalInput().format_value(Decimal(stored)) == shown


def test_other_values_pass_through():
    assert DecimalInput().format_value("1.50") == "1.50"  # what the operator typed, on an error
    assert DecimalInput().format_value(None) is None
