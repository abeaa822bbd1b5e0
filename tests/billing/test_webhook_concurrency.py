"""Concurrent dispatchers on PostgreSQL: a delivery is sent by one of them at a time, so two
sweeps or a sweep and a task never post it twice at once."""

import threading

import pytest
from django.db import connection

from billing import webhooks
from billing.models import EventType, OutboxEvent, WebhookAttempt, WebhookDelivery
from tests.billing.test_late_usage import finish, in_thread, require_postgresql

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def delivery(receiver):
    require_postgresql()
    webhooks.webhook_endpoint_create(url=receiver.url)
    event = OutboxEvent.objects.create(event_type=EventType.INVOICE_VOIDED, data={})
    (delivery_id,) = webhooks.event_fan_out(event_id=event.pk)
    return WebhookDelivery.objects.get(pk=delivery_id)


def test_a_second_dispatcher_skips_a_delivery_being_sent(receiver, delivery):
    """A holds the delivery while the receiver has not answered; B, on its own connection,
    finds it locked and moves on without sending."""
    receiver.script = ["hang"]
    first = in_thread(lambda: webhooks.delivery_send(delivery_id=delivery.pk))
    assert receiver.got.wait(10), "the first send never arrived"
    second = in_thread(lambda: webhooks.delivery_send(delivery_id=delivery.pk))
    assert finish(second, timeout=10) is None
    receiver.release.set()
    attempt = finish(first)
    assert attempt.succeeded
    assert len(receiver.requests) == 1
    assert WebhookAttempt.objects.filter(delivery=delivery).count() == 1
    # And once done, nobody sends it again.
    assert webhooks.delivery_send(delivery_id=delivery.pk) is None


def test_many_dispatchers_at_once_send_one_attempt(receiver, delivery):
    barrier = threading.Barrier(8)

    def dispatch():
        barrier.wait(10)
        return webhooks.delivery_send(delivery_id=delivery.pk)

    threads = [in_thread(dispatch) for _ in range(8)]
    sent = [a for a in (finish(t) for t in threads) if a is not None]
    assert len(sent) == 1 and sent[0].succeeded
    assert receiver.ids() == [delivery.event_id]
    assert WebhookAttempt.objects.filter(delivery=delivery).count() == 1
    delivery.refresh_from_db()
    assert (delivery.status, delivery.attempts) == (WebhookDelivery.Status.SUCCEEDED, 1)
    assert connection.vendor == "postgresql"
