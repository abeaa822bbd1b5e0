"""Currencies and rounding. The one place an amount is rounded to a currency's minor unit."""

from collections.abc import Iterable
from decimal import ROUND_HALF_UP, Decimal

# ISO 4217 minor units that differ from the usual 2.
_EXPONENTS = {
    **dict.fromkeys(
        [
            "bif",
            "clp",
            "djf",
            "gnf",
            "isk",
            "jpy",
            "kmf",
            "krw",
            "pyg",
            "rwf",
            "ugx",
            "uyi",
            "vnd",
            "vuv",
            "xaf",
            "xof",
            "xpf",
        ],
        0,
    ),
    **dict.fromkeys(["bhd", "iqd", "jod", "kwd", "lyd", "omr", "tnd"], 3),
}

_SYMBOLS = {"usd": "$", "eur": "€", "gbp": "£", "jpy": "¥", "inr": "₹", "krw": "₩"}


def minor_unit_exponent(currency: str) -> int:
    return _EXPONENTS.get(currency.lower(), 2)


def in_minor_units(amount: Decimal, currency: str) -> bool:
    """Whether ``amount`` is a whole number of the currency's minor unit (``10.50`` USD, not
    ``10.505``). Exact at any size: nothing is rounded to the context's precision."""
    if not amount.is_finite():
        return False
    _, digits, exponent = amount.as_tuple()
    trailing_zeros = len(digits) - len("".join(map(str, digits)).rstrip("0"))
    return -(exponent + trailing_zeros) <= minor_unit_exponent(currency)


def round_money(amount: Decimal, currency: str) -> Decimal:
    """Round half away from zero to the currency's minor unit."""
    return amount.quantize(Decimal(1).scaleb(-minor_unit_exponent(currency)), ROUND_HALF_UP)


def total_of_lines(amounts: Iterable[Decimal], currency: str) -> Decimal:
    """An invoice total: the sum of its lines, each rounded first."""
    return sum((round_money(a, currency) for a in amounts), round_money(Decimal(0), currency))


def format_money(amount: Decimal, currency: str) -> str:
    """``$1,234.50``; currencies without a symbol read ``1,234.50 CHF``."""
    rounded = round_money(amount, currency)
    text = f"{abs(rounded):,.{minor_unit_exponent(currency)}f}"
    sign = "-" if rounded < 0 else ""
    symbol = _SYMBOLS.get(currency.lower())
    return f"{sign}{symbol}{text}" if symbol else f"{sign}{text} {currency.upper()}"


def format_unit_price(amount: Decimal, currency: str) -> str:
    """A price with as many decimals as it needs but at least the currency's: ``$0.000015``."""
    places = max(minor_unit_exponent(currency), -amount.normalize().as_tuple().exponent)
    text = f"{abs(amount):,.{places}f}"
    symbol = _SYMBOLS.get(currency.lower())
    sign = "-" if amount < 0 else ""
    return f"{sign}{symbol}{text}" if symbol else f"{sign}{text} {currency.upper()}"


def format_quantity(quantity: Decimal) -> str:
    """``5,000,000`` or ``1,234.5``: thousands separators, no trailing zeros."""
    normal = Decimal(quantity).normalize()
    places = max(0, -normal.as_tuple().exponent)
    return f"{normal:,.{places}f}"
