"""Issue 9 item 1: every event of a finalized period that its meters count is either on the
invoice or late usage, never both, never neither, whatever commits around finalization."""

import os
import random
import threading
import time
from datetime import timedelta
from decimal import Decimal

import pytest
from django.db import connection, transaction
from django.utils import timezone
from rest_framework.test import APIClient

from billing.models import Invoice
from billing.selectors import invoice_late_usage, late_usage
from billing.services import invoice_finalize
from catalog.models import Meter, Price
from metering.ingestion import event_parse, events_ingest, meters_by_event_name
from metering.models import Event
from metering.rollups import rollups_fold
from metering.services import api_key_create
from tests.factories import (
    CustomerFactory,
    MeterFactory,
    PlanFactory,
    PriceFactory,
    SubscriptionFactory,
    ingest,
)


def require_postgresql():
    if connection.vendor == "postgresql":
        return
    reason = "interleaving tests need PostgreSQL (DATABASE_URL=postgres://…; .ci/run sets it)"
    if os.environ.get("CI"):
        pytest.fail(reason)
    pytest.skip(reason)


@pytest.fixture
def billed():
    """acme on a plan with a SUM price ($15 per million tokens, pro rata) and a MAX price
    ($2 per unit of peak concurrency), in a period that began a day ago."""
    plan = PlanFactory()
    tokens = MeterFactory(filters=[{"key": "model", "values": ["o1"]}])
    peak = MeterFactory(event_name="tokens", aggregation=Meter.Aggregation.MAX, field="peak")
    PriceFactory(plan=plan, meter=tokens, amount=Decimal(15), round=Price.Round.NONE)
    PriceFactory(
        plan=plan, meter=peak, billing_model=Price.BillingModel.FLAT_FEE, amount=Decimal(2)
    )
    day_ago = timezone.now() - timedelta(days=1)
    return SubscriptionFactory(
        customer=CustomerFactory(external_id="acme"),
        plan=plan,
        start_date=day_ago,
        billing_anchor=day_ago,
    )


def event(n: int, tokens: int, *, peak: int = 1, model: str = "o1") -> dict:
    return {
        "event_id": f"e-{n}",
        "event_name": "tokens",
        "external_customer_id": "acme",
        "timestamp": (timezone.now() - timedelta(hours=1)).isoformat(),
        "properties": {"model": model, "tokens": tokens, "peak": peak},
    }


def draft(subscription) -> Invoice:
    return Invoice.objects.get(subscription=subscription, invoice_status="DRAFT")


def lines_by_field(invoice):
    return {line.meter_definition["field"]: line for line in invoice.line_items.all()}


@pytest.mark.django_db
def test_late_usage_per_line_through_the_api(billed):
    client = APIClient()
    client.credentials(HTTP_X_API_KEY=api_key_create(name="t")[1])
    # A draft has no late usage: its usage is still being billed.
    answer = client.get(f"/v1/invoices/{draft(billed).pk}/late_usage")
    assert answer.status_code == 400
    assert "still being billed" in answer.json()["error"]["message"]

    ingest(event(1, 1_000_000, peak=3), event(2, 500_000, peak=2))
    invoice = invoice_finalize(invoice=draft(billed))
    lines = lines_by_field(invoice)
    assert (lines["tokens"].quantity, lines["tokens"].event_count) == (1_500_000, 2)
    assert (lines["peak"].quantity, lines["peak"].amount) == (3, Decimal("6.00"))

    ingest(event(3, 2_000_000, peak=5), event(4, 1, peak=1), event(5, 7, model="gpt-4o"))

    body = client.get(f"/v1/invoices/{invoice.pk}/late_usage").json()
    assert body["invoice_id"] == invoice.pk and body["usage_fence"] == invoice.usage_fence
    by_meter = {item["meter_id"]: item for item in body["line_items"]}
    tokens_late = by_meter[lines["tokens"].meter_id]
    assert tokens_late["invoiced_quantity"] == "1500000"
    assert tokens_late["invoiced_event_count"] == 2
    # The gpt-4o event is not counted by this line's meter (model: o1): not late for it.
    assert tokens_late["late_event_count"] == 2
    assert tokens_late["late_quantity"] == "2000001"
    assert tokens_late["late_amount"] == "30.00"  # $15/M pro rata: 22.500015 - 22.50 → 30.00
    peak_late = by_meter[lines["peak"].meter_id]
    assert peak_late["late_event_count"] == 3  # MAX counts every event with a peak
    assert (peak_late["late_quantity"], peak_late["late_amount"]) == ("2", "4.00")
    assert body["late_event_count"] == 5 and body["late_amount"] == "34.00"


