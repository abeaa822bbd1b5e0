"""Ingestion and usage aggregation against the database: rollups must equal raw events."""

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from metering.ingestion import EventRejected
from metering.models import Event, UsageRollup
from metering.rollups import meter_rollups_rebuild, rollups_ready
from metering.selectors import meter_usage, meter_usage_windows
from metering.tasks import rollups_refresh
from tests.factories import MeterFactory, ingest

pytestmark = pytest.mark.django_db

START = datetime(2026, 10, 1, tzinfo=UTC)
END = datetime(2026, 11, 1, tzinfo=UTC)
NOW = datetime(2026, 11, 27, tzinfo=UTC)


def event(event_id, at, customer="acme", name="tokens", **properties):
    return {
        "event_id": event_id,
        "event_name": name,
        "external_customer_id": customer,
        "timestamp": at.isoformat(),
        "properties": properties,
    }


def usage(meter, start=START, end=END, customer="acme", **kwargs):
    exact = meter_usage(meter=meter, external_customer_id=customer, start=start, end=end, **kwargs)
    raw = meter_usage(
        meter=meter, external_customer_id=customer, start=start, end=end, use_rollups=False
    )
    assert exact == raw, "rollups and raw events disagree"
    return exact


def test_o1_scenario_quantities(o1_scenario):
    from billing.demo import _meter_fields
    from catalog.services import feature_create

    meters = {}
    for spec in o1_scenario["features"]:
        f = feature_create(
            name=spec["name"],
            lookup_key=spec["lookup_key"],
            type="metered",
            meter=_meter_fields(spec["meter"]),
        )
        meters[spec["lookup_key"]] = f.meter
    rollups_refresh(settle_seconds=0)
    period_start = datetime(2026, 11, 1, 13, 27, 41, tzinfo=UTC)  # anniversary, not on the hour
    period_end = datetime(2026, 12, 1, 13, 27, 41, tzinfo=UTC)
    for spec in o1_scenario["events"]:
        at = period_start + timedelta(seconds=spec["period_offset_s"])
        ingest(
            event(spec["event_id"], at, customer=spec["customer"], **spec["properties"]),
            now=period_start + timedelta(days=1),
        )
    assert Event.objects.count() == len({e["event_id"] for e in o1_scenario["events"]})
    for customer, expected in o1_scenario["expected"].items():
        for key, line in expected["lines"].items():
            got = usage(meters[key], start=period_start, end=period_end, customer=customer)
            assert got == Decimal(line["quantity"]), (customer, key)


def test_window_includes_start_and_excludes_end():
    m = MeterFactory(aggregation="COUNT", field="")
    ingest(
        event("a", START),
        event("b", END - timedelta(microseconds=1)),
        event("c", END),
        event("d", START - timedelta(microseconds=1)),
        now=NOW,
    )
    assert usage(m) == 2


@pytest.mark.parametrize(
    ("aggregation", "field", "expected"),
    [
        ("COUNT", "", "4"),
        ("SUM", "v", "100"),
        ("AVG", "v", "25"),
        ("MAX", "v", "40"),
        ("LATEST", "v", "20"),
        ("COUNT_UNIQUE", "user", "3"),
    ],
)
def test_each_aggregation_over_rollups_and_edges(aggregation, field, expected):
    m = MeterFactory(aggregation=aggregation, field=field)
    start = START + timedelta(minutes=30)  # partial first hour
    ingest(
        event("1", start + timedelta(minutes=5), v=10, user="u1"),  # raw edge
        event("2", START + timedelta(days=3), v="40", user="u2"),  # rollup
        event("3", START + timedelta(days=20), v=30, user="u1"),  # rollup
        event("4", END - timedelta(minutes=10), v=20, user="u3"),  # raw edge, the latest
        event("5", END - timedelta(minutes=1), v=50, user="u4"),  # after the window
        now=NOW,
    )
    assert usage(m, start=start, end=END - timedelta(minutes=5)) == Decimal(expected)


def test_latest_takes_greatest_timestamp_not_last_arrival():
    m = MeterFactory(aggregation="LATEST", field="v")
    ingest(event("late", START + timedelta(days=5), v=5), now=NOW)
    ingest(event("early", START + timedelta(days=1), v=99), now=NOW)  # arrives after, older
    assert usage(m) == 5


def test_sum_with_multiplier_and_weighted_sum():
    m = MeterFactory(aggregation="SUM_WITH_MULTIPLIER", field="v", multiplier=Decimal("0.5"))
    w = MeterFactory(
        aggregation="WEIGHTED_SUM", field="v", feature__lookup_key="w", event_name="storage"
    )
    ingest(event("1", START + timedelta(days=2), v=7), now=NOW)
    period_end = START + timedelta(days=30)
    ingest(event("2", START + timedelta(days=15), name="storage", v=20), now=NOW)
    assert usage(m) == Decimal("3.5")
    assert usage(w, end=period_end) == Decimal(10)


