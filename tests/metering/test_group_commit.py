"""Single events from concurrent requests share commits, and each still returns committed."""

import threading
from datetime import UTC, datetime

import pytest
from django.db import connection
from django.db.models import Sum

from metering import ingestion
from metering.ingestion import GroupCommit, event_parse, meters_by_event_name
from metering.models import Event, UnfoldedUsage, UsageRollup
from tests.factories import MeterFactory

pytestmark = pytest.mark.django_db(transaction=True)

NOW = datetime(2026, 11, 27, 12, tzinfo=UTC)


def parsed(event_id: str, tokens=1):
    raw = {
        "event_id": event_id,
        "event_name": "tokens",
        "external_customer_id": "acme",
        "timestamp": "2026-11-27T11:00:00Z",
        "properties": {"tokens": tokens},
    }
    return event_parse(raw, meters=meters_by_event_name(), now=NOW)


def submit_concurrently(group: GroupCommit, events, threads=8):
    results, errors = {}, []
    start = threading.Barrier(threads)
    chunks = [events[i::threads] for i in range(threads)]

    def run(chunk):
        start.wait()
        try:
            for event in chunk:
                results[event.event_id] = group.submit(event)
        except Exception as error:
            errors.append(error)
        finally:
            connection.close()

    workers = [threading.Thread(target=run, args=(chunk,)) for chunk in chunks]
    for w in workers:
        w.start()
    for w in workers:
        w.join(timeout=60)
    return results, errors


def test_concurrent_single_events_are_all_stored_once_in_fewer_commits(monkeypatch):
    MeterFactory()
    commits = []
    real = ingestion.events_ingest

    def counting(*, events):
        commits.append(len(events))
        return real(events=events)

    monkeypatch.setattr(ingestion, "events_ingest", counting)  # counts, then does the real work
    events = [parsed(f"e{i}") for i in range(200)]
    results, errors = submit_concurrently(GroupCommit(), events)
    assert not errors
    assert results == {f"e{i}": True for i in range(200)}
    assert Event.objects.count() == 200
    folded = UsageRollup.objects.aggregate(n=Sum("event_count"))["n"] or 0
    assert folded + UnfoldedUsage.objects.count() == 200  # each fed its meter once
    assert sum(commits) == 200
    assert len(commits) < 200  # requests that arrived during a commit shared the next one


def test_a_replay_through_the_group_is_a_duplicate():
    MeterFactory()
    group = GroupCommit()
    assert group.submit(parsed("once")) is True
    assert group.submit(parsed("once", tokens=99)) is False
    assert Event.objects.get().properties == {"tokens": 1}


def test_a_failed_commit_fails_every_request_in_it_and_stores_nothing():
    MeterFactory()
    events = [parsed(f"x{i}") for i in range(20)]
    events[7].properties_json = "{not json"  # PostgreSQL and SQLite both refuse to store it
    group = GroupCommit()
    results, errors = submit_concurrently(group, events, threads=4)
    assert errors  # the batch holding the bad row raised in each of its requests
    stored = set(Event.objects.values_list("event_id", flat=True))
    assert "x7" not in stored
    assert stored == {eid for eid, ok in results.items() if ok}  # reported stored = stored
    assert group.submit(parsed("after")) is True  # the group recovers
