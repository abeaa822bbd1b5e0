"""FIXED prices billed in ADVANCE: each period's fee is billed as that period starts."""

from datetime import UTC, datetime
from decimal import Decimal

import pytest
import time_machine

from billing.models import Invoice, InvoiceLineItem, Subscription
from billing.selectors import late_usage
from billing.services import (
    invoice_propose,
    period_from,
    periods_close,
    subscription_cancel,
    subscription_create,
)
from catalog.models import Price
from metering.models import Customer
from tests.factories import MeterFactory, PlanFactory, PriceFactory, ingest

pytestmark = pytest.mark.django_db

CREATE, CYCLE = Invoice.BillingReason.SUBSCRIPTION_CREATE, Invoice.BillingReason.SUBSCRIPTION_CYCLE


def at(*args) -> datetime:
    return datetime(*args, tzinfo=UTC)


# Anchored on Jan 31 of a leap year: the periods end Feb 29, Mar 31, Apr 30, May 31.
P0 = (at(2028, 1, 31, 9, 30), at(2028, 2, 29, 9, 30))
P1 = (at(2028, 2, 29, 9, 30), at(2028, 3, 31, 9, 30))
P2 = (at(2028, 3, 31, 9, 30), at(2028, 4, 30, 9, 30))
P3 = (at(2028, 4, 30, 9, 30), at(2028, 5, 31, 9, 30))


def fixed(plan, amount: str, cadence: str, name: str) -> Price:
    return PriceFactory(
        plan=plan,
        type=Price.Type.FIXED,
        billing_model=Price.BillingModel.FLAT_FEE,
        meter=None,
        divide_by=None,
        amount=Decimal(amount),
        invoice_cadence=cadence,
        display_name=name,
    )


@pytest.fixture
def plan():
    """Mixed: $20 platform fee in ADVANCE, $5 support in ARREAR, $15 per 1M tokens."""
    plan = PlanFactory()
    fixed(plan, "20", Price.Cadence.ADVANCE, "Platform")
    fixed(plan, "5", Price.Cadence.ARREAR, "Support")
    PriceFactory(plan=plan, meter=MeterFactory(), display_name="Tokens")
    return plan


def subscribe(plan, *, start: datetime = P0[0], **kwargs) -> Subscription:
    customer, _ = Customer.objects.get_or_create(external_id="acme", name="Acme")
    with time_machine.travel(start, tick=False):
        return subscription_create(customer=customer, plan=plan, start_date=start, **kwargs)


def use(tokens: int, moment: datetime) -> None:
    event = {
        "event_id": f"e-{moment.isoformat()}",
        "event_name": "tokens",
        "external_customer_id": "acme",
        "timestamp": moment.isoformat(),
        "properties": {"tokens": tokens},
    }
    ingest(event, now=moment)


def lines(invoice) -> list[tuple]:
    """(name, cadence, amount, line period) for each line, in price order."""
    return [
        (li.display_name, li.invoice_cadence, li.amount, (li.period_start, li.period_end))
        for li in invoice.line_items.order_by("price__created_at", "price_id")
    ]


def draft_of(subscription) -> Invoice:
    return Invoice.objects.get(subscription=subscription, invoice_status="DRAFT")


def close(moment: datetime) -> int:
    with time_machine.travel(moment, tick=False):
        return periods_close(now=moment)


def test_creation_bills_the_first_period_in_advance_on_a_finalized_invoice(plan):
    sub = subscribe(plan)
    first = Invoice.objects.get(subscription=sub, billing_reason=CREATE)
    assert first.invoice_status == "FINALIZED" and first.invoice_number == "INV-202801-00001"
    assert first.finalized_at == P0[0]
    assert (first.period_start, first.period_end) == P0
    assert lines(first) == [("Platform", "ADVANCE", Decimal("20.00"), P0)]
    assert first.total == first.subtotal == Decimal("20.00")
    draft = draft_of(sub)
    assert draft.billing_reason == CYCLE and (draft.period_start, draft.period_end) == P0


def test_a_plan_without_advance_prices_creates_no_creation_invoice():
    plan = PlanFactory()
    fixed(plan, "5", Price.Cadence.ARREAR, "Support")
    PriceFactory(plan=plan, meter=MeterFactory(), display_name="Tokens")
    sub = subscribe(plan)
    assert list(Invoice.objects.filter(subscription=sub).values_list("billing_reason")) == [
        (CYCLE,)
    ]
    # ARREAR fixed fees are billed for the period itself, as before.
    assert lines(draft_of(sub)) == [
        ("Support", "ARREAR", Decimal("5.00"), P0),
        ("Tokens", "ARREAR", Decimal("0.00"), P0),
    ]


