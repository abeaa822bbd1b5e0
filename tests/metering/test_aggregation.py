from datetime import UTC, datetime, timedelta
from decimal import Decimal
from types import SimpleNamespace

import pytest

from metering.aggregation import (
    Partial,
    matches,
    meter_value,
    parse_number,
    property_text,
    quantity,
)

T0 = datetime(2026, 11, 1, tzinfo=UTC)


def meter(**fields):
    base = {
        "event_name": "tokens",
        "aggregation": "SUM",
        "field": "tokens",
        "filters": [],
        "multiplier": None,
    }
    return SimpleNamespace(**{**base, **fields})


O1_INPUT = meter(
    filters=[
        {"key": "model", "values": ["OpenAI O1"]},
        {"key": "prompt_type", "values": ["input", "cached_input"]},
    ]
)


@pytest.mark.parametrize(
    ("event_name", "properties", "expected"),
    [
        ("tokens", {"model": "OpenAI O1", "prompt_type": "input"}, True),
        ("tokens", {"model": "OpenAI O1", "prompt_type": "cached_input"}, True),  # values ORed
        ("tokens", {"model": "OpenAI O1", "prompt_type": "output"}, False),
        ("tokens", {"model": "GPT-4o", "prompt_type": "input"}, False),  # keys ANDed
        ("tokens", {"prompt_type": "input"}, False),  # missing key
        ("Tokens", {"model": "OpenAI O1", "prompt_type": "input"}, False),  # case-sensitive
        ("tokens", {"model": "openai o1", "prompt_type": "input"}, False),
    ],
)
def test_event_matches_meter_by_name_and_every_filter(event_name, properties, expected):
    assert matches(O1_INPUT, event_name, properties) is expected


def test_filters_compare_properties_as_strings():
    m = meter(filters=[{"key": "tier", "values": ["2", "true"]}])
    assert matches(m, "tokens", {"tier": 2})
    assert matches(m, "tokens", {"tier": True})
    assert not matches(m, "tokens", {"tier": 3})


@pytest.mark.parametrize(
    ("value", "text"),
    [
        ("1", "1"),
        ("", ""),
        (1, "1"),
        (1.0, "1.0"),
        (1.5, "1.5"),
        (1.5e-7, "0.00000015"),  # as PostgreSQL's numeric prints it, never 1.5e-07
        (1e20, "100000000000000000000"),
        (100.0, "100.0"),
        (-0.0, "0.0"),  # numeric has no negative zero
        (10**30, "1000000000000000000000000000000"),
        (True, "true"),
        (False, "false"),
        (None, None),  # null, objects and arrays have no text
        ({"a": 1}, None),
        ([1], None),
        (float("inf"), None),  # stored as null
    ],
)
def test_property_text_is_one_canonical_text(value, text):
    assert property_text(value) == text


def test_properties_without_text_match_no_filter_and_feed_no_count_unique():
    m = meter(filters=[{"key": "tier", "values": ["null", "{}", "[]", "None"]}])
    for value in (None, {}, []):
        assert not matches(m, "tokens", {"tier": value})
    unique = meter(aggregation="COUNT_UNIQUE", field="user")
    for value in (None, {"a": 1}, [1]):
        with pytest.raises(ValueError, match="'user' is null, an object or an array"):
            meter_value(unique, {"user": value})


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (2000000, "2000000"),
        ("2500000", "2500000"),
        (" 1.25 ", "1.25"),
        (0.1, "0.1"),
        ("1e3", "1E+3"),
        (-4, "-4"),
        ("2.500000000000000000000", "2.5"),  # zeros past 12 places change nothing
    ],
)
def test_numbers_arrive_as_json_numbers_or_numeric_strings(raw, expected):
    assert parse_number(raw) == Decimal(expected)


@pytest.mark.parametrize(
    "raw",
    [
        None,
        True,
        "",
        "abc",
        "NaN",
        "Infinity",
        float("inf"),
        "1e30",
        10**19,
        [],
        {},
        "0.0000000000001",
        # 29 decimals in 30 digits: Decimal's 28-digit context would round it to 1.
        "1.00000000000000000000000000001",
    ],
)
def test_non_numbers_and_absurd_numbers_are_refused(raw):
    with pytest.raises(ValueError):
        parse_number(raw)


def test_meter_value_names_the_missing_or_bad_field():
    with pytest.raises(ValueError, match="'tokens' is missing"):
        meter_value(meter(), {})
    with pytest.raises(ValueError, match="'tokens' is not a number"):
        meter_value(meter(), {"tokens": "lots"})
    assert meter_value(meter(aggregation="COUNT", field=""), {}) is None
    assert meter_value(meter(aggregation="COUNT_UNIQUE", field="user"), {"user": 7}) == "7"


def partial_of(*values_at):
    p = Partial()
    for offset, value in values_at:
        p.add(T0 + timedelta(seconds=offset), value)
    return p


@pytest.mark.parametrize(
    ("aggregation", "expected"),
    [("COUNT", "3"), ("SUM", "60"), ("AVG", "20"), ("MAX", "30"), ("LATEST", "10")],
)
def test_each_aggregation(aggregation, expected):
    p = partial_of((0, Decimal(30)), (20, Decimal(10)), (10, Decimal(20)))
    p_sorted = Partial()
    for ts, v in sorted([(0, Decimal(30)), (10, Decimal(20)), (20, Decimal(10))]):
        p_sorted.add(T0 + timedelta(seconds=ts), v)
    m = meter(aggregation=aggregation)
    assert quantity(m, p_sorted, T0, T0 + timedelta(days=1)) == Decimal(expected)
    assert p.count == 3


def test_sum_with_multiplier_and_count_unique():
    p = partial_of((0, Decimal("1.5")), (1, Decimal("2.5")))
    assert quantity(
        meter(aggregation="SUM_WITH_MULTIPLIER", multiplier=Decimal(1000)),
        p,
        T0,
        T0 + timedelta(hours=1),
    ) == Decimal(4000)
    u = partial_of((0, "a"), (1, "b"), (2, "a"))
    assert quantity(meter(aggregation="COUNT_UNIQUE"), u, T0, T0 + timedelta(hours=1)) == 2


def test_weighted_sum_prorates_each_value_to_the_end_of_the_period():
    start, end = T0, T0 + timedelta(days=30)
    # 20 units from day 15 (half the period) and 10 units from day 24 (a fifth of it).
    p = Partial()
    p.add(T0 + timedelta(days=15), Decimal(20))
    p.add(T0 + timedelta(days=24), Decimal(10))
    assert quantity(meter(aggregation="WEIGHTED_SUM"), p, start, end) == Decimal(12)


def test_merged_partials_equal_one_partial_of_all_events():
    a = partial_of((0, Decimal(5)), (5, Decimal(7)))
    b = partial_of((10, Decimal(1)), (15, Decimal(9)))
    whole = partial_of((0, Decimal(5)), (5, Decimal(7)), (10, Decimal(1)), (15, Decimal(9)))
    a.merge(b)
    assert a == whole
