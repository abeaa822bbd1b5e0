"""Bulk (all or nothing) and batch (each event its result) as services, without HTTP."""

from datetime import UTC, datetime

import pytest

from metering.ingestion import (
    BulkRejected,
    EventRejected,
    event_list,
    events_batch_ingest,
    events_bulk_ingest,
)
from metering.models import Event
from tests.factories import MeterFactory

pytestmark = pytest.mark.django_db

NOW = datetime(2026, 11, 27, 12, tzinfo=UTC)


def raw(event_id, tokens=1):
    return {
        "event_id": event_id,
        "event_name": "tokens",
        "external_customer_id": "acme",
        "timestamp": "2026-11-27T11:00:00Z",
        "properties": {"tokens": tokens},
    }


def test_a_bulk_with_one_bad_event_stores_none_and_names_each_bad_one():
    MeterFactory()
    with pytest.raises(BulkRejected) as refusal:
        events_bulk_ingest(raws=[raw("a"), raw("b", "x"), raw("c", None)], now=NOW)
    assert [r["index"] for r in refusal.value.rejected] == [1, 2]
    assert "2 of 3 events are invalid; none were stored" in str(refusal.value)
    assert not Event.objects.exists()


def test_a_batch_stores_the_good_ones_and_says_what_became_of_each():
    MeterFactory()
    events_bulk_ingest(raws=[raw("old")], now=NOW)
    results = events_batch_ingest(
        raws=[raw("new"), raw("old"), raw("bad", "x"), raw("new")], now=NOW
    )
    assert [r["status"] for r in results] == ["accepted", "duplicate", "rejected", "duplicate"]
    assert set(Event.objects.values_list("event_id", flat=True)) == {"old", "new"}


@pytest.mark.parametrize("body", [{}, {"events": []}, {"events": "x"}, [], {"events": [{}] * 1001}])
def test_a_body_without_1_to_1000_events_is_refused(body):
    with pytest.raises(EventRejected):
        event_list(body)
