"""``meter_readings``: several meters of one customer read together, and reused only while
the customer's usage has not moved."""

from datetime import timedelta
from decimal import Decimal

import pytest
from django.utils import timezone

from metering.rollups import rollups_fold
from metering.selectors import meter_reading, meter_readings
from tests.factories import MeterFactory, ingest

pytestmark = pytest.mark.django_db


@pytest.fixture
def meters():
    return [
        MeterFactory(aggregation="SUM", field="v"),
        MeterFactory(aggregation="COUNT", field=""),
        MeterFactory(aggregation="MAX", field="v"),
        MeterFactory(aggregation="AVG", field="v"),
        MeterFactory(aggregation="LATEST", field="v"),
        MeterFactory(aggregation="COUNT_UNIQUE", field="who"),
        MeterFactory(aggregation="SUM_WITH_MULTIPLIER", field="v", multiplier=Decimal("0.5")),
        MeterFactory(aggregation="WEIGHTED_SUM", field="v"),
        MeterFactory(aggregation="SUM", field="v", filters=[{"key": "who", "values": ["a"]}]),
    ]


def event(n, at, v, who="a"):
    return {
        "event_id": f"r-{n}",
        "event_name": "tokens",
        "external_customer_id": "acme",
        "timestamp": at.isoformat(),
        "properties": {"v": str(v), "who": who},
    }


def one_by_one(windows):
    return [
        meter_reading(meter=m, external_customer_id="acme", start=s, end=e) for m, s, e in windows
    ]


def test_readings_together_equal_each_read_alone_folded_or_not(meters):
    now = timezone.now()
    start, end = now - timedelta(hours=5, minutes=17), now + timedelta(hours=2, minutes=5)
    # Before the window, both edges, whole hours; some folded, some not.
    spread = [start + timedelta(minutes=23 * n - 30) for n in range(14)]
    ingest(*(event(n, at, n % 7 + 1, "ab"[n % 2]) for n, at in enumerate(spread)))
    ingest(event(100, now - timedelta(minutes=3), 9, "c"), fold=False)
    windows = [(m, start, end) for m in meters] + [(meters[0], start + timedelta(hours=1), end)]
    together = meter_readings(external_customer_id="acme", windows=windows)
    assert together == one_by_one(windows)
    assert together[0].quantity == sum(n % 7 + 1 for n in range(2, 14)) + 9  # not the first two


def test_a_new_event_is_read_at_once_and_a_fold_changes_nothing(meters):
    now = timezone.now()
    start, end = now - timedelta(hours=3, minutes=10), now + timedelta(hours=1)
    windows = [(m, start, end) for m in meters[:2]]
    ingest(event(1, now - timedelta(hours=2), 5))
    first = meter_readings(external_customer_id="acme", windows=windows)
    assert [r.quantity for r in first] == [5, 1]
    ingest(event(2, now - timedelta(hours=3, minutes=5), 4), fold=False)  # the start edge
    second = meter_readings(external_customer_id="acme", windows=windows)
    assert [r.quantity for r in second] == [9, 2]
    rollups_fold()
    assert meter_readings(external_customer_id="acme", windows=windows) == second
    assert second == one_by_one(windows)


def test_an_unchanged_usage_is_not_read_again(meters, django_assert_max_num_queries):
    now = timezone.now()
    windows = [(m, now - timedelta(hours=3, minutes=10), now) for m in meters]
    ingest(event(1, now - timedelta(hours=2), 5))
    meter_readings(external_customer_id="acme", windows=windows)
    with django_assert_max_num_queries(2):  # which meters are built, and the usage state
        again = meter_readings(external_customer_id="acme", windows=windows)
    assert again == one_by_one(windows)