def test_a_zero_advance_fee_gives_a_skipped_creation_invoice():
    plan = PlanFactory()
    fixed(plan, "0", Price.Cadence.ADVANCE, "Free tier")
    first = Invoice.objects.get(subscription=subscribe(plan), billing_reason=CREATE)
    assert first.invoice_status == "SKIPPED" and first.invoice_number is None


def test_advance_prices_in_another_currency_create_no_creation_invoice():
    plan = PlanFactory()
    fixed(plan, "5", Price.Cadence.ARREAR, "Support")
    PriceFactory(
        plan=plan,
        type=Price.Type.FIXED,
        billing_model=Price.BillingModel.FLAT_FEE,
        meter=None,
        divide_by=None,
        amount=Decimal("20"),
        currency="eur",
        invoice_cadence=Price.Cadence.ADVANCE,
    )
    sub = subscribe(plan, currency="usd")
    assert not Invoice.objects.filter(subscription=sub, billing_reason=CREATE).exists()
    assert [name for name, *_ in lines(draft_of(sub))] == ["Support"]


def test_the_draft_shows_usage_arrears_and_the_next_periods_advance_fee(plan):
    sub = subscribe(plan)
    use(2_500_000, at(2028, 2, 10))
    draft = invoice_propose(subscription=sub)
    assert lines(draft) == [
        ("Platform", "ADVANCE", Decimal("20.00"), P1),
        ("Support", "ARREAR", Decimal("5.00"), P0),
        ("Tokens", "ARREAR", Decimal("45.00"), P0),  # 3 packages of 1M
    ]
    assert draft.total == Decimal("70.00")


def test_closing_a_period_bills_the_next_one_in_advance_across_month_ends(plan):
    sub = subscribe(plan)
    use(2_500_000, at(2028, 2, 10))
    assert close(P0[1]) == 1
    closed = Invoice.objects.get(subscription=sub, billing_reason=CYCLE, period_start=P0[0])
    assert closed.invoice_status == "FINALIZED" and closed.invoice_number == "INV-202802-00001"
    assert (closed.period_start, closed.period_end) == P0
    assert lines(closed) == [
        ("Platform", "ADVANCE", Decimal("20.00"), P1),
        ("Support", "ARREAR", Decimal("5.00"), P0),
        ("Tokens", "ARREAR", Decimal("45.00"), P0),
    ]
    sub.refresh_from_db()
    assert (sub.current_period_start, sub.current_period_end) == P1
    assert lines(draft_of(sub)) == [
        ("Platform", "ADVANCE", Decimal("20.00"), P2),
        ("Support", "ARREAR", Decimal("5.00"), P1),
        ("Tokens", "ARREAR", Decimal("0.00"), P1),
    ]
    assert close(P1[1]) == 1
    assert lines(draft_of(sub))[0] == ("Platform", "ADVANCE", Decimal("20.00"), P3)
    # One creation invoice, then one per closed period, each period's fee billed once.
    billed = InvoiceLineItem.objects.filter(invoice__subscription=sub, invoice_cadence="ADVANCE")
    periods = billed.exclude(invoice__invoice_status="DRAFT").values_list(
        "period_start", "period_end"
    )
    assert sorted(periods) == [P0, P1, P2]


def test_cancel_at_period_end_leaves_the_next_advance_fee_off(plan):
    sub = subscribe(plan)
    subscription_cancel(subscription=sub, cancellation_type="end_of_period")
    assert [cadence for _, cadence, *_ in lines(draft_of(sub))] == ["ARREAR", "ARREAR"]
    close(P0[1])
    closed = Invoice.objects.get(subscription=sub, billing_reason=CYCLE)
    assert closed.invoice_status == "FINALIZED"
    assert lines(closed) == [
        ("Support", "ARREAR", Decimal("5.00"), P0),
        ("Tokens", "ARREAR", Decimal("0.00"), P0),
    ]
    sub.refresh_from_db()
    assert sub.status == "cancelled"
    assert not Invoice.objects.filter(subscription=sub, invoice_status="DRAFT").exists()


def test_an_end_date_at_the_period_end_leaves_the_next_advance_fee_off(plan):
    sub = subscribe(plan, end_date=P0[1])
    assert [cadence for _, cadence, *_ in lines(draft_of(sub))] == ["ARREAR", "ARREAR"]
    assert Invoice.objects.get(subscription=sub, billing_reason=CREATE).total == Decimal("20")


def test_cancel_immediately_bills_no_advance_fee_and_refunds_none(plan):
    sub = subscribe(plan)
    moment = at(2028, 2, 15)
    with time_machine.travel(moment, tick=False):
        subscription_cancel(subscription=sub, cancellation_type="immediate")
    closed = Invoice.objects.get(subscription=sub, billing_reason=CYCLE)
    assert closed.invoice_status == "FINALIZED"
    assert lines(closed) == [
        ("Support", "ARREAR", Decimal("5.00"), (P0[0], moment)),
        ("Tokens", "ARREAR", Decimal("0.00"), (P0[0], moment)),
    ]
    first = Invoice.objects.get(subscription=sub, billing_reason=CREATE)
    assert first.invoice_status == "FINALIZED" and first.total == Decimal("20")