def test_duplicate_event_id_is_counted_once_and_first_write_wins():
    m = MeterFactory()
    first = ingest(event("e1", START + timedelta(hours=2), tokens=100), now=NOW)
    replay = ingest(event("e1", START + timedelta(hours=2), tokens=999), now=NOW)
    assert (len(first.stored), first.duplicates) == (1, 0)
    assert (len(replay.stored), replay.duplicates) == (0, 1)
    assert usage(m) == 100
    assert Event.objects.get().properties == {"tokens": 100}


def test_duplicates_within_one_batch_count_once():
    m = MeterFactory()
    result = ingest(
        event("x", START + timedelta(hours=1), tokens=1),
        event("x", START + timedelta(hours=1), tokens=2),
        now=NOW,
    )
    assert (len(result.stored), result.duplicates) == (1, 1)
    assert usage(m) == 1


def test_events_of_unknown_customers_count_once_the_customer_exists():
    m = MeterFactory()
    ingest(event("n1", START + timedelta(days=1), customer="newco", tokens=5), now=NOW)
    assert usage(m, customer="newco") == 5


def test_missing_or_non_numeric_field_is_refused_for_meters_the_event_feeds():
    MeterFactory(filters=[{"key": "model", "values": ["o1"]}])
    with pytest.raises(EventRejected, match="'tokens' is missing"):
        ingest(event("bad", START, model="o1"), now=NOW)
    with pytest.raises(EventRejected, match="'tokens' is not a number"):
        ingest(event("bad", START, model="o1", tokens="many"), now=NOW)
    ingest(event("other-model", START, model="gpt", tokens="many"), now=NOW)  # feeds no meter
    assert Event.objects.count() == 1


def test_windows_split_usage_by_day():
    m = MeterFactory()
    ingest(
        event("1", START + timedelta(hours=3), tokens=1),
        event("2", START + timedelta(hours=5), tokens=2),
        event("3", START + timedelta(days=1, hours=1), tokens=4),
        now=NOW,
    )
    windows = meter_usage_windows(
        meter=m, external_customer_id="acme", start=START, end=END, window_size="DAY"
    )
    assert windows == [(START, Decimal(3)), (START + timedelta(days=1), Decimal(4))]


def test_rebuild_counts_events_sent_before_the_meter_existed():
    first = MeterFactory()
    ingest(event("1", START + timedelta(days=1), tokens=10, model="o1"), now=NOW)
    late_meter = MeterFactory(
        filters=[{"key": "model", "values": ["o1"]}], feature__lookup_key="late", rollups=False
    )
    assert not UsageRollup.objects.filter(meter=late_meter).exists()
    assert not rollups_ready(late_meter)
    assert usage(late_meter) == 10  # read from raw events until rebuilt
    assert rollups_refresh(settle_seconds=0) == 1
    assert rollups_ready(late_meter) and rollups_ready(first)
    assert UsageRollup.objects.filter(meter=late_meter).get().value_sum == 10
    assert usage(late_meter) == 10
    assert usage(first) == 10


def test_changing_a_meter_marks_its_rollups_stale_until_rebuilt():
    m = MeterFactory()
    ingest(
        event("1", START + timedelta(days=1), tokens=10, model="a"),
        event("2", START + timedelta(days=1), tokens=5, model="b"),
        now=NOW,
    )
    assert rollups_ready(m) and usage(m) == 15
    m.filters = [{"key": "model", "values": ["a"]}]
    m.save()
    assert not rollups_ready(m)
    assert usage(m) == 10
    assert meter_rollups_rebuild(meter=m) == 1
    assert rollups_ready(m) and usage(m) == 10


def test_daily_windows_add_edge_hours_to_the_same_day():
    m = MeterFactory()
    day = START + timedelta(days=2)
    ingest(
        event("edge", day + timedelta(minutes=40), tokens=1),
        event("whole", day + timedelta(hours=5), tokens=2),
        event("next", day + timedelta(days=1, hours=3), tokens=4),
        now=NOW,
    )
    windows = meter_usage_windows(
        meter=m,
        external_customer_id="acme",
        start=day + timedelta(minutes=30),
        end=END,
        window_size="DAY",
    )
    raw = meter_usage_windows(
        meter=m,
        external_customer_id="acme",
        use_rollups=False,
        start=day + timedelta(minutes=30),
        end=END,
        window_size="DAY",
    )
    assert windows == raw == [(day, Decimal(3)), (day + timedelta(days=1), Decimal(4))]


def test_properties_are_stored_as_sent_even_beyond_64_bit_integers():
    MeterFactory()
    big = 10**30 + 1
    ingest(event("big", START + timedelta(days=1), tokens=1, serial=big, ratio=0.1), now=NOW)
    assert Event.objects.get().properties == {"tokens": 1, "serial": big, "ratio": 0.1}
