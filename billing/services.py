"""Billing writes: subscriptions, proposed invoices, finalization, voiding, period close."""

import logging
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

from django.core.exceptions import ValidationError
from django.db import transaction
from django.db.models import Sum
from django.utils import timezone

from billing import credits, outbox
from billing.models import EventType, Invoice, InvoiceLineItem, InvoiceSequence, Subscription
from billing.periods import calendar_anchor, period_containing, usage_start
from catalog import pricing
from catalog.models import Meter, Plan, Price
from catalog.money import round_money, total_of_lines
from catalog.validation import validate_billing_period
from config.bounds import moment_check
from metering.fence import usage_fence_peek, usage_fence_take
from metering.models import Customer
from metering.selectors import Reading, meter_readings

logger = logging.getLogger(__name__)


class InvalidTransition(ValidationError):
    """An invoice action its current status does not allow."""


@dataclass(frozen=True)
class Line:
    price: Price
    meter: Meter | None
    terms: pricing.Terms
    quantity: Decimal
    amount: Decimal  # rounded to the currency
    period_start: datetime
    period_end: datetime
    event_count: int = 0
    billed_before: Decimal = Decimal(0)  # by earlier parts of a cycle closed early

    def as_item(self, *, invoice: Invoice | None = None) -> InvoiceLineItem:
        """The line with a snapshot of everything that priced it."""
        price, meter = self.price, self.meter
        feature = meter.feature if meter else None
        return InvoiceLineItem(
            invoice=invoice,
            price=price,
            meter=meter,
            price_type=price.type,
            invoice_cadence=price.invoice_cadence,
            display_name=price.display_name or (feature.name if feature else "Fixed fee"),
            quantity=self.quantity,
            amount=self.amount,
            currency=price.currency,
            period_start=self.period_start,
            period_end=self.period_end,
            terms=pricing.terms_to_json(self.terms),
            meter_definition=meter.definition() if meter else None,
            unit_singular=feature.unit_singular if feature else "",
            unit_plural=feature.unit_plural if feature else "",
            packages=(
                pricing.packages_for(self.terms, self.quantity)
                if self.terms.billing_model == pricing.PACKAGE
                else None
            ),
            event_count=self.event_count,
            billed_before=self.billed_before,
        )


@dataclass(frozen=True)
class Proposal:
    subscription: Subscription
    currency: str
    period_start: datetime
    period_end: datetime
    lines: list[Line]
    billing_reason: str = Invoice.BillingReason.SUBSCRIPTION_CYCLE

    @property
    def total(self) -> Decimal:
        return total_of_lines([line.amount for line in self.lines], self.currency)

    @property
    def usage(self) -> Decimal:
        """What its USAGE lines add up to: what PRE_PAID credits may pay."""
        return credits.usage_amount((line.price.type, line.amount) for line in self.lines)

    def prepaid_credits(self, *, at: datetime | None = None) -> Decimal:
        """What the customer's PRE_PAID credits would take off it now."""
        return credits.prepaid_applicable(subscription=self.subscription, usage=self.usage, at=at)


def _plan_prices(subscription: Subscription):
    return (
        Price.objects.filter(plan_id=subscription.plan_id, currency=subscription.currency)
        .select_related("meter__feature")
        .prefetch_related("tiers")
    )


def subscription_ends_by(*, subscription: Subscription, moment: datetime) -> bool:
    """Whether the subscription is over at ``moment``, so no period starts there."""
    if subscription.cancel_at_period_end and subscription.current_period_end <= moment:
        return True
    return subscription.end_date is not None and subscription.end_date <= moment


def period_from(*, subscription: Subscription, start: datetime) -> tuple[datetime, datetime] | None:
    """The service period that starts at ``start`` and runs to the next boundary from the
    anchor: what ADVANCE charges billed at ``start`` pay for, and what period close opens.
    None when the subscription ends by ``start``."""
    if subscription_ends_by(subscription=subscription, moment=start):
        return None
    try:
        _, end = period_containing(
            subscription.billing_anchor,
            subscription.billing_period,
            subscription.billing_period_count,
            start,
        )
    except (ValueError, OverflowError):
        raise ValidationError({"period_end": "The next period ends past year 9999."}) from None
    return start, end


