"""Webhooks: outbox events fanned out to endpoints, signed per Standard Webhooks, and sent
with exponential backoff until they succeed or their retry window ends.

Receivers dedupe by ``webhook-id``, the event's id: every attempt of an event to an endpoint,
a resend after a crash or an operator's replay alike, carries the same one. A delivery is
sent under its row's lock, taken with SKIP LOCKED, so two workers never send it at once; a
worker killed mid-send rolls back, and the delivery is still due for the next one.
"""

import json
import random
import time
from datetime import datetime, timedelta

import httpx
from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.serializers.json import DjangoJSONEncoder
from django.db import transaction
from django.utils import timezone
from standardwebhooks import Webhook

from billing.models import (
    OutboxEvent,
    WebhookAttempt,
    WebhookDelivery,
    WebhookEndpoint,
    webhook_secret_new,
)

MAX_DELAY = timedelta(hours=1)  # backoff never waits longer between two attempts
EXCERPT_BYTES = 1024
SWEEP_GRACE = timedelta(seconds=10)  # younger work is still in its own task's hands
SWEEP_LIMIT = 500
Status = WebhookDelivery.Status


# Endpoints


def webhook_endpoint_create(
    *, url: str, event_types: list[str] | None = None, description: str = "", enabled=True
) -> WebhookEndpoint:
    endpoint = WebhookEndpoint(
        url=url, event_types=event_types or [], description=description, enabled=enabled
    )
    endpoint.full_clean()
    endpoint.save()
    return endpoint


def webhook_endpoint_update(*, endpoint: WebhookEndpoint, **fields) -> WebhookEndpoint:
    unknown = set(fields) - {"url", "event_types", "description", "enabled"}
    if unknown:
        raise ValidationError(f"Cannot change {', '.join(sorted(unknown))}.")
    for name, value in fields.items():
        setattr(endpoint, name, value)
    endpoint.full_clean()
    endpoint.save()
    return endpoint


def webhook_endpoint_rotate_secret(*, endpoint: WebhookEndpoint) -> WebhookEndpoint:
    """A new secret at once: deliveries from now on are signed with it only."""
    endpoint.secret = webhook_secret_new()
    endpoint.save(update_fields=["secret", "updated_at"])
    return endpoint


# Fan-out


def event_fan_out(*, event_id: str, again: bool = False) -> list[str]:
    """One delivery per enabled endpoint that takes the event's type, made once; ``again``
    adds the endpoints that match now but did not then. Returns the pending deliveries."""
    with transaction.atomic():
        event = OutboxEvent.objects.select_for_update().filter(pk=event_id).first()
        if event is None:
            return []
        if event.fanned_out_at is None or again:
            now = timezone.now()
            endpoints = WebhookEndpoint.objects.filter(enabled=True)
            WebhookDelivery.objects.bulk_create(
                [
                    WebhookDelivery(event=event, endpoint=e, created_at=now, next_attempt_at=now)
                    for e in endpoints
                    if e.receives(event.event_type)
                ],
                ignore_conflicts=True,
            )
            if event.fanned_out_at is None:
                event.fanned_out_at = now
                event.save(update_fields=["fanned_out_at"])
        return list(
            event.deliveries.filter(status=Status.PENDING)
            .order_by("pk")
            .values_list("pk", flat=True)
        )


def webhooks_due(*, now: datetime) -> list[str]:
    """The sweep: fan out events whose dispatch was lost (a web process died after commit),
    and return the deliveries due whose task was lost (a worker died) or is a retry."""
    settled = now - SWEEP_GRACE
    unfanned = OutboxEvent.objects.filter(fanned_out_at__isnull=True, created_at__lte=settled)
    ids = []
    for event_id in list(
        unfanned.order_by("created_at").values_list("pk", flat=True)[:SWEEP_LIMIT]
    ):
        ids += event_fan_out(event_id=event_id)
    due = WebhookDelivery.objects.filter(
        status=Status.PENDING, next_attempt_at__lte=settled, endpoint__enabled=True
    )
    ids += due.order_by("next_attempt_at").values_list("pk", flat=True)[:SWEEP_LIMIT]
    return list(dict.fromkeys(ids))


# Backoff


def backoff_delay(*, attempts: int, jitter: float) -> timedelta:
    """The wait after ``attempts`` failed attempts: the base delay doubled each time, at
    most an hour, then spread by ``jitter`` (0 to 1) over ±25% so receivers that fail
    together are not retried together."""
    base = timedelta(seconds=settings.TALLY_WEBHOOK_RETRY_BASE_SECONDS)
    delay = min(base * 2 ** min(attempts - 1, 32), MAX_DELAY)
    return delay * (0.75 + jitter / 2)


