"""Billing reads. Nothing here writes."""

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

from django.db.models import Exists, OuterRef, Q

from billing.models import Invoice, InvoiceLineItem, Subscription
from billing.periods import usage_start
from catalog import pricing
from catalog.models import Meter
from catalog.money import round_money
from catalog.names import ADDITIVE_AGGREGATIONS
from metering.models import Event
from metering.selectors import meter_reading, meter_reading_after

CLOSED_STATUSES = (Invoice.Status.FINALIZED, Invoice.Status.VOIDED, Invoice.Status.SKIPPED)


@dataclass(frozen=True)
class LateLine:
    """What a closed invoice line did not bill: its events stored after the invoice's fence."""

    line: InvoiceLineItem
    event_count: int
    quantity: Decimal  # what the line's quantity would grow by
    amount: Decimal  # what the line's amount would grow by, rounded as the line was


@dataclass(frozen=True)
class LateUsage:
    invoice: Invoice
    lines: list[LateLine]

    @property
    def event_count(self) -> int:
        return sum(late.event_count for late in self.lines)

    @property
    def amount(self) -> Decimal:
        return sum((late.amount for late in self.lines), Decimal(0))


def was_finalized(invoice: Invoice) -> bool:
    """Finalization read its usage under the fence; a draft voided unread has no late usage."""
    return invoice.finalized_at is not None and invoice.usage_fence is not None


# The one rule of what is late. A part of a cycle closed early has no late usage: the part
# continuing the cycle reads the whole cycle again (its lines' windows start at the cycle's
# start, see ``line_window``) and bills the events the early part did not read.
MAY_HAVE_LATE_USAGE = Q(finalized_at__isnull=False, usage_fence__isnull=False, closed_early=False)


def may_have_late_usage(invoice: Invoice) -> bool:
    """``MAY_HAVE_LATE_USAGE`` for one invoice."""
    return was_finalized(invoice) and not invoice.closed_early


def was_read(*, invoice: Invoice, event_id: int) -> bool:
    """Whether the invoice counts an event of its window: a draft counts all (as it will be
    recomputed), a finalized invoice those under its fence."""
    return not was_finalized(invoice) or event_id <= invoice.usage_fence


def is_late(*, invoice: Invoice, event_id: int) -> bool:
    """An event of its window that a closed invoice's finalization did not read, stored after
    the fence, and that no later part of its cycle bills."""
    return may_have_late_usage(invoice) and not was_read(invoice=invoice, event_id=event_id)


def line_window(invoice: Invoice, line: InvoiceLineItem) -> tuple[Meter, dict]:
    """The meter that priced a usage line, as it was, and the customer and time its usage
    covered: where the line's events, billed or late, are."""
    meter = line.metered_by()
    start = usage_start(
        reset_usage=meter.reset_usage,
        subscription_start=invoice.subscription.start_date,
        period_start=line.period_start,
    )
    return meter, {
        "external_customer_id": invoice.customer.external_id,
        "start": start,
        "end": line.period_end,
    }


def _late_line(invoice: Invoice, line: InvoiceLineItem) -> LateLine:
    meter, window = line_window(invoice, line)
    count, added = meter_reading_after(meter=meter, after_id=invoice.usage_fence, **window)
    if added is None:  # MAX, AVG, LATEST, COUNT_UNIQUE: read everything, then compare
        live = line.meter
        unchanged = live is not None and live.definition() == line.meter_definition
        reading = meter_reading(meter=live if unchanged else meter, use_rollups=unchanged, **window)
        added = reading.quantity - line.quantity
    terms = line.priced_terms()
    billed = round_money(pricing.amount_for(terms, line.quantity + added), line.currency)
    already = line.amount + line.billed_before  # a cycle's later part counts its earlier ones
    return LateLine(line=line, event_count=count, quantity=added, amount=billed - already)


def invoice_late_usage(*, invoice: Invoice) -> LateUsage:
    """Per usage line of a closed invoice, the usage it did not bill: events of its period,
    counted by the meter as the line snapshot it, stored after the invoice's fence (they
    committed after finalization read). Each such event is late or billed, never both."""
    lines = [line for line in invoice.line_items.all() if line.meter_definition is not None]
    if invoice.invoice_status not in CLOSED_STATUSES or not may_have_late_usage(invoice):
        return LateUsage(invoice=invoice, lines=[])
    return LateUsage(invoice=invoice, lines=[_late_line(invoice, line) for line in lines])


def _events_after_fence():
    """Events an outer invoice's lines may count (from the subscription's start, for meters
    that never reset), stored after its fence."""
    return Event.objects.filter(
        external_customer_id=OuterRef("customer__external_id"),
        timestamp__gte=OuterRef("subscription__start_date"),
        timestamp__lt=OuterRef("period_end"),
        id__gt=OuterRef("usage_fence"),
    )