def billed_in_advance(price: Price) -> bool:
    # Usage is always in arrears, even on a price stored before ADVANCE was refused for it.
    return price.type == Price.Type.FIXED and price.invoice_cadence == Price.Cadence.ADVANCE


def _usage_window(
    subscription: Subscription, price: Price, period: tuple[datetime, datetime]
) -> tuple[Meter, datetime, datetime]:
    """The meter and window a USAGE price's line reads."""
    start = usage_start(
        reset_usage=price.meter.reset_usage,
        subscription_start=subscription.start_date,
        period_start=period[0],
    )
    return price.meter, start, period[1]


def _line(
    *,
    price: Price,
    period: tuple[datetime, datetime],
    reading: Reading | None,
    billed_before: Decimal = Decimal(0),
) -> Line:
    """``reading`` is the usage of a USAGE price's window (``_usage_window``)."""
    period_start, period_end = period
    terms = price.terms()
    meter = price.meter if price.type == Price.Type.USAGE else None
    reading = reading or Reading(quantity=Decimal(1), event_count=0)
    return Line(
        price=price,
        meter=meter,
        terms=terms,
        quantity=reading.quantity,
        amount=round_money(pricing.amount_for(terms, reading.quantity), price.currency)
        - billed_before,
        period_start=period_start,
        period_end=period_end,
        event_count=reading.event_count,
        billed_before=billed_before,
    )


def _cycle_continued(*, subscription: Subscription, period_start: datetime) -> datetime | None:
    """The start of the cycle a period continues: that of the part closed early where it
    starts. None for a period that starts a cycle."""
    return (
        Invoice.objects.filter(
            subscription=subscription, closed_early=True, period_end=period_start
        )
        .values_list("cycle_start", flat=True)
        .first()
    )


def _cycle_billed(
    *, subscription: Subscription, cycle_start: datetime, before: datetime
) -> dict[str, Decimal]:
    """Per price, what the parts of a cycle closed early before ``before`` billed. A voided
    part counts nothing: what it billed falls to the part that continues the cycle."""
    rows = (
        InvoiceLineItem.objects.filter(
            invoice__subscription=subscription,
            invoice__billing_reason=Invoice.BillingReason.SUBSCRIPTION_CYCLE,
            invoice__closed_early=True,
            invoice__invoice_status__in=(Invoice.Status.FINALIZED, Invoice.Status.SKIPPED),
            invoice__period_start__gte=cycle_start,
            invoice__period_end__lte=before,
        )
        .values("price_id")
        .annotate(billed=Sum("amount"))
    )
    return {row["price_id"]: row["billed"] for row in rows}


def invoice_compute(
    *,
    subscription: Subscription,
    period_start: datetime,
    period_end: datetime,
    billing_reason: str = Invoice.BillingReason.SUBSCRIPTION_CYCLE,
    closed_early: bool = False,
) -> Proposal:
    """Every line of the invoice for one period, live from usage; persists nothing.

    The invoice closing a period bills its usage and ARREAR fees, and the ADVANCE fees of
    the period that starts as it ends (none if the subscription ends then). The creation
    invoice bills only the ADVANCE fees of the first period.

    A cycle closed early (``subscription_period_close_early``) is billed in parts that add up
    to the unsplit invoice, to the cent: a period that starts where a part closed early ends
    prices the usage of the whole cycle so far, less what the earlier parts billed; a part
    ``closed_early`` bills no fixed fee, so the part that ends the cycle bills them as the
    unsplit invoice would. The preview and the draft agree, as both derive this. Where a
    value does not add up over parts (MAX, LATEST, COUNT_UNIQUE, AVG) or a price falls with
    volume, a later part's line can be negative: a credit that keeps the cycle's total.
    """
    cycle = billing_reason == Invoice.BillingReason.SUBSCRIPTION_CYCLE
    cycle_start = None
    if cycle:
        cycle_start = _cycle_continued(subscription=subscription, period_start=period_start)
    billed = {}
    if cycle_start is not None:
        billed = _cycle_billed(
            subscription=subscription, cycle_start=cycle_start, before=period_start
        )
    priced = []
    for price in _plan_prices(subscription):
        if closed_early and price.type == Price.Type.FIXED:
            period = None
        elif billed_in_advance(price):
            period = period_from(
                subscription=subscription, start=period_end if cycle else period_start
            )
        else:
            period = (cycle_start or period_start, period_end) if cycle else None
        if period is not None:
            priced.append((price, period))
    # All usage lines' readings together: a few queries, however many prices.
    usage = [(p, period) for p, period in priced if p.type == Price.Type.USAGE]
    readings = dict(
        zip(
            [p.pk for p, _ in usage],
            meter_readings(
                external_customer_id=subscription.customer.external_id,
                windows=[_usage_window(subscription, p, period) for p, period in usage],
            ),
            strict=True,
        )
    )
    lines = [
        _line(
            price=price,
            period=period,
            reading=readings.get(price.pk),
            billed_before=billed.get(price.pk, Decimal(0)),
        )
        for price, period in priced
    ]
    return Proposal(
        subscription=subscription,
        currency=subscription.currency,
        period_start=period_start,
        period_end=period_end,
        lines=lines,
        billing_reason=billing_reason,
    )


