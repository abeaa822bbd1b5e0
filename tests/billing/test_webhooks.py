"""Webhooks: fan-out, filtering, signed sends to a real local receiver, backoff and its
window, replay and the sweep."""

from datetime import timedelta

import pytest
import time_machine
from django.db import transaction
from django.urls import reverse
from django.utils import timezone
from standardwebhooks import Webhook

from billing import webhooks
from billing.models import EventType, OutboxEvent, WebhookAttempt, WebhookDelivery
from billing.outbox import event_emit
from billing.webhook_tasks import webhooks_sweep
from config.celery import app
from tests.webhook_receiver import Receiver

pytestmark = pytest.mark.django_db(transaction=True)
Status = WebhookDelivery.Status


@pytest.fixture
def eager():
    """Tasks run in-process, as without a broker, whatever the run's broker."""
    before = app.conf.task_always_eager
    app.conf.task_always_eager = True
    yield
    app.conf.task_always_eager = before


def endpoint(url, **fields):
    return webhooks.webhook_endpoint_create(url=url, **fields)


def emit(event_type=EventType.WALLET_TOPPED_UP, data=None) -> OutboxEvent:
    with transaction.atomic():
        return event_emit(event_type=event_type, data=data or {"credits": "5"})


def stored_event(event_type=EventType.WALLET_TOPPED_UP, **fields) -> OutboxEvent:
    """An event whose dispatch never ran: written as by a process killed after commit."""
    return OutboxEvent.objects.create(event_type=event_type, data={"credits": "5"}, **fields)


def delivery_to(url, **endpoint_fields) -> WebhookDelivery:
    hook = endpoint(url, **endpoint_fields)
    event = stored_event()
    webhooks.event_fan_out(event_id=event.pk)
    return WebhookDelivery.objects.select_related("endpoint", "event").get(
        event=event, endpoint=hook
    )


def test_an_event_fans_out_once_to_each_enabled_endpoint_that_takes_its_type():
    everything = endpoint("https://a.example/hooks")
    wallets = endpoint("https://b.example/hooks", event_types=["wallet.topped_up"])
    endpoint("https://c.example/hooks", event_types=["invoice.voided"])
    endpoint("https://d.example/hooks", enabled=False)
    event = stored_event()
    first = webhooks.event_fan_out(event_id=event.pk)
    again = webhooks.event_fan_out(event_id=event.pk)
    deliveries = WebhookDelivery.objects.filter(event=event)
    assert {d.endpoint_id for d in deliveries} == {everything.pk, wallets.pk}
    assert sorted(first) == sorted(again) == sorted(d.pk for d in deliveries)
    assert OutboxEvent.objects.get(pk=event.pk).fanned_out_at is not None


def test_a_replayed_event_reaches_an_endpoint_registered_since(receiver):
    event = stored_event()
    webhooks.event_fan_out(event_id=event.pk)  # no endpoint yet
    hook = endpoint(receiver.url)
    attempts = webhooks.event_replay(event_id=event.pk)
    assert [a.delivery.endpoint_id for a in attempts] == [hook.pk]
    assert receiver.ids() == [event.pk]


def test_a_delivery_is_signed_per_standard_webhooks_and_logged(receiver):
    receiver.body = b"x" * 5000
    delivery = delivery_to(receiver.url)
    attempt = webhooks.delivery_send(delivery_id=delivery.pk)
    (envelope,) = receiver.verified(delivery.endpoint.secret)
    assert envelope == {
        "type": "wallet.topped_up",
        "timestamp": delivery.event.created_at.isoformat(),
        "data": {"credits": "5"},
    }
    assert receiver.ids() == [delivery.event_id]
    assert (attempt.status_code, attempt.succeeded, attempt.error) == (200, True, "")
    assert attempt.response_body == "x" * 1024  # an excerpt of 1 KB
    delivery.refresh_from_db()
    assert (delivery.status, delivery.attempts, delivery.last_status_code) == (
        Status.SUCCEEDED,
        1,
        200,
    )
    assert webhooks.delivery_send(delivery_id=delivery.pk) is None  # done: not sent again


def test_another_secret_does_not_verify(receiver):
    delivery = delivery_to(receiver.url)
    webhooks.delivery_send(delivery_id=delivery.pk)
    from standardwebhooks.webhooks import WebhookVerificationError

    with pytest.raises(WebhookVerificationError):
        receiver.verified(endpoint("https://x.example").secret)


