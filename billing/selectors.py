"""Billing reads. Nothing here writes."""

from dataclasses import dataclass
from datetime import datetime

from django.db.models import Count, IntegerField, OuterRef, Subquery
from django.db.models.functions import Coalesce

from billing.models import Invoice
from metering.models import Event

CLOSED_STATUSES = (Invoice.Status.FINALIZED, Invoice.Status.VOIDED, Invoice.Status.SKIPPED)
EVENT_COLUMNS = ("id", "event_id", "event_name", "external_customer_id", "timestamp", "ingested_at")


@dataclass(frozen=True)
class LateUsage:
    """A closed invoice and the events of its period that arrived after it was finalized."""

    invoice: Invoice
    late_count: int  # all of them, even when ``events`` stops at the limit
    events: list[Event]


def _late_events(*, external_customer_id, period_start, period_end, finalized_at):
    # Equality on external_customer_id plus a timestamp range: the (external_customer_id,
    # event_name, timestamp) index serves it; ingested_at is checked on the rows it finds.
    return Event.objects.filter(
        external_customer_id=external_customer_id,
        timestamp__gte=period_start,
        timestamp__lt=period_end,
        ingested_at__gt=finalized_at,
    )


def late_usage(*, limit: int = 500, finalized_after: datetime | None = None) -> list[LateUsage]:
    """Events that arrived after their period's subscription invoice was closed.

    One query finds the closed invoices with late events and counts them; then one query
    per such invoice reads its events, newest invoice first, until ``limit`` events are
    read. Each of those queries returns at least one event, so there are at most
    ``limit + 1`` queries. ``finalized_after`` narrows the invoices looked at.
    """
    late = _late_events(
        external_customer_id=OuterRef("customer__external_id"),
        period_start=OuterRef("period_start"),
        period_end=OuterRef("period_end"),
        finalized_at=OuterRef("finalized_at"),
    )
    late_count = (
        late.order_by()
        .values("external_customer_id")  # one group: the outer invoice's customer
        .annotate(n=Count("id"))
        .values("n")
    )
    invoices = Invoice.objects.filter(
        invoice_status__in=CLOSED_STATUSES,
        subscription__isnull=False,
        finalized_at__isnull=False,
    )
    if finalized_after is not None:
        invoices = invoices.filter(finalized_at__gt=finalized_after)
    invoices = (
        invoices.annotate(late_count=Coalesce(Subquery(late_count, output_field=IntegerField()), 0))
        .filter(late_count__gt=0)
        .select_related("customer")
        .order_by("-finalized_at", "pk")
    )

    report, remaining = [], limit
    for invoice in invoices[:limit]:  # each has at least one event, so no more are needed
        if remaining <= 0:
            break
        events = list(
            _late_events(
                external_customer_id=invoice.customer.external_id,
                period_start=invoice.period_start,
                period_end=invoice.period_end,
                finalized_at=invoice.finalized_at,
            )
            .only(*EVENT_COLUMNS)
            .order_by("timestamp", "id")[:remaining]
        )
        remaining -= len(events)
        report.append(LateUsage(invoice=invoice, late_count=invoice.late_count, events=events))
    return report