def test_the_creation_invoice_does_not_make_the_periods_usage_late(plan):
    sub = subscribe(plan)
    use(1_000, at(2028, 2, 10))
    assert late_usage() == []
    assert Invoice.objects.get(subscription=sub, billing_reason=CREATE).total == Decimal("20")


def test_a_usage_price_stored_as_advance_is_still_billed_in_arrears():
    plan = PlanFactory()
    PriceFactory(plan=plan, meter=MeterFactory(), invoice_cadence="ADVANCE")  # skips clean()
    sub = subscribe(plan)
    assert not Invoice.objects.filter(subscription=sub, billing_reason=CREATE).exists()
    ((_, _, _, period),) = lines(draft_of(sub))
    assert period == P0


def _unsaved(anchor: datetime, period: str, count: int = 1) -> Subscription:
    return Subscription(
        billing_anchor=anchor,
        billing_period=period,
        billing_period_count=count,
        current_period_start=anchor,
        current_period_end=datetime.max.replace(tzinfo=UTC),
    )


@pytest.mark.parametrize(
    ("anchor", "period", "count", "starts", "ends"),
    [
        # Leap February, then back to the 31st.
        (P0[0], "MONTHLY", 1, [P0[0], P1[0], P2[0], P3[0]], [P1[0], P2[0], P3[0], P3[1]]),
        # A 30-day month and a common-year February clamp, the 31st comes back.
        (
            at(2027, 1, 31),
            "MONTHLY",
            1,
            [at(2027, 1, 31), at(2027, 2, 28), at(2027, 3, 31), at(2027, 4, 30)],
            [at(2027, 2, 28), at(2027, 3, 31), at(2027, 4, 30), at(2027, 5, 31)],
        ),
        # Quarterly from Aug 31: Nov 30, Feb 28 (2029 is common), May 31.
        (
            at(2028, 8, 31, 12),
            "QUARTERLY",
            1,
            [at(2028, 8, 31, 12), at(2028, 11, 30, 12), at(2029, 2, 28, 12)],
            [at(2028, 11, 30, 12), at(2029, 2, 28, 12), at(2029, 5, 31, 12)],
        ),
        # Every two months from Dec 31: Feb 29, Apr 30, Jun 30.
        (
            at(2027, 12, 31),
            "MONTHLY",
            2,
            [at(2027, 12, 31), at(2028, 2, 29), at(2028, 4, 30)],
            [at(2028, 2, 29), at(2028, 4, 30), at(2028, 6, 30)],
        ),
        # Annual from a leap day.
        (
            at(2028, 2, 29),
            "ANNUAL",
            1,
            [at(2028, 2, 29), at(2029, 2, 28), at(2031, 2, 28)],
            [at(2029, 2, 28), at(2030, 2, 28), at(2032, 2, 29)],
        ),
    ],
)
def test_an_advance_fee_covers_the_period_starting_where_it_is_billed(
    anchor, period, count, starts, ends
):
    subscription = _unsaved(anchor, period, count)
    assert [period_from(subscription=subscription, start=s) for s in starts] == list(
        zip(starts, ends, strict=True)
    )


def test_a_first_period_cut_short_by_a_calendar_anchor_is_billed_from_the_start():
    subscription = _unsaved(at(2028, 11, 1), "MONTHLY")
    start = at(2028, 11, 10, 8)
    assert period_from(subscription=subscription, start=start) == (start, at(2028, 12, 1))


def test_no_advance_period_once_the_subscription_has_ended():
    subscription = _unsaved(P0[0], "MONTHLY")
    subscription.end_date = P1[0]
    assert period_from(subscription=subscription, start=P0[0]) == P0
    assert period_from(subscription=subscription, start=P1[0]) is None
    subscription.end_date, subscription.cancel_at_period_end = None, True
    subscription.current_period_end = P1[0]
    assert period_from(subscription=subscription, start=P1[0]) is None


def test_a_calendar_subscription_starting_mid_month_pays_its_first_fee_from_its_start(plan):
    start = at(2028, 11, 10, 8)
    sub = subscribe(plan, start=start, billing_cycle=Subscription.Cycle.CALENDAR)
    first = Invoice.objects.get(subscription=sub, billing_reason=CREATE)
    assert lines(first) == [("Platform", "ADVANCE", Decimal("20.00"), (start, at(2028, 12, 1)))]
    assert lines(draft_of(sub))[0][3] == (at(2028, 12, 1), at(2029, 1, 1))