def test_a_500_is_retried_later_with_the_same_webhook_id(receiver):
    receiver.script = [500]
    delivery = delivery_to(receiver.url)
    failed = webhooks.delivery_send(delivery_id=delivery.pk)
    assert (failed.status_code, failed.succeeded) == (500, False)
    delivery.refresh_from_db()
    assert delivery.status == Status.PENDING and delivery.next_attempt_at > timezone.now()
    assert webhooks.delivery_send(delivery_id=delivery.pk) is None  # not due yet
    with time_machine.travel(delivery.next_attempt_at + timedelta(seconds=1)):
        assert webhooks.delivery_send(delivery_id=delivery.pk).succeeded
    assert receiver.ids() == [delivery.event_id] * 2


def test_a_timeout_and_a_refused_connection_are_logged_as_errors(receiver, settings):
    settings.TALLY_WEBHOOK_TIMEOUT_SECONDS = 0.3
    receiver.script = [("slow", 1.5)]
    slow = webhooks.delivery_send(delivery_id=delivery_to(receiver.url).pk)
    assert (slow.status_code, slow.error, slow.succeeded) == (None, "timeout", False)
    closed = Receiver().start()
    url = closed.url
    closed.stop()
    refused = webhooks.delivery_send(delivery_id=delivery_to(url).pk)
    assert refused.status_code is None and refused.error.startswith("connection failed")
    for attempt in (slow, refused):
        attempt.delivery.refresh_from_db()
        assert attempt.delivery.status == Status.PENDING  # to be retried


@pytest.mark.parametrize(
    ("attempts", "jitter", "seconds"),
    [
        (1, 0, 3.75),  # 5 s, spread down by a quarter
        (1, 1, 6.25),  # and up by a quarter
        (2, 0.5, 10),
        (3, 0.5, 20),
        (10, 0.5, 2560),
        (11, 0.5, 3600),  # at most an hour apart
        (40, 1, 4500),
    ],
)
def test_the_backoff_doubles_from_the_base_with_jitter_up_to_an_hour(attempts, jitter, seconds):
    delay = webhooks.backoff_delay(attempts=attempts, jitter=jitter)
    assert delay == timedelta(seconds=seconds)


def test_the_base_delay_is_a_setting(settings):
    settings.TALLY_WEBHOOK_RETRY_BASE_SECONDS = 1
    assert webhooks.backoff_delay(attempts=3, jitter=0.5) == timedelta(seconds=4)


def test_a_delivery_failing_past_its_window_is_marked_failed(receiver, settings):
    settings.TALLY_WEBHOOK_RETRY_WINDOW_HOURS = 1
    receiver.script = [500, 500]
    delivery = delivery_to(receiver.url)
    webhooks.delivery_send(delivery_id=delivery.pk)
    delivery.refresh_from_db()
    assert delivery.status == Status.PENDING  # seconds into an hour's window
    with time_machine.travel(delivery.created_at + timedelta(minutes=59, seconds=58)):
        webhooks.delivery_send(delivery_id=delivery.pk)  # the next try would be past it
    delivery.refresh_from_db()
    assert (delivery.status, delivery.attempts) == (Status.FAILED, 2)
    with time_machine.travel(delivery.created_at + timedelta(hours=2)):
        assert webhooks.delivery_send(delivery_id=delivery.pk) is None
    assert len(receiver.requests) == 2


def test_a_disabled_endpoint_is_not_sent_to(receiver):
    delivery = delivery_to(receiver.url)
    webhooks.webhook_endpoint_update(endpoint=delivery.endpoint, enabled=False)
    assert webhooks.delivery_send(delivery_id=delivery.pk) is None
    assert receiver.requests == []


def test_a_replay_sends_a_settled_delivery_again_as_a_new_attempt(receiver):
    delivery = delivery_to(receiver.url)
    webhooks.delivery_send(delivery_id=delivery.pk)
    again = webhooks.delivery_send(delivery_id=delivery.pk, replay=True)
    assert (again.replay, again.succeeded) == (True, True)
    assert receiver.ids() == [delivery.event_id] * 2
    assert WebhookAttempt.objects.filter(delivery=delivery).count() == 2


