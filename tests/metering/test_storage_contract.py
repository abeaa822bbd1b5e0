"""The storage contract: every ``EventStore`` behaves the same, whatever the database.

Each case runs on the store the connection selects (PostgreSQL under CI, SQLite under
``make test``) and, on PostgreSQL, on the portable store too, so both run under CI. Raw
events aggregated in Python (``EventStore.raw_partials``) are the reference.
"""

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from django.db import connection, transaction

from catalog.models import Meter
from metering.aggregation import Partial, quantity
from metering.ingestion import event_parse, meters_by_event_name
from metering.models import Event, UnfoldedUsage, UsageRollup
from metering.storage import PortableStore, PostgresStore, Selection, hour_of, storage
from tests.factories import MeterFactory

pytestmark = pytest.mark.django_db

START = datetime(2026, 10, 1, tzinfo=UTC)
END = datetime(2026, 10, 4, tzinfo=UTC)
NOW = datetime(2026, 11, 27, tzinfo=UTC)
A = Meter.Aggregation


def _stores():
    stores = [pytest.param("selected", id="selected")]
    if connection.vendor == "postgresql":
        stores.append(pytest.param("portable", id="portable"))
    return stores


@pytest.fixture(params=_stores())
def store(request):
    if request.param == "portable":
        return PortableStore()
    return storage()


def test_the_factory_picks_the_store_of_the_connection():
    expected = PostgresStore if connection.vendor == "postgresql" else PortableStore
    assert isinstance(storage(), expected)


def raw(event_id, at, customer="acme", **properties):
    return {
        "event_id": event_id,
        "event_name": "tokens",
        "external_customer_id": customer,
        "timestamp": at.isoformat(),
        "properties": properties,
    }


# Over three days and two customers: several events in some hours, a filtered-out model,
# numbers as JSON numbers and as text, a COUNT_UNIQUE value that is a number.
EVENTS = [
    raw("e1", START + timedelta(minutes=5), tokens=10, user="u1", model="gpt"),
    raw("e2", START + timedelta(minutes=50), tokens="2.5", user="u2", model="gpt"),
    raw("e3", START + timedelta(hours=1, minutes=1), tokens=7, user=7, model="gpt"),
    raw("e4", START + timedelta(hours=1, minutes=2), tokens=3, user="u1", model="claude"),
    raw("e5", START + timedelta(days=1, hours=5), tokens="40", user="u3", model="gpt"),
    raw("e6", START + timedelta(days=2, hours=23, minutes=59), tokens=1, user="u1", model="gpt"),
    raw("e7", START + timedelta(days=1), customer="globex", tokens=1000, user="u9", model="gpt"),
    raw("e8", START + timedelta(days=1, minutes=3), customer="globex", tokens=5, model="gpt"),
]

AGGREGATIONS = [
    (A.COUNT, None),
    (A.SUM, "tokens"),
    (A.AVG, "tokens"),
    (A.MAX, "tokens"),
    (A.COUNT_UNIQUE, "user"),
    (A.LATEST, "tokens"),
    (A.SUM_WITH_MULTIPLIER, "tokens"),
    (A.WEIGHTED_SUM, "tokens"),
]


def make_meter(aggregation, field, **kwargs):
    return MeterFactory(
        aggregation=aggregation,
        field=field or "",
        multiplier=Decimal("1.5") if aggregation == A.SUM_WITH_MULTIPLIER else None,
        filters=[{"key": "model", "values": ["gpt"]}],
        rollups=False,
        **kwargs,
    )


def parsed(raws):
    """Events as ingest parses them; those a meter cannot read (e8 has no user) are left out
    of COUNT_UNIQUE's rows by ``event_parse`` refusing them, so parse with care."""
    meters = meters_by_event_name()
    events = []
    for item in raws:
        try:
            events.append(event_parse(item, meters=meters, now=NOW))
        except ValueError:
            continue
    return events


def insert(store, raws):
    return store.events_insert(events=parsed(raws), now=NOW)


def fold_all(store, limit=3):
    moved = 0
    while True:
        with transaction.atomic():
            store.fold_lock()
            chunk = store.fold_chunk(limit=limit)
        moved += chunk
        if chunk == 0:
            return moved


def reference(store, meter, customer="acme", **selection):
    """Raw events by hour, aggregated in Python."""
    return store.raw_partials(
        meter=meter,
        selection=Selection(customer=customer, **selection),
        key=lambda _, moment: hour_of(moment),
    )


def summary(meter, partials: dict, start=START, end=END) -> dict:
    """Each key's (events, quantity), for comparing partials of any shape."""
    return {
        key: (p.count, quantity(meter, p, start, end)) for key, p in partials.items() if p.count
    }


def merged(*parts: dict) -> dict:
    found: dict = {}
    for part in parts:
        for key, partial in part.items():
            found.setdefault(key, Partial()).merge(partial)
    return found


def one(partials) -> Partial:
    total = Partial()
    for partial in partials:
        total.merge(partial)
    return total


def test_insert_stores_each_event_once_and_the_first_write_wins(store):
    meter = make_meter(A.SUM, "tokens")
    assert insert(store, EVENTS[:3]) == {"e1", "e2", "e3"}
    replay = raw("e1", START, tokens=999, model="gpt")
    assert insert(store, [replay, EVENTS[3]]) == {"e4"}
    assert insert(store, [replay]) == set()
    assert Event.objects.count() == 4
    assert Event.objects.get(event_id="e1").properties["tokens"] == 10
    # One unfolded row per (new event, meter it feeds): e4 is another model's.
    fed = UnfoldedUsage.objects.filter(meter=meter)
    assert sorted(fed.values_list("value", flat=True)) == [Decimal("2.5"), 7, 10]