def retry_at(*, delivery: WebhookDelivery, now: datetime, jitter: float) -> datetime | None:
    """When to try again after a failed attempt, or None when that is past the window."""
    window = timedelta(hours=settings.TALLY_WEBHOOK_RETRY_WINDOW_HOURS)
    at = now + backoff_delay(attempts=delivery.attempts, jitter=jitter)
    return at if at <= delivery.created_at + window else None


# Sending


def envelope(event: OutboxEvent) -> str:
    """The Standard Webhooks body: type, timestamp and data."""
    body = {"type": event.event_type, "timestamp": event.created_at.isoformat(), "data": event.data}
    return json.dumps(body, separators=(",", ":"), cls=DjangoJSONEncoder)


def signed_headers(*, event: OutboxEvent, secret: str, body: str, now: datetime) -> dict:
    return {
        "content-type": "application/json",
        "user-agent": "Tally-Webhooks/1",
        "webhook-id": event.pk,
        "webhook-timestamp": str(int(now.timestamp())),
        "webhook-signature": Webhook(secret).sign(event.pk, now, body),
    }


def _post(*, url: str, body: str, headers: dict) -> dict:
    """POST and read at most an excerpt of the answer; errors are reported, not raised."""
    started = time.monotonic()
    outcome = {"status_code": None, "response_body": "", "error": ""}
    try:
        with (
            httpx.Client(timeout=settings.TALLY_WEBHOOK_TIMEOUT_SECONDS) as client,
            client.stream("POST", url, content=body.encode(), headers=headers) as response,
        ):
            outcome["status_code"] = response.status_code
            excerpt = b""
            for chunk in response.iter_bytes():
                excerpt += chunk
                if len(excerpt) >= EXCERPT_BYTES:
                    break
            text = excerpt[:EXCERPT_BYTES].decode("utf-8", errors="replace")
            outcome["response_body"] = text.replace("\x00", "")
    except httpx.TimeoutException:
        outcome["error"] = "timeout"
    except httpx.ConnectError as error:
        outcome["error"] = f"connection failed: {error}"[:500]
    except httpx.HTTPError as error:
        outcome["error"] = f"{type(error).__name__}: {error}"[:500]
    outcome["duration_ms"] = round((time.monotonic() - started) * 1000)
    return outcome


def delivery_send(*, delivery_id: str, replay: bool = False) -> WebhookAttempt | None:
    """Send a due delivery once and log the attempt; None when it is not due, is done, or
    another worker is sending it. A ``replay`` sends it now whatever its state, waiting
    for a send in flight to end; its failure leaves a settled delivery as it was."""
    with transaction.atomic():
        rows = WebhookDelivery.objects.select_for_update(skip_locked=not replay, of=("self",))
        delivery = rows.select_related("event", "endpoint").filter(pk=delivery_id).first()
        if delivery is None:
            return None
        now = timezone.now()
        if not replay and not (
            delivery.status == Status.PENDING
            and delivery.next_attempt_at <= now
            and delivery.endpoint.enabled
        ):
            return None
        body = envelope(delivery.event)
        headers = signed_headers(
            event=delivery.event, secret=delivery.endpoint.secret, body=body, now=now
        )
        outcome = _post(url=delivery.endpoint.url, body=body, headers=headers)
        succeeded = outcome["status_code"] is not None and 200 <= outcome["status_code"] < 300
        attempt = WebhookAttempt.objects.create(
            delivery=delivery, attempted_at=now, succeeded=succeeded, replay=replay, **outcome
        )
        delivery.attempts += 1
        delivery.last_attempt_at, delivery.last_status_code = now, outcome["status_code"]
        if succeeded:
            delivery.status = Status.SUCCEEDED
        elif delivery.status == Status.PENDING:
            at = retry_at(delivery=delivery, now=timezone.now(), jitter=random.random())
            if at is None:
                delivery.status = Status.FAILED
            else:
                delivery.next_attempt_at = at
        delivery.save()
    return attempt


def event_replay(*, event_id: str) -> list[WebhookAttempt]:
    """Send an event again now to every endpoint that takes it, as new attempts."""
    event_fan_out(event_id=event_id, again=True)
    ids = WebhookDelivery.objects.filter(event_id=event_id, endpoint__enabled=True)
    return [delivery_send(delivery_id=pk, replay=True) for pk in ids.values_list("pk", flat=True)]
