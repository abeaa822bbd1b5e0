"""Issue 13 with a real worker: an event over HTTP that takes the usage past the subscription's
auto_invoice_threshold yields a finalized interim invoice within 2 s."""

import time
from decimal import Decimal

import pytest

from billing.models import Invoice, Subscription
from tests.integration.conftest import post, tokens, wait_for

pytestmark = pytest.mark.integration

THRESHOLD = Invoice.BillingReason.AUTO_INVOICE_THRESHOLD


def interim_of(subscription):
    def finalized_interim():
        return Invoice.objects.filter(
            subscription=subscription, billing_reason=THRESHOLD, invoice_status="FINALIZED"
        ).first()

    return finalized_interim


def test_an_event_crossing_the_threshold_is_invoiced_within_2_s(setup):
    client, subscription = setup
    Subscription.objects.filter(pk=subscription.pk).update(auto_invoice_threshold=40)
    assert post(client, "events", tokens("small", 2_000_000)).status_code == 202  # $30
    wait_for(
        lambda: (
            Invoice.objects.get(subscription=subscription, invoice_status="DRAFT").total
            == Decimal("30.00")
        ),
        timeout=10,
    )
    assert not interim_of(subscription)()

    sent = time.monotonic()
    assert post(client, "events", tokens("over", 1_000_000)).status_code == 202  # $45
    interim = wait_for(interim_of(subscription), timeout=2, interval=0.05)
    assert time.monotonic() - sent < 2
    assert interim.subtotal == Decimal("45.00") and interim.invoice_number

    # The rest of the period continues on a new draft; a retried recompute bills nothing twice.
    post(client, "events", tokens("after", 1_000_000))
    draft = wait_for(
        lambda: Invoice.objects.filter(
            subscription=subscription, invoice_status="DRAFT", total=Decimal("15.00")
        ).first(),
        timeout=10,
    )
    assert draft.period_start == interim.period_end
    assert Invoice.objects.filter(subscription=subscription, billing_reason=THRESHOLD).count() == 1


def test_a_crossing_sent_while_the_worker_is_down_is_invoiced_once_it_is_back(setup, worker):
    """The event's recompute waits for the killed worker's successor, which invoices the
    crossing once."""
    client, subscription = setup
    Subscription.objects.filter(pk=subscription.pk).update(auto_invoice_threshold=40)
    worker.kill()
    assert post(client, "events", tokens("over", 3_000_000)).status_code == 202  # $45
    worker.start()

    interim_of_it = wait_for(interim_of(subscription), timeout=10)
    assert interim_of_it.subtotal == Decimal("45.00")
    time.sleep(1.5)  # any redelivered recompute has run by now
    assert Invoice.objects.filter(subscription=subscription, billing_reason=THRESHOLD).count() == 1
