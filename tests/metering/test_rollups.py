"""Folding the event log into rollups after ingest: reads stay exact at any fold lag."""

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from django.utils import timezone

from metering.ingestion import EventRejected
from metering.models import UnfoldedUsage, UsageDistinct, UsageRollup
from metering.rollups import fold_version, meter_rollups_rebuild, rollups_fold
from metering.selectors import consistent_with_folds, meter_usage, meter_usage_windows
from metering.tasks import rollups_fold_request
from tests.factories import MeterFactory, ingest

pytestmark = pytest.mark.django_db

START = datetime(2026, 10, 1, 13, 27, tzinfo=UTC)  # not on the hour: edges and whole hours
END = datetime(2026, 11, 1, 13, 27, tzinfo=UTC)
NOW = datetime(2026, 11, 27, tzinfo=UTC)


def event(event_id, at, customer="acme", **properties):
    return {
        "event_id": event_id,
        "event_name": "tokens",
        "external_customer_id": customer,
        "timestamp": at.isoformat(),
        "properties": properties,
    }


def usage(meter, customer="acme"):
    return meter_usage(meter=meter, external_customer_id=customer, start=START, end=END)


def raw_usage(meter, customer="acme"):
    return meter_usage(
        meter=meter, external_customer_id=customer, start=START, end=END, use_rollups=False
    )


EVENTS = [
    event("1", START + timedelta(minutes=5), tokens=10, user="u1"),  # edge hour
    event("2", START + timedelta(days=3), tokens="40", user="u2"),
    event("3", START + timedelta(days=3, minutes=1), tokens=5, user="u2"),  # same hour as 2
    event("4", START + timedelta(days=20), tokens=30, user="u1"),
    event("5", START + timedelta(days=20), tokens=7, user="u3"),  # LATEST tie: later arrival
    event("6", END - timedelta(minutes=1), tokens=20, user="u3"),  # edge hour
    event("7", START + timedelta(days=4), customer="globex", tokens=1000, user="u9"),
]


@pytest.mark.parametrize(
    ("aggregation", "field", "expected"),
    [
        ("COUNT", "", "6"),
        ("SUM", "tokens", "112"),
        ("AVG", "tokens", "18.66666666666666666666666667"),
        ("MAX", "tokens", "40"),
        ("LATEST", "tokens", "20"),
        ("COUNT_UNIQUE", "user", "3"),
        ("WEIGHTED_SUM", "tokens", None),
    ],
)
def test_usage_is_the_same_before_during_and_after_folding(aggregation, field, expected):
    m = MeterFactory(aggregation=aggregation, field=field)
    ingest(*EVENTS, now=NOW, fold=False)
    assert UnfoldedUsage.objects.count() == len(EVENTS)
    assert not UsageRollup.objects.exists()
    unfolded = usage(m)
    assert unfolded == raw_usage(m)
    if expected is not None:
        assert unfolded == Decimal(expected)

    assert rollups_fold(limit=3) == len(EVENTS)  # three chunks, three transactions
    assert not UnfoldedUsage.objects.exists()
    assert UsageRollup.objects.filter(meter=m).exists()
    assert usage(m) == unfolded
    assert usage(m, customer="globex") == raw_usage(m, customer="globex")


def test_half_folded_windows_equal_raw_events():
    m = MeterFactory()
    ingest(*EVENTS[:3], now=NOW)
    ingest(*EVENTS[3:], now=NOW, fold=False)  # rollups hold some hours, raw events the rest
    for size in ("HOUR", "DAY", "WEEK", "MONTH"):
        windows = meter_usage_windows(
            meter=m, external_customer_id="acme", start=START, end=END, window_size=size
        )
        raw = meter_usage_windows(
            meter=m,
            external_customer_id="acme",
            start=START,
            end=END,
            window_size=size,
            use_rollups=False,
        )
        assert windows == raw, size
        assert sum(q for _, q in windows) == Decimal(112)


def test_count_unique_values_are_folded_per_hour():
    m = MeterFactory(aggregation="COUNT_UNIQUE", field="user")
    ingest(*EVENTS, now=NOW)
    assert set(UsageDistinct.objects.filter(meter=m).values_list("value", flat=True)) == {
        "u1",
        "u2",
        "u3",
        "u9",
    }
    assert usage(m) == 3