def _current_period(subscription: Subscription) -> tuple[datetime, datetime]:
    return Subscription.objects.values_list("current_period_start", "current_period_end").get(
        pk=subscription.pk
    )


@transaction.atomic
def invoice_propose(*, subscription: Subscription) -> Invoice:
    """Upsert the DRAFT for the subscription's current period. Idempotent, safe concurrently."""
    # The period as it is now, read rather than locked: a lock here deadlocks with
    # finalization's foreign-key checks.
    period_start, period_end = _current_period(subscription)
    invoice, created = Invoice.objects.get_or_create(
        subscription=subscription,
        period_start=period_start,
        period_end=period_end,
        billing_reason=Invoice.BillingReason.SUBSCRIPTION_CYCLE,
        defaults={"customer_id": subscription.customer_id, "currency": subscription.currency},
    )
    # An early close or a cancellation that committed after the read above moved the period
    # (or ended it): the draft just made is for a period that no longer exists.
    if (
        created
        and not Subscription.objects.filter(
            pk=subscription.pk,
            status=Subscription.Status.ACTIVE,
            current_period_start=period_start,
            current_period_end=period_end,
        ).exists()
    ):
        invoice.delete()
        if not Subscription.objects.filter(
            pk=subscription.pk, status=Subscription.Status.ACTIVE
        ).exists():
            return Invoice.objects.filter(subscription=subscription).latest("created_at")
        return invoice_propose(subscription=subscription)
    return _draft_recompute(invoice=invoice)


def _draft_recompute(*, invoice: Invoice, fence: int | None = None) -> Invoice:
    """Recompute a draft from usage. ``fence`` comes from ``usage_fence_take`` when closing;
    otherwise it is taken before reading, so no event above it was read."""
    invoice = Invoice.objects.select_for_update().get(pk=invoice.pk)  # one writer at a time
    if not invoice.is_draft:
        return invoice  # a closed invoice never changes; late usage stays out of it
    invoice.usage_fence = usage_fence_peek() if fence is None else fence
    proposal = invoice_compute(
        subscription=invoice.subscription,
        period_start=invoice.period_start,
        period_end=invoice.period_end,
        billing_reason=invoice.billing_reason,
        closed_early=invoice.closed_early,
    )
    invoice.line_items.all().delete()
    InvoiceLineItem.objects.bulk_create(line.as_item(invoice=invoice) for line in proposal.lines)
    invoice.subtotal = proposal.total
    invoice.total_prepaid_credits_applied = proposal.prepaid_credits()
    invoice.total = invoice.subtotal - invoice.total_prepaid_credits_applied
    invoice.last_computed_at = timezone.now()
    invoice.save()
    return invoice


def draft_recompute(*, invoice: Invoice) -> Invoice:
    """An operator's "recompute": only the draft of an active subscription's current period
    moves; anything else is refused with the reason."""
    subscription = invoice.subscription
    if not invoice.is_draft:
        raise InvalidTransition(
            f"Only a DRAFT is recomputed; this one is {invoice.invoice_status}."
        )
    if subscription is None or subscription.status != Subscription.Status.ACTIVE:
        raise InvalidTransition("Only the draft of an active subscription is recomputed.")
    if (invoice.period_start, invoice.period_end) != (
        subscription.current_period_start,
        subscription.current_period_end,
    ):
        raise InvalidTransition("It is not the draft of its subscription's current period.")
    fresh = invoice_propose(subscription=subscription)
    if fresh.pk != invoice.pk or not fresh.is_draft:
        raise InvalidTransition("It was closed meanwhile and was left unchanged.")
    return fresh


