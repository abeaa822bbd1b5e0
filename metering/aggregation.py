"""Usage arithmetic with no ORM: which events feed a meter, and how values aggregate.

A ``Partial`` holds what any aggregation needs from a set of events, and partials merge,
so hourly rollups, raw edge events and windows all combine the same way.
"""

import math
import re
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal, InvalidOperation

from catalog import names

ZERO = Decimal(0)
# Values beyond these are refused at ingest: a bounded value keeps every sum exact.
MAX_MAGNITUDE = Decimal(10) ** 18
MAX_DECIMAL_PLACES = 12

# Numeric text as both Python and PostgreSQL's numeric read it: ASCII digits, sign, point,
# a short exponent. Decimal alone would also take "1_000" or other scripts' digits.
NUMERIC_TEXT = r"^[ \t\n\r]*[+-]?([0-9]+(\.[0-9]*)?|\.[0-9]+)([eE][+-]?[0-9]{1,4})?[ \t\n\r]*$"
_NUMERIC = re.compile(NUMERIC_TEXT)
NUMERIC = names.NUMERIC_AGGREGATIONS


def property_text(value) -> str | None:
    """A property as filters and COUNT_UNIQUE compare it: strings as sent, ``true``/``false``,
    numbers as PostgreSQL's numeric prints them (``1e20`` is ``100000000000000000000``).
    Null, objects and arrays have no text: None, which no filter value equals."""
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            return None  # stored as JSON null
        value = Decimal(repr(value))  # the shortest digits, as the stored JSON has them
    if isinstance(value, Decimal) and value.is_finite():
        return format(abs(value) if value.is_zero() else value, "f")  # numeric has no -0
    return None


def parse_number(value) -> Decimal:
    """A JSON number or numeric string as an exact Decimal; ``ValueError`` says why not."""
    if isinstance(value, bool) or value is None:
        raise ValueError("is not a number")
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError("is not a finite number")
        value = repr(value)
    if isinstance(value, str):
        if not _NUMERIC.match(value):
            raise ValueError("is not a number")
        value = value.strip()
    try:
        number = Decimal(value) if isinstance(value, str | int) else None
    except InvalidOperation:
        number = None
    if number is None or not number.is_finite():
        raise ValueError("is not a number")
    if abs(number) >= MAX_MAGNITUDE:
        raise ValueError(f"is out of range (at most {MAX_MAGNITUDE:.0e} in magnitude)")
    if _decimal_places(number) > MAX_DECIMAL_PLACES:
        raise ValueError(f"has more than {MAX_DECIMAL_PLACES} decimal places")
    return number


def _decimal_places(number: Decimal) -> int:
    """Places after the point, trailing zeros aside; exact, with no context rounding."""
    _, digits, exponent = number.as_tuple()
    if exponent >= 0:
        return 0
    zeros = len(digits) - len("".join(map(str, digits)).rstrip("0"))
    return max(0, -exponent - zeros)


def matches(meter, event_name: str, properties: dict) -> bool:
    """Same event name (case-sensitive); every filter key present with one of its values."""
    if event_name != meter.event_name:
        return False
    for item in meter.filters:
        value = properties.get(item["key"], _MISSING)
        if value is _MISSING:
            return False
        if (value if type(value) is str else property_text(value)) not in item["values"]:
            return False
    return True


_MISSING = object()


def meter_value(meter, properties: dict):
    """The value this event contributes: a Decimal, a text for COUNT_UNIQUE, None for COUNT.

    Raises ``ValueError`` naming the field when the event cannot feed the meter.
    """
    if meter.aggregation == names.COUNT:
        return None
    if meter.field not in properties:
        raise ValueError(f"property {meter.field!r} is missing")
    raw = properties[meter.field]
    if meter.aggregation == names.COUNT_UNIQUE:
        text = property_text(raw)
        if text is None:
            raise ValueError(f"property {meter.field!r} is null, an object or an array")
        if len(text) > 255:
            raise ValueError(f"property {meter.field!r} is longer than 255 characters")
        return text
    try:
        return parse_number(raw)
    except ValueError as error:
        raise ValueError(f"property {meter.field!r} {error}") from None


@dataclass
class Partial:
    count: int = 0
    total: Decimal = ZERO
    maximum: Decimal | None = None
    latest_at: datetime | None = None
    latest_value: Decimal | None = None
    value_time_total: Decimal = ZERO  # Σ value × epoch seconds
    distinct: set = field(default_factory=set)

    def add(self, timestamp: datetime, value) -> None:
        """Add one event; events must be added in (timestamp, arrival) order for LATEST."""
        self.count += 1
        if isinstance(value, str):
            self.distinct.add(value)
        elif value is not None:
            self.total += value
            if self.maximum is None or value > self.maximum:
                self.maximum = value
            if self.latest_at is None or timestamp >= self.latest_at:
                self.latest_at, self.latest_value = timestamp, value
            self.value_time_total += value * epoch_seconds(timestamp)

    def merge(self, other: "Partial") -> None:
        """Fold ``other`` in; on a LATEST tie, ``other`` is taken as the later arrival."""
        self.count += other.count
        self.total += other.total
        if other.maximum is not None and (self.maximum is None or other.maximum > self.maximum):
            self.maximum = other.maximum
        if other.latest_at is not None and (
            self.latest_at is None or other.latest_at >= self.latest_at
        ):
            self.latest_at, self.latest_value = other.latest_at, other.latest_value
        self.value_time_total += other.value_time_total
        self.distinct |= other.distinct


def epoch_seconds(moment: datetime) -> Decimal:
    whole = int(moment.timestamp() // 1)
    return Decimal(whole) + Decimal(moment.microsecond).scaleb(-6)


def quantity(meter, partial: Partial, start: datetime, end: datetime) -> Decimal:
    """The meter's quantity over ``[start, end)`` from everything in ``partial``."""
    aggregation = meter.aggregation
    if aggregation == names.COUNT:
        return Decimal(partial.count)
    if aggregation == names.SUM:
        return partial.total
    if aggregation == names.SUM_WITH_MULTIPLIER:
        return partial.total * meter.multiplier
    if aggregation == names.AVG:
        return partial.total / partial.count if partial.count else ZERO
    if aggregation == names.MAX:
        return partial.maximum if partial.maximum is not None else ZERO
    if aggregation == names.LATEST:
        return partial.latest_value if partial.latest_value is not None else ZERO
    if aggregation == names.COUNT_UNIQUE:
        return Decimal(len(partial.distinct))
    if aggregation == names.WEIGHTED_SUM:
        # Each value holds from its timestamp to the period's end, prorated to the period.
        span = epoch_seconds(end) - epoch_seconds(start)
        if span <= 0:
            return ZERO
        return (partial.total * epoch_seconds(end) - partial.value_time_total) / span
    raise ValueError(f"unknown aggregation {aggregation!r}")