@pytest.mark.django_db
def test_late_usage_follows_the_lines_snapshot_not_the_current_meter(billed):
    ingest(event(1, 10))
    invoice = invoice_finalize(invoice=draft(billed))
    ingest(event(2, 20))
    meter = Meter.objects.get(field="tokens")
    meter.filters = [{"key": "model", "values": ["gpt-4o"]}]  # the operator changes the meter
    meter.save()
    late = {
        item.line.meter_definition["field"]: item
        for item in invoice_late_usage(invoice=invoice).lines
    }
    assert (late["tokens"].event_count, late["tokens"].quantity) == (1, 20)


@pytest.mark.django_db
def test_events_stored_before_finalization_are_billed_whatever_their_clock_says(billed):
    """The old rule compared ingested_at with finalized_at: an event stamped before the
    invoice closed but stored after it was in neither place."""
    ingest(event(1, 10))
    invoice = invoice_finalize(invoice=draft(billed))
    stamped_early = event_parse(
        event(2, 20), meters=meters_by_event_name(), now=invoice.finalized_at - timedelta(seconds=1)
    )
    events_ingest(events=[stamped_early])
    Event.objects.filter(event_id="e-2").update(ingested_at=invoice.finalized_at - timedelta(1))
    rollups_fold()
    [report] = late_usage()
    assert report.invoice == invoice and report.event_count == 2  # both of its meters count it


# Interleavings on PostgreSQL: two connections, each in its own thread.


def in_thread(target, *args):
    """Run ``target`` in a thread with its own database connection; return a joinable."""
    outcome = {}

    def run():
        try:
            outcome["value"] = target(*args)
        except Exception as error:  # reported by the test
            outcome["error"] = error
        finally:
            connection.close()

    thread = threading.Thread(target=run)
    thread.start()
    thread.outcome = outcome
    return thread


def finish(thread, timeout=30):
    thread.join(timeout)
    assert not thread.is_alive(), "the thread is stuck"
    if "error" in thread.outcome:
        raise thread.outcome["error"]
    return thread.outcome.get("value")


def parsed(*raws):
    meters = meters_by_event_name()
    return [event_parse(raw, meters=meters, now=timezone.now()) for raw in raws]


@pytest.mark.django_db(transaction=True)
def test_ingest_in_flight_when_finalize_starts_is_billed(billed):
    require_postgresql()
    ingest(event(1, 10))
    stored, release = threading.Event(), threading.Event()

    def slow_ingest():
        with transaction.atomic():
            events_ingest(events=parsed(event(2, 20)))
            stored.set()
            release.wait(10)  # inserted, not committed

    ingesting = in_thread(slow_ingest)
    assert stored.wait(10)
    open_draft = draft(billed)
    finalizing = in_thread(lambda: invoice_finalize(invoice=open_draft))
    time.sleep(0.5)
    assert finalizing.is_alive(), f"finalize must wait for ingest in flight: {finalizing.outcome}"
    release.set()
    finish(ingesting)
    invoice = finish(finalizing)
    assert lines_by_field(invoice)["tokens"].quantity == 30
    assert invoice_late_usage(invoice=invoice).event_count == 0


@pytest.mark.django_db(transaction=True)
def test_ingest_that_starts_while_finalize_reads_is_late(billed):
    require_postgresql()
    ingest(event(1, 10))
    fenced, release = threading.Event(), threading.Event()

    def slow_finalize():
        with transaction.atomic():
            invoice = invoice_finalize(invoice=draft(billed))
            fenced.set()
            release.wait(10)  # read and fenced, not committed
        return invoice

    finalizing = in_thread(slow_finalize)
    assert fenced.wait(10)
    ingesting = in_thread(lambda: events_ingest(events=parsed(event(2, 20))))
    time.sleep(0.5)
    assert ingesting.is_alive(), "the customer's ingest must wait for finalization to commit"
    release.set()
    invoice = finish(finalizing)
    finish(ingesting)
    assert lines_by_field(invoice)["tokens"].quantity == 10
    late = {i.line.meter_definition["field"]: i for i in invoice_late_usage(invoice=invoice).lines}
    assert (late["tokens"].event_count, late["tokens"].quantity) == (1, 20)