def _next_number(moment: datetime) -> str:
    prefix = f"INV-{moment:%Y%m}"
    sequence, _ = InvoiceSequence.objects.select_for_update().get_or_create(prefix=prefix)
    sequence.last += 1
    sequence.save(update_fields=["last"])
    return f"{prefix}-{sequence.last:05d}"


@transaction.atomic
def invoice_finalize(*, invoice: Invoice) -> Invoice:
    """Recompute, then freeze: a number and ``finalized_at``, or SKIPPED when it is $0."""
    invoice = Invoice.objects.select_for_update().get(pk=invoice.pk)
    if not invoice.is_draft:
        raise InvalidTransition(
            f"Only a DRAFT invoice can be finalized; this one is {invoice.invoice_status}."
        )
    # What this reads is final: the customer's ingest waits for the commit, and every event
    # above the fence is late usage. A purchase of credits reads no usage and takes no fence:
    # it is finalized under the wallet's lock, which a closing invoice takes after its fence.
    fence = None
    if invoice.invoice_type != Invoice.Type.CREDIT:
        external_id = Customer.objects.values_list("external_id", flat=True).get(
            pk=invoice.customer_id
        )
        fence = usage_fence_take(external_customer_id=external_id)
    if invoice.subscription_id:
        invoice = _draft_recompute(invoice=invoice, fence=fence)
    invoice.usage_fence = fence
    now = timezone.now()
    if invoice.subtotal == 0:
        invoice.invoice_status = Invoice.Status.SKIPPED
    else:
        invoice.invoice_status = Invoice.Status.FINALIZED
        credits.invoice_wallets_lock(invoice=invoice)  # before the number: see there
        invoice.invoice_number = _next_number(now)
        invoice.due_date = Invoice.due_date_for(finalized_at=now)
    invoice.finalized_at = now
    if invoice.invoice_status == Invoice.Status.FINALIZED:
        # The credits the draft showed were a forecast: what they take is settled here,
        # under the wallet's lock.
        usage = credits.usage_amount(invoice.line_items.values_list("price_type", "amount"))
        invoice.total_prepaid_credits_applied = credits.invoice_credits_consume(
            invoice=invoice, usage=usage, now=now
        )
        invoice.total = invoice.subtotal - invoice.total_prepaid_credits_applied
        paid = credits.invoice_pay_from_wallet(invoice=invoice, now=now)
        invoice.amount_paid += paid
        if invoice.amount_remaining == 0 and invoice.subtotal > 0:
            invoice.payment_status, invoice.paid_at = Invoice.PaymentStatus.SUCCEEDED, now
    else:
        invoice.total_prepaid_credits_applied, invoice.total = Decimal(0), invoice.subtotal
    invoice.save()
    if invoice.invoice_status == Invoice.Status.FINALIZED:
        outbox.invoice_emit(event_type=EventType.INVOICE_FINALIZED, invoice=invoice)
        if paid or invoice.payment_status == Invoice.PaymentStatus.SUCCEEDED:
            outbox.invoice_emit(event_type=EventType.INVOICE_PAYMENT_UPDATED, invoice=invoice)
    return invoice


@transaction.atomic
def invoice_void(*, invoice: Invoice) -> Invoice:
    invoice = Invoice.objects.select_for_update().get(pk=invoice.pk)
    if invoice.invoice_status not in (Invoice.Status.DRAFT, Invoice.Status.FINALIZED):
        raise InvalidTransition(f"A {invoice.invoice_status} invoice cannot be voided.")
    if (
        invoice.invoice_type == Invoice.Type.CREDIT
        and invoice.payment_status == Invoice.PaymentStatus.SUCCEEDED
    ):
        raise InvalidTransition("A paid purchase of credits is not voided: its credits are given.")
    invoice.invoice_status = Invoice.Status.VOIDED
    invoice.payment_status = Invoice.PaymentStatus.VOIDED
    invoice.voided_at = timezone.now()
    invoice.save()
    credits.invoice_credits_refund(invoice=invoice)
    outbox.invoice_emit(event_type=EventType.INVOICE_VOIDED, invoice=invoice)
    return invoice


