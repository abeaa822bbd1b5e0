"""Webhooks' Celery tasks: each loads ids and calls ``billing.webhooks``; running one twice
sends nothing twice (a delivery is sent under its row's lock, only when due)."""

from celery import shared_task
from django.utils import timezone

from billing import webhooks
from billing.models import WebhookDelivery

# A retry due sooner is queued with a countdown; a later one is left to the sweep, since a
# broker holding a task past its visibility timeout delivers it again.
REQUEUE_HORIZON_SECONDS = 60


@shared_task
def webhook_event_dispatch(event_id: str) -> int:
    """Queued when an event's transaction commits: its deliveries, each in its own task."""
    ids = webhooks.event_fan_out(event_id=event_id)
    for delivery_id in ids:
        webhook_delivery_send.delay(delivery_id)
    return len(ids)


@shared_task
def webhook_delivery_send(delivery_id: str) -> None:
    if webhooks.delivery_send(delivery_id=delivery_id) is None:
        return
    retry = (
        WebhookDelivery.objects.filter(pk=delivery_id, status=WebhookDelivery.Status.PENDING)
        .values_list("next_attempt_at", flat=True)
        .first()
    )
    if retry is not None:
        wait = (retry - timezone.now()).total_seconds()
        if wait <= REQUEUE_HORIZON_SECONDS:
            webhook_delivery_send.apply_async((delivery_id,), countdown=max(wait, 0))


@shared_task
def webhooks_sweep() -> int:
    """Beat's safety net: nothing committed waits on a task that was lost."""
    ids = webhooks.webhooks_due(now=timezone.now())
    for delivery_id in ids:
        webhook_delivery_send.delay(delivery_id)
    return len(ids)
