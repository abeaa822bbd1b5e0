"""The outbox: events about money, written with the change they report (DESIGN: side
effects leave through an outbox)."""

from django.db import transaction

from billing.models import EventType, OutboxEvent


def event_emit(
    *, event_type: EventType | str, data: dict, customer_id: str | None = None
) -> OutboxEvent:
    """Record an event in the caller's transaction: it exists if and only if the change
    it reports committed."""
    event_type = EventType(event_type)
    if not transaction.get_connection().in_atomic_block:
        raise RuntimeError("event_emit must run inside the transaction of its change")
    return OutboxEvent.objects.create(event_type=event_type, data=data, customer_id=customer_id)
