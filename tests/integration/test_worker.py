"""Ingest through the API and watch a real worker keep the proposed invoice current."""

import time
from datetime import timedelta
from decimal import Decimal

import pytest
from django.db import IntegrityError
from django.db.models import Sum
from django.utils import timezone

from billing.models import Invoice
from metering.models import UnfoldedUsage, UsageRollup
from tests.integration.conftest import draft_total, post, tokens, wait_for

pytestmark = pytest.mark.integration


def test_an_ingested_event_reaches_the_persisted_draft(setup):
    client, subscription = setup
    assert draft_total(subscription) == 0
    sent = time.monotonic()
    assert post(client, "events", tokens("one", 2_000_000)).status_code == 202

    def draft_is_current():
        return draft_total(subscription) == Decimal("30.00")

    wait_for(draft_is_current, timeout=10)
    assert time.monotonic() - sent < 10
    post(client, "events", tokens("two", 1, prompt_type="output"))

    def output_counted():
        return draft_total(subscription) == Decimal("90.00")

    wait_for(output_counted, timeout=10)
    # The worker folded both events into the rollups, which now hold them.
    wait_for(lambda: not UnfoldedUsage.objects.exists(), timeout=10)
    assert UsageRollup.objects.filter(external_customer_id="acme").count() == 2


def test_draft_converges_within_5_s_of_restarting_a_worker_killed_mid_burst(setup, worker):
    """Issue 9 item 2. The killed worker held the burst's recompute and fold, unacknowledged,
    and with production's visibility timeout they come back only after a minute; the
    requests the burst made meanwhile saw their flags. The restarted worker requeues every
    pending request as it starts."""
    client, subscription = setup
    worker.stop()
    worker.start(visibility_timeout=60)
    batches = [[tokens(f"b{n}-{i}", 1000) for i in range(500)] for n in range(8)]
    for batch in batches[:4]:
        assert post(client, "events/bulk", {"events": batch}).status_code == 202
    worker.kill()
    for batch in batches[4:]:
        assert post(client, "events/bulk", {"events": batch}).status_code == 202
    # 4,000 events × 1,000 tokens = 4,000,000 tokens = 4 packages of $15.
    worker.start(visibility_timeout=60)
    restarted = time.monotonic()

    def converged():
        return draft_total(subscription) == Decimal("60.00")

    wait_for(converged, timeout=30)
    assert time.monotonic() - restarted < 5
    invoice = Invoice.objects.get(subscription=subscription, invoice_status="DRAFT")
    line = invoice.line_items.get(price__meter__feature__lookup_key="o1-input")
    assert line.quantity == 4_000_000
    # Every event is folded exactly once, whatever the kill interrupted.
    wait_for(lambda: not UnfoldedUsage.objects.exists(), timeout=5)
    folded = UsageRollup.objects.filter(meter=line.price.meter).aggregate(Sum("value_sum"))
    assert folded["value_sum__sum"] == 4_000_000


def test_beat_task_closes_a_due_period_into_a_numbered_immutable_invoice(setup):
    from billing.tasks import periods_close

    client, subscription = setup
    post(client, "events", tokens("c1", 1_500_000))
    wait_for(lambda: draft_total(subscription) == Decimal("30.00"), timeout=10)
    # Bring the period's end into the past, as if a month had gone by.
    end = timezone.now() - timedelta(seconds=1)
    type(subscription).objects.filter(pk=subscription.pk).update(current_period_end=end)
    Invoice.objects.filter(subscription=subscription).update(period_end=end)
    periods_close.delay()

    def finalized():
        return Invoice.objects.filter(subscription=subscription, invoice_status="FINALIZED").first()

    invoice = wait_for(finalized, timeout=20)
    assert invoice.invoice_number.startswith(f"INV-{timezone.now():%Y%m}-")
    assert invoice.total == Decimal("30.00") and invoice.finalized_at is not None
    invoice.total = Decimal("0.01")
    with pytest.raises(IntegrityError, match="closed invoice"):
        invoice.save()
    next_draft = wait_for(
        lambda: Invoice.objects.filter(subscription=subscription, invoice_status="DRAFT").first(),
        timeout=10,
    )
    assert next_draft.period_start == end
