"""Webhooks end to end: real PostgreSQL, Redis and Celery worker, posting to a real HTTP
receiver on 127.0.0.1 that verifies each signature as a receiver would."""

import time
from decimal import Decimal

import pytest
from django.utils import timezone

from billing import webhooks
from billing.models import (
    EventType,
    OutboxEvent,
    WalletTransaction,
    WebhookAttempt,
    WebhookDelivery,
)
from billing.wallets import wallet_create, wallet_top_up
from tests.factories import CustomerFactory
from tests.integration.conftest import Worker, require_services, wait_for

pytestmark = pytest.mark.integration


@pytest.fixture
def workers(transactional_db, monkeypatch):
    """Start workers that retry after about a second and give up on a request after one."""
    require_services()
    from config.celery import app

    monkeypatch.setenv("TALLY_WEBHOOK_RETRY_BASE_SECONDS", "1")
    monkeypatch.setenv("TALLY_WEBHOOK_TIMEOUT_SECONDS", "1")
    app.control.purge()
    started = []

    def start():
        started.append(Worker().start())
        return started[-1]

    yield start
    for worker in started:
        worker.stop()
    app.control.purge()


def top_up() -> WalletTransaction:
    """A state change that commits a ``wallet.topped_up`` event."""
    wallet = wallet_create(customer=CustomerFactory(external_id="acme"), currency="usd")
    return wallet_top_up(wallet=wallet, reason="PURCHASED_CREDIT_DIRECT", credits=Decimal(25))


def delivered(event: OutboxEvent):
    def check():
        return WebhookDelivery.objects.filter(
            event=event, status=WebhookDelivery.Status.SUCCEEDED
        ).first()

    return check


def topped_up_event() -> OutboxEvent:
    return OutboxEvent.objects.get(event_type=EventType.WALLET_TOPPED_UP)


def test_a_signed_webhook_is_retried_after_a_500_and_a_timeout(workers, receiver):
    receiver.script = [500, ("slow", 3)]
    hook = webhooks.webhook_endpoint_create(url=receiver.url)
    workers()
    block = top_up()
    event = topped_up_event()
    delivery = wait_for(delivered(event), timeout=60)
    envelopes = receiver.verified(hook.secret)
    assert len(envelopes) == 3
    assert receiver.ids() == [event.pk] * 3  # receivers dedupe on it
    assert envelopes[0]["type"] == "wallet.topped_up"
    assert envelopes[0]["data"]["transaction_id"] == block.pk
    assert envelopes[0]["data"]["credits"] == "25"
    log = WebhookAttempt.objects.filter(delivery=delivery).order_by("attempted_at")
    assert [(a.status_code, a.error) for a in log] == [(500, ""), (None, "timeout"), (200, "")]
    gaps = [b.at - a.at for a, b in zip(receiver.requests, receiver.requests[1:], strict=False)]
    assert all(gap >= 0.7 for gap in gaps)  # backed off: about a second, less a quarter
    assert delivery.attempts == 3


def test_a_worker_killed_mid_delivery_loses_nothing_and_a_new_one_delivers_once(workers, receiver):
    receiver.script = ["hang"]
    hook = webhooks.webhook_endpoint_create(url=receiver.url)
    first = workers()
    top_up()
    event = topped_up_event()
    assert receiver.got.wait(30), "the first worker never sent"
    first.kill()  # between the committed change and a delivery it could record
    receiver.release.set()
    assert not WebhookAttempt.objects.exists()  # its attempt rolled back with it
    workers()
    delivery = wait_for(delivered(event), timeout=60)
    time.sleep(2)  # anything more would arrive by now
    assert receiver.ids() == [event.pk, event.pk]
    assert len(receiver.verified(hook.secret)) == 2
    assert WebhookAttempt.objects.filter(delivery=delivery, succeeded=True).count() == 1
    assert WebhookDelivery.objects.filter(event=event).count() == 1


def test_an_event_committed_while_no_worker_runs_is_delivered_once(workers, receiver):
    hook = webhooks.webhook_endpoint_create(url=receiver.url)
    workers().kill()
    top_up()  # its dispatch waits in the broker
    event = topped_up_event()
    workers()
    wait_for(delivered(event), timeout=60)
    time.sleep(2)
    assert receiver.ids() == [event.pk]
    assert receiver.verified(hook.secret)[0]["data"]["external_customer_id"] == "acme"


def test_the_sweep_delivers_an_event_whose_dispatch_was_never_queued(workers, receiver):
    """As if the web process died between its commit and queueing the dispatch."""
    from billing.webhook_tasks import webhooks_sweep

    webhooks.webhook_endpoint_create(url=receiver.url)
    event = OutboxEvent.objects.create(
        event_type=EventType.INVOICE_VOIDED,
        data={"invoice_id": "inv_1"},
        created_at=timezone.now() - webhooks.SWEEP_GRACE,
    )
    workers()
    webhooks_sweep.delay()
    wait_for(delivered(event), timeout=60)
    webhooks_sweep.delay()
    time.sleep(2)
    assert receiver.ids() == [event.pk]