@transaction.atomic
def subscription_create(
    *,
    customer: Customer,
    plan: Plan,
    currency: str | None = None,
    billing_period: str | None = None,
    billing_period_count: int = 1,
    billing_cycle: str = Subscription.Cycle.ANNIVERSARY,
    start_date: datetime | None = None,
    billing_anchor: datetime | None = None,
    end_date: datetime | None = None,
    metadata: dict | None = None,
) -> Subscription:
    prices = list(plan.prices.all())
    currency = (currency or (prices[0].currency if prices else "usd")).lower()
    if not any(p.currency == currency for p in prices):
        raise ValidationError({"currency": f"Plan {plan.name!r} has no prices in {currency}."})
    billing_period = billing_period or (prices[0].billing_period if prices else "MONTHLY")
    validate_billing_period(billing_period=billing_period, count=billing_period_count)
    dates = {"start_date": start_date, "end_date": end_date, "billing_anchor": billing_anchor}
    for name, moment in dates.items():
        if moment is not None:
            try:
                moment_check(moment)
            except ValueError as error:
                raise ValidationError({name: f"{name} {error}."}) from None
    start = start_date or timezone.now()
    if billing_anchor is None:
        billing_anchor = (
            start
            if billing_cycle == Subscription.Cycle.ANNIVERSARY
            else calendar_anchor(start, billing_period)
        )
    if end_date is not None and end_date <= start:
        raise ValidationError({"end_date": "end_date must be after start_date."})
    # A subscription that started in the past is billed from its current period on.
    period_start, period_end = period_containing(
        billing_anchor, billing_period, billing_period_count, max(start, timezone.now())
    )
    subscription = Subscription(
        customer=customer,
        plan=plan,
        currency=currency,
        billing_period=billing_period,
        billing_period_count=billing_period_count,
        billing_cycle=billing_cycle,
        billing_anchor=billing_anchor,
        start_date=start,
        end_date=end_date,
        current_period_start=max(period_start, start),
        current_period_end=period_end,
        metadata=metadata or {},
    )
    subscription.full_clean()
    subscription.save()
    subscription_advance_invoice(subscription=subscription)
    # After the advance invoice, whose finalization takes the usage fence: locks are taken
    # fence first, then wallet, everywhere.
    credits.grants_apply(
        subscription=subscription,
        period_start=subscription.current_period_start,
        period_end=subscription.current_period_end,
    )
    invoice_propose(subscription=subscription)
    outbox.subscription_emit(event_type=EventType.SUBSCRIPTION_CREATED, subscription=subscription)
    return subscription


def subscription_advance_invoice(*, subscription: Subscription) -> Invoice | None:
    """At creation: the first period's ADVANCE fees, on an invoice finalized at once.
    A plan with no ADVANCE fee in the subscription's currency gets no such invoice."""
    if not any(billed_in_advance(price) for price in _plan_prices(subscription)):
        return None
    period = period_from(subscription=subscription, start=subscription.current_period_start)
    if period is None:
        return None  # created already over
    invoice = Invoice.objects.create(
        subscription=subscription,
        customer_id=subscription.customer_id,
        currency=subscription.currency,
        billing_reason=Invoice.BillingReason.SUBSCRIPTION_CREATE,
        period_start=period[0],
        period_end=period[1],
    )
    return invoice_finalize(invoice=invoice)


@transaction.atomic
def subscription_cancel(
    *, subscription: Subscription, cancellation_type: str = "end_of_period"
) -> Subscription:
    """``immediate`` closes the current period now; ``end_of_period`` lets it run out."""
    subscription = Subscription.objects.select_for_update().get(pk=subscription.pk)
    if subscription.status == Subscription.Status.CANCELLED:
        raise InvalidTransition("The subscription is already cancelled.")
    now = timezone.now()
    if cancellation_type == "immediate":
        draft = Invoice.objects.filter(
            subscription=subscription,
            period_start=subscription.current_period_start,
            invoice_status=Invoice.Status.DRAFT,
        ).first()
        subscription.status = Subscription.Status.CANCELLED
        subscription.cancelled_at = subscription.end_date = now
        subscription.save()
        if draft is not None:
            draft.period_end = max(now, draft.period_start)
            draft.save()
            invoice_finalize(invoice=draft)
    else:
        subscription.cancel_at_period_end = True
        subscription.end_date = subscription.current_period_end
        subscription.save()
        invoice_propose(subscription=subscription)  # the next period's ADVANCE fees drop off
    outbox.subscription_emit(event_type=EventType.SUBSCRIPTION_CANCELLED, subscription=subscription)
    return subscription