def test_a_replayed_event_is_not_unfolded_again():
    m = MeterFactory()
    ingest(EVENTS[1], now=NOW)
    replay = ingest(EVENTS[1], now=NOW, fold=False)
    assert replay.duplicates == 1
    assert not UnfoldedUsage.objects.exists()
    assert usage(m) == 40


def test_a_rebuild_takes_every_event_and_drops_the_meters_unfolded_rows():
    m = MeterFactory()
    other = MeterFactory(feature__lookup_key="other", aggregation="COUNT", field="")
    ingest(*EVENTS[:3], now=NOW)
    ingest(*EVENTS[3:], now=NOW, fold=False)
    assert meter_rollups_rebuild(meter=m) == len(EVENTS)
    assert not UnfoldedUsage.objects.filter(meter=m).exists()
    assert UnfoldedUsage.objects.filter(meter=other).count() == len(EVENTS) - 3
    assert usage(m) == raw_usage(m) == Decimal(112)
    rollups_fold()
    assert usage(m) == raw_usage(m) == Decimal(112)  # nothing counted twice
    assert usage(other) == raw_usage(other) == 6


def test_a_meter_deleted_before_its_usage_is_folded_is_skipped():
    m = MeterFactory()
    kept = MeterFactory(feature__lookup_key="kept", aggregation="COUNT", field="")
    ingest(*EVENTS, now=NOW, fold=False)
    m.delete()
    assert rollups_fold() >= len(EVENTS)
    assert not UnfoldedUsage.objects.exists()
    assert usage(kept) == 6


def test_every_fold_moves_the_version_and_an_empty_one_does_not():
    MeterFactory()
    version = fold_version()
    ingest(EVENTS[0], now=NOW)
    assert fold_version() == version + 1
    assert rollups_fold() == 0
    assert fold_version() == version + 1


def test_a_read_that_straddles_a_fold_is_read_again():
    m = MeterFactory()
    ingest(*EVENTS, now=NOW, fold=False)
    seen = []

    def read():
        rollup_rows = UsageRollup.objects.filter(meter=m).count()
        if not seen:
            rollups_fold()  # a fold commits between this read's queries
        seen.append(rollup_rows)
        return rollup_rows, UnfoldedUsage.objects.count()

    rollup_rows, unfolded = consistent_with_folds(read)
    assert len(seen) == 2 and seen[0] == 0
    assert rollup_rows > 0 and unfolded == 0  # one state: all folded


def test_fold_request_runs_the_task_and_leaves_nothing_pending(settings):
    from metering.tasks import fold_requests

    MeterFactory()
    ingest(EVENTS[0], now=NOW, fold=False)
    rollups_fold_request()  # Celery runs eagerly here, as `make run` does
    assert not UnfoldedUsage.objects.exists()
    assert fold_requests.pending() == []


def test_ingest_asks_for_a_fold_when_it_commits(django_capture_on_commit_callbacks):
    m = MeterFactory()
    with django_capture_on_commit_callbacks(execute=True):
        ingest(*EVENTS, now=NOW, fold=False)
    assert not UnfoldedUsage.objects.exists()
    assert UsageRollup.objects.filter(meter=m).exists()


@pytest.mark.parametrize("text", ["1_000", "١٢", "1e99999", "0x10", "NaN", "", "5\u00a0"])
def test_numbers_must_be_plain_decimal_text_that_postgresql_reads_the_same(text):
    MeterFactory()
    with pytest.raises(EventRejected, match="is not a number"):
        ingest(event("bad", START, tokens=text), now=NOW)


@pytest.mark.parametrize(("text", "value"), [(" 12 ", "12"), ("1e3", "1000"), ("-.5", "-0.5")])
def test_plain_numeric_text_is_read_alike_in_python_and_sql(text, value):
    m = MeterFactory()
    ingest(event("ok", START + timedelta(days=2), tokens=text), now=NOW)
    assert usage(m) == raw_usage(m) == Decimal(value)


def test_a_changed_meter_is_rebuilt_only_once_it_has_settled():
    import time_machine

    from metering.tasks import rollups_refresh

    m = MeterFactory()
    ingest(*EVENTS, now=NOW)
    m.filters = [{"key": "user", "values": ["u1"]}]
    m.save()
    assert rollups_refresh() == 0  # requests may still be parsing with the old filters
    assert usage(m) == raw_usage(m) == Decimal(40)  # read from raw events meanwhile
    with time_machine.travel(timezone.now() + timedelta(seconds=11)):
        assert rollups_refresh() == 1
    assert usage(m) == raw_usage(m) == Decimal(40)