def test_a_rotated_secret_signs_what_follows(receiver):
    delivery = delivery_to(receiver.url)
    old = delivery.endpoint.secret
    new = webhooks.webhook_endpoint_rotate_secret(endpoint=delivery.endpoint).secret
    assert new != old and new.startswith("whsec_")
    webhooks.delivery_send(delivery_id=delivery.pk)
    assert receiver.verified(new)[0]["type"] == "wallet.topped_up"


def test_an_emitted_event_is_delivered_after_its_commit(receiver, eager):
    hook = endpoint(receiver.url)
    event = emit()
    assert receiver.ids() == [event.pk]
    assert receiver.verified(hook.secret)[0]["data"] == {"credits": "5"}


def test_an_event_rolled_back_is_never_sent(receiver, eager):
    endpoint(receiver.url)
    with pytest.raises(ZeroDivisionError), transaction.atomic():
        event_emit(event_type=EventType.INVOICE_VOIDED, data={})
        1 / 0  # noqa: B018
    assert receiver.requests == [] and not WebhookDelivery.objects.exists()


def test_the_sweep_sends_what_a_lost_task_left(receiver, eager):
    """An event committed by a process that died before queueing its dispatch, and a
    delivery whose task died with its worker: the sweep sends each once."""
    endpoint(receiver.url)
    long_ago = timezone.now() - timedelta(minutes=1)
    orphan = stored_event(created_at=long_ago)
    fresh = stored_event()  # within the grace: still its own task's
    stuck = stored_event(event_type=EventType.INVOICE_VOIDED)
    webhooks.event_fan_out(event_id=stuck.pk)
    WebhookDelivery.objects.filter(event=stuck).update(next_attempt_at=long_ago)
    assert webhooks_sweep() == 2
    assert sorted(receiver.ids()) == sorted([orphan.pk, stuck.pk])
    assert OutboxEvent.objects.get(pk=fresh.pk).fanned_out_at is None
    assert webhooks_sweep() == 0  # nothing twice


def test_admin_pages_and_replay_actions(admin_client, receiver):
    delivery = delivery_to(receiver.url)
    webhooks.delivery_send(delivery_id=delivery.pk)
    for name in ("webhookendpoint", "webhookdelivery", "outboxevent"):
        assert admin_client.get(reverse(f"admin:billing_{name}_changelist")).status_code == 200
    log = admin_client.get(
        reverse("admin:billing_webhookdelivery_changelist"),
        {"endpoint__id__exact": delivery.endpoint_id},
    )
    assert delivery.event_id in log.content.decode()
    pages = [
        reverse("admin:billing_webhookendpoint_change", args=[delivery.endpoint_id]),
        reverse("admin:billing_webhookdelivery_change", args=[delivery.pk]),
        reverse("admin:billing_outboxevent_change", args=[delivery.event_id]),
    ]
    for page in pages:
        assert admin_client.get(page).status_code == 200
    assert delivery.endpoint.secret in admin_client.get(pages[0]).content.decode()
    for name, pk in (("webhookdelivery", delivery.pk), ("outboxevent", delivery.event_id)):
        response = admin_client.post(
            reverse(f"admin:billing_{name}_changelist"),
            {"action": "replay", "_selected_action": [pk]},
            follow=True,
        )
        assert "Sent 1: 1 succeeded." in response.content.decode()
    replays = WebhookAttempt.objects.filter(delivery=delivery, replay=True)
    assert replays.count() == 2 and all(a.succeeded for a in replays)
    assert receiver.ids() == [delivery.event_id] * 3


def test_an_endpoint_is_registered_in_the_admin_with_a_generated_secret(admin_client):
    response = admin_client.post(
        reverse("admin:billing_webhookendpoint_add"),
        {
            "url": "https://hooks.example/tally",
            "event_types": ["invoice.finalized", "invoice.voided"],
            "enabled": "on",
            "description": "finance",
        },
    )
    (hook,) = webhooks.WebhookEndpoint.objects.all()
    assert response.status_code == 302
    assert response.url == reverse("admin:billing_webhookendpoint_change", args=[hook.pk])
    assert hook.event_types == ["invoice.finalized", "invoice.voided"]
    assert Webhook(hook.secret)  # a valid Standard Webhooks secret
    bad = admin_client.post(
        reverse("admin:billing_webhookendpoint_add"), {"url": "ftp://hooks.example/"}
    )
    assert bad.status_code == 200 and "Enter a valid URL." in bad.content.decode()