def test_insert_without_meters_fed_stores_the_events(store):
    make_meter(A.COUNT, None)
    assert insert(store, [raw("x1", START, model="other")]) == {"x1"}
    assert insert(store, [raw("x1", START, model="other")]) == set()
    assert UnfoldedUsage.objects.count() == 0


def test_fold_moves_every_row_exactly_once(store):
    sums = make_meter(A.SUM, "tokens")
    uniques = make_meter(A.COUNT_UNIQUE, "user", event_name="tokens")
    insert(store, EVENTS)
    rows = UnfoldedUsage.objects.count()
    assert fold_all(store) == rows
    assert UnfoldedUsage.objects.count() == 0
    assert fold_all(store) == 0
    for meter in (sums, uniques):
        for customer in ("acme", "globex"):
            folded = store.rollup_hours(meter=meter, customer=customer, start=START, end=END)
            expected = reference(store, meter, customer)
            assert summary(meter, folded) == summary(meter, expected)


def test_rebuild_equals_raw_and_drops_unfolded_rows(store):
    meter = make_meter(A.SUM, "tokens")
    insert(store, EVENTS)
    with transaction.atomic():
        store.fold_lock()
        count = store.meter_rebuild(meter=meter)
    assert count == 7  # the gpt events
    assert not UnfoldedUsage.objects.filter(meter=meter).exists()
    for customer in ("acme", "globex"):
        rebuilt = store.rollup_hours(meter=meter, customer=customer, start=START, end=END)
        assert summary(meter, rebuilt) == summary(meter, reference(store, meter, customer))
    with transaction.atomic():
        store.fold_lock()
        assert store.meter_rebuild(meter=meter) == 7  # again: the same, not doubled
    assert UsageRollup.objects.filter(meter=meter).count() == 5  # (customer, hour) pairs


@pytest.mark.parametrize(("aggregation", "field"), AGGREGATIONS)
def test_partial_reads_equal_raw_aggregation(store, aggregation, field):
    meter = make_meter(aggregation, field)
    insert(store, EVENTS[:4])
    fold_all(store)
    insert(store, EVENTS[4:])  # left unfolded: reads add them
    whole = {"meter": meter, "customer": "acme", "start": START, "end": END}
    expected = reference(store, meter)
    # Raw by hour, in the database where it can.
    hourly = store.hourly_partials(meter=meter, selection=Selection(customer="acme"))
    assert summary(meter, {b: p for (_, b), p in hourly.items()}) == summary(meter, expected)
    # By hour: rollups and unfolded rows.
    by_hour = merged(store.rollup_hours(**whole), store.unfolded_by_hour(**whole))
    assert summary(meter, by_hour) == summary(meter, expected)
    # A total.
    total = one([store.rollup_total(**whole), *store.unfolded_by_hour(**whole).values()])
    assert summary(meter, {0: total}) == summary(meter, {0: one(expected.values())})
    # By day, where the aggregation can be summed per window.
    if aggregation not in (A.LATEST, A.COUNT_UNIQUE):
        days = store.rollup_windows(**whole, size="DAY")
        for moment, partial in store.unfolded_by_hour(**whole).items():
            days.setdefault(moment.replace(hour=0), Partial()).merge(partial)
        by_day: dict = {}
        for moment, partial in expected.items():
            by_day.setdefault(moment.replace(hour=0), Partial()).merge(partial)
        assert summary(meter, days) == summary(meter, by_day)


@pytest.mark.parametrize(("aggregation", "field"), AGGREGATIONS)
def test_late_usage_reads_only_events_stored_after_an_id(store, aggregation, field):
    meter = make_meter(aggregation, field)
    insert(store, EVENTS[:3])
    fence = store.usage_fence_peek()
    assert fence == Event.objects.order_by("-id").values_list("id", flat=True).first()
    insert(store, EVENTS[3:])
    late = store.hourly_partials(meter=meter, selection=Selection(customer="acme", after_id=fence))
    expected = reference(store, meter, after_id=fence)
    assert summary(meter, {b: p for (_, b), p in late.items()}) == summary(meter, expected)
    assert sum(p.count for p in late.values()) == 2  # e5 and e6; e4 is another model's


def test_the_fence_locks_within_a_transaction(store):
    make_meter(A.COUNT, None)
    with transaction.atomic():
        store.ingest_fence_share(slots=[1, 5])
    with transaction.atomic():
        store.usage_fence_lock(slot=5)
        assert store.usage_fence_peek() == 0


def test_property_filters_in_the_database_match_the_python_rule(store):
    from metering.matching import events_feeding

    meter = make_meter(A.SUM, "tokens")
    insert(store, EVENTS)
    fed = events_feeding(Event.objects.all(), meter=meter)
    assert sorted(fed.values_list("event_id", flat=True)) == sorted(
        r["event_id"] for r in EVENTS if r["properties"]["model"] == "gpt"
    )


def test_property_keys_are_every_key_of_the_selected_events_sorted(store):
    make_meter(A.SUM, "tokens")
    insert(store, [*EVENTS, raw("k1", START, customer="globex", tokens=1, model="gpt", Zeta=1)])
    insert(store, [raw("k2", START, customer="initech", tokens=1, model="gpt", **{"a,b": "x"})])
    acme = Event.objects.filter(external_customer_id="acme").order_by("-timestamp")
    assert store.property_keys(events=acme) == ["model", "tokens", "user"]
    globex = Event.objects.filter(external_customer_id="globex")
    assert store.property_keys(events=globex) == ["Zeta", "model", "tokens", "user"]
    assert store.property_keys(events=Event.objects.filter(event_id="k2")) == [
        "a,b",
        "model",
        "tokens",
    ]
    assert store.property_keys(events=Event.objects.none()) == []