@pytest.mark.django_db(transaction=True)
def test_other_customers_ingest_does_not_wait_for_finalize(billed):
    require_postgresql()
    CustomerFactory(external_id="globex")
    fenced, release = threading.Event(), threading.Event()

    def slow_finalize():
        with transaction.atomic():
            invoice_finalize(invoice=draft(billed))
            fenced.set()
            release.wait(10)

    finalizing = in_thread(slow_finalize)
    assert fenced.wait(10)
    other = next(
        n for n in range(1000) if _slot(f"globex-{n}") != _slot("acme")
    )  # a customer in another lock slot
    raw = {**event(9, 5), "external_customer_id": f"globex-{other}"}
    ingesting = in_thread(lambda: events_ingest(events=parsed(raw)))
    finish(ingesting, timeout=5)
    release.set()
    finish(finalizing)


def _slot(external_id):
    from metering.fence import _slot as slot

    return slot(external_id)


@pytest.mark.django_db(transaction=True)
def test_stress_finalize_during_bulk_ingest_loses_and_doubles_nothing(billed):
    """Four connections send batches while a fifth finalizes mid-stream: the invoice's
    quantity plus the late quantity is exactly what was sent, and so are the counts."""
    require_postgresql()
    rng = random.Random(9)
    batches = [
        [event(b * 100 + i, rng.randint(1, 10_000), peak=rng.randint(1, 50)) for i in range(100)]
        for b in range(40)
    ]
    sent = sum(e["properties"]["tokens"] for batch in batches for e in batch)
    # A quarter before, a quarter racing finalize, the rest after it: both sides non-empty.
    halfway, finalized = threading.Barrier(5), threading.Event()

    def sender(mine):
        for n, batch in enumerate(mine):
            if n == len(mine) // 4:
                halfway.wait(60)
            if n == len(mine) // 2:
                finalized.wait(60)
            events_ingest(events=parsed(*batch))

    senders = [in_thread(sender, batches[k::4]) for k in range(4)]
    halfway.wait(60)
    invoice = invoice_finalize(invoice=draft(billed))
    finalized.set()
    for thread in senders:
        finish(thread, timeout=120)

    line = lines_by_field(invoice)["tokens"]
    late = {i.line.meter_definition["field"]: i for i in invoice_late_usage(invoice=invoice).lines}
    assert line.quantity + late["tokens"].quantity == sent
    assert line.event_count + late["tokens"].event_count == 4000
    assert late["tokens"].event_count >= 2000 and line.event_count >= 800
    peaks = [e["properties"]["peak"] for batch in batches for e in batch]
    assert lines_by_field(invoice)["peak"].quantity + late["peak"].quantity == max(peaks)


@pytest.mark.django_db
def test_the_report_and_the_api_agree_for_a_meter_that_never_resets():
    """A cumulative meter's line counts from the subscription's start, so an event of an
    earlier period stored after a later invoice closed is late for that invoice too."""
    from billing.selectors import late_events

    plan = PlanFactory()
    meter = MeterFactory(reset_usage=Meter.ResetUsage.NEVER)
    PriceFactory(plan=plan, meter=meter, amount=Decimal(1), round=Price.Round.NONE)
    start = timezone.now() - timedelta(days=70)
    subscription = SubscriptionFactory(
        customer=CustomerFactory(external_id="acme"),
        plan=plan,
        start_date=start,
        billing_anchor=start,
    )
    closed = invoice_finalize(invoice=draft(subscription))  # the third month's
    assert closed.period_start > start + timedelta(days=55)
    ingest({**event(1, 1_000_000), "timestamp": (start + timedelta(days=1)).isoformat()})
    report = {g.invoice.pk: g.event_count for g in late_usage()}
    assert report.get(closed.pk) == invoice_late_usage(invoice=closed).event_count == 1
    [group] = [g for g in late_usage() if g.invoice.pk == closed.pk]
    assert [e.event_id for e in late_events(late=group, limit=5)] == ["e-1"]
    assert late_events(late=group, limit=0) == []


@pytest.mark.django_db
def test_a_draft_voided_unread_has_no_late_usage(billed):
    from billing.services import invoice_void

    voided = invoice_void(invoice=draft(billed))
    ingest(event(1, 10))
    assert invoice_late_usage(invoice=voided).event_count == 0
    assert late_usage() == []