@transaction.atomic
def subscription_period_close(*, subscription_id: str, now: datetime) -> Invoice | None:
    """Finalize the due period's draft and open the next one. Safe to run twice."""
    subscription = Subscription.objects.select_for_update().get(pk=subscription_id)
    if subscription.status != Subscription.Status.ACTIVE or subscription.current_period_end > now:
        return None
    invoice = invoice_propose(subscription=subscription)
    if invoice.is_draft:
        invoice = invoice_finalize(invoice=invoice)
    end = subscription.current_period_end
    # The same rule that put (or kept) the next period's ADVANCE fees on ``invoice``.
    following = period_from(subscription=subscription, start=end)
    if following is None:
        subscription.status = Subscription.Status.CANCELLED
        subscription.cancelled_at = end
        subscription.save()
        return invoice
    subscription.current_period_start, subscription.current_period_end = following
    subscription.save()
    credits.grants_apply(
        subscription=subscription, period_start=following[0], period_end=following[1]
    )
    invoice_propose(subscription=subscription)
    return invoice


@transaction.atomic
def subscription_period_close_early(*, subscription: Subscription, now: datetime) -> Invoice:
    """Close the current period at ``now`` and open a draft from ``now`` to the period's end,
    so usage after ``now`` is billed there, not late. The two parts bill what closing the
    whole period once would (see ``invoice_compute``); the boundaries do not move, and the
    next period opens when the draft's period ends, as usual."""
    subscription = Subscription.objects.select_for_update().get(pk=subscription.pk)
    if subscription.status != Subscription.Status.ACTIVE:
        raise InvalidTransition("Only an active subscription's period can be closed early.")
    start, end = subscription.current_period_start, subscription.current_period_end
    if not start < now < end:
        raise InvalidTransition(
            f"Only a period that is running can be closed early; it runs {start} to {end}."
        )
    draft = invoice_propose(subscription=subscription)
    if not draft.is_draft:
        raise InvalidTransition(
            f"The period's invoice is already {draft.invoice_status}; nothing to close."
        )
    draft.period_end, draft.closed_early = now, True
    draft.cycle_start = draft.cycle_start or draft.period_start
    draft.save()
    invoice = invoice_finalize(invoice=draft)
    subscription.current_period_start = now
    subscription.save()
    Invoice.objects.create(
        subscription=subscription,
        customer_id=subscription.customer_id,
        currency=subscription.currency,
        period_start=now,
        period_end=end,
        cycle_start=invoice.cycle_start,
    )
    invoice_propose(subscription=subscription)
    return invoice


def periods_close(*, now: datetime) -> int:
    """Close every due period, catching up on any that were missed. One subscription that
    fails to close is logged and left for the next run; the others close."""
    closed, failed = 0, set()
    while True:
        due = list(
            Subscription.objects.filter(
                status=Subscription.Status.ACTIVE, current_period_end__lte=now
            )
            .exclude(pk__in=failed)
            .values_list("pk", flat=True)[:500]
        )
        if not due:
            return closed
        for pk in due:
            try:
                if subscription_period_close(subscription_id=pk, now=now) is not None:
                    closed += 1
            except Exception:
                logger.exception("Closing the period of subscription %s failed.", pk)
                failed.add(pk)


def subscription_recompute(*, subscription_id: str) -> Invoice | None:
    """Recompute an active subscription's draft; None if it is not active."""
    subscription = (
        Subscription.objects.filter(pk=subscription_id, status=Subscription.Status.ACTIVE)
        .select_related("customer")
        .first()
    )
    if subscription is None:
        return None
    return invoice_propose(subscription=subscription)