def late_usage(*, limit: int = 100, finalized_after: datetime | None = None) -> list[LateUsage]:
    """Closed invoices with late usage, newest first, at most ``limit`` of them.

    One query finds closed invoices with any event of their customer and period after their
    fence; each is then read line by line, and kept if one of its meters counts those events.
    """
    invoices = Invoice.objects.filter(
        MAY_HAVE_LATE_USAGE,
        invoice_status__in=CLOSED_STATUSES,
        billing_reason__in=Invoice.CYCLE_REASONS,  # those that bill usage
        subscription__isnull=False,
    ).filter(Exists(_events_after_fence()))
    if finalized_after is not None:
        invoices = invoices.filter(finalized_at__gt=finalized_after)
    invoices = invoices.select_related("customer", "subscription").prefetch_related(
        "line_items__meter"
    )
    report = []
    for invoice in invoices.order_by("-finalized_at", "pk"):
        late = invoice_late_usage(invoice=invoice)
        if late.event_count:
            report.append(late)
            if len(report) >= limit:
                break
    return report


def late_events(*, late: LateUsage, limit: int) -> list[Event]:
    """Some of the late events behind ``late``, oldest first, for a person to look at."""
    from metering.aggregation import matches

    invoice = late.invoice
    windows = [line_window(invoice, item.line) for item in late.lines if item.event_count]
    if limit <= 0 or not windows:
        return []
    candidates = Event.objects.filter(
        external_customer_id=invoice.customer.external_id,
        timestamp__gte=min(window["start"] for _, window in windows),
        timestamp__lt=max(window["end"] for _, window in windows),
        id__gt=invoice.usage_fence,
    ).order_by("timestamp", "id")
    found = []
    for event in candidates.iterator(chunk_size=500):
        if any(
            window["start"] <= event.timestamp < window["end"]
            and matches(meter, event.event_name, event.properties)
            for meter, window in windows
        ):
            found.append(event)
            if len(found) >= limit:
                break
    return found


def active_subscription_ids(*, external_customer_ids: list[str]) -> list[str]:
    """The active subscriptions of these customers (by external id)."""
    if not external_customer_ids:
        return []
    return list(
        Subscription.objects.filter(
            status=Subscription.Status.ACTIVE,
            customer__external_id__in=external_customer_ids,
        ).values_list("pk", flat=True)
    )


def stale_draft_subscription_ids() -> list[str]:
    """Active subscriptions whose draft's last computation did not read every event of its
    customer."""
    newer = Event.objects.filter(
        external_customer_id=OuterRef("customer__external_id"), id__gt=OuterRef("usage_fence")
    )
    drafts = Invoice.objects.filter(
        invoice_status=Invoice.Status.DRAFT, subscription__status=Subscription.Status.ACTIVE
    ).filter(Q(usage_fence__isnull=True) | Exists(newer))
    return list(drafts.values_list("subscription_id", flat=True))


@dataclass(frozen=True)
class RunningPeriod:
    """A draft whose period is still running: finalizing it now leaves the rest of the period
    unbilled, where closing it early (``subscription_period_close_early``) does not."""

    invoice: Invoice
    events_after: int  # events of the customer already stored from now to the period's end
    not_additive: list[str]  # lines whose meter's value does not add up over parts (MAX, ...)


def running_period(*, invoice: Invoice, now: datetime) -> RunningPeriod | None:
    """For the current draft of an active subscription whose period ends after ``now``."""
    subscription = invoice.subscription
    if (
        not invoice.is_draft
        or subscription is None
        or subscription.status != Subscription.Status.ACTIVE
        or invoice.period_start != subscription.current_period_start
        or not invoice.period_start < now < invoice.period_end
    ):
        return None
    events_after = Event.objects.filter(
        external_customer_id=invoice.customer.external_id,
        timestamp__gte=now,
        timestamp__lt=invoice.period_end,
    ).count()
    not_additive = [
        line.display_name
        for line in invoice.line_items.all()
        if line.meter_definition is not None
        and line.meter_definition["aggregation"] not in ADDITIVE_AGGREGATIONS
    ]
    return RunningPeriod(invoice=invoice, events_after=events_after, not_additive=not_additive)


def open_draft(subscription: Subscription) -> Invoice | None:
    """The proposed invoice of the subscription's open period, if computed."""
    return Invoice.objects.filter(
        subscription=subscription,
        invoice_status=Invoice.Status.DRAFT,
        billing_reason=Invoice.BillingReason.SUBSCRIPTION_CYCLE,
        period_start=subscription.current_period_start,
        period_end=subscription.current_period_end,
    ).first()
