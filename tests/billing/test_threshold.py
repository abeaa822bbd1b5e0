"""Issue 13: a subscription's auto_invoice_threshold. When the usage due since the cycle's last
invoice reaches it, an interim invoice bills the usage so far and the period's last invoice
bills the rest; over the period they bill what one end-of-period invoice would, to the cent."""

import itertools
from datetime import datetime, timedelta
from decimal import Decimal

import pytest
import time_machine
from django.core.exceptions import ValidationError
from django.db.models import Sum
from django.urls import reverse
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from billing import services
from billing.models import Invoice, InvoiceLineItem, Subscription
from billing.selectors import late_usage
from billing.services import subscription_cancel, subscription_create
from billing.wallets import wallet_create
from catalog.models import Price
from metering.models import Customer
from tests.billing import test_close_early
from tests.billing.test_close_early import P0, P1, at, close, draft_of, fixed, lines, use
from tests.conftest import load_scenario
from tests.factories import MeterFactory, PlanFactory, PriceFactory, PriceTierFactory

pytestmark = pytest.mark.django_db

THRESHOLD = Invoice.BillingReason.AUTO_INVOICE_THRESHOLD
CYCLE = Invoice.BillingReason.SUBSCRIPTION_CYCLE

plan = test_close_early.plan  # $20 platform fee in ADVANCE, $5 support in ARREAR, $15 per 1M


def subscribe(plan, threshold: str | None = "50", customer: str = "acme") -> Subscription:
    customer, _ = Customer.objects.get_or_create(external_id=customer, name=customer)
    with time_machine.travel(P0[0], tick=False):
        return subscription_create(
            customer=customer,
            plan=plan,
            start_date=P0[0],
            auto_invoice_threshold=None if threshold is None else Decimal(threshold),
        )


def recompute(subscription, moment: datetime) -> Invoice | None:
    """What the worker does about a second after ingest touched the subscription."""
    with time_machine.travel(moment, tick=False):
        return services.subscription_recompute(subscription_id=subscription.pk)


def interims(subscription) -> list[Invoice]:
    return list(
        Invoice.objects.filter(subscription=subscription, billing_reason=THRESHOLD).order_by(
            "period_start"
        )
    )


def cycle_invoices(subscription):
    return Invoice.objects.filter(
        subscription=subscription,
        billing_reason__in=Invoice.CYCLE_REASONS,
        period_end__lte=P0[1],
    ).exclude(invoice_status=Invoice.Status.DRAFT)


def test_crossing_the_threshold_finalizes_an_interim_invoice_for_the_usage_so_far(plan):
    sub = subscribe(plan)
    use("acme", 1, at(2028, 2, 10), 3_500_000)  # 4 packages: $60

    draft = recompute(sub, at(2028, 2, 10, 0, 0, 1))

    [interim] = interims(sub)
    assert interim.invoice_status == "FINALIZED" and interim.invoice_number
    assert interim.closed_early and interim.cycle_start == P0[0]
    assert (interim.period_start, interim.period_end) == (P0[0], at(2028, 2, 10, 0, 0, 1))
    # Usage only: the fixed fees are the cycle's, billed once when it ends.
    assert lines(interim) == [("Tokens", Decimal("60.00"), Decimal(0), (P0[0], interim.period_end))]
    assert (interim.subtotal, interim.total) == (Decimal("60.00"), Decimal("60.00"))
    # The draft for the rest of the period is the one recompute returns.
    assert draft == draft_of(sub) and draft.billing_reason == CYCLE
    assert (draft.period_start, draft.period_end) == (interim.period_end, P0[1])
    assert [(name, amount, before) for name, amount, before, _ in lines(draft)] == [
        ("Platform", Decimal("20.00"), Decimal(0)),
        ("Support", Decimal("5.00"), Decimal(0)),
        ("Tokens", Decimal("0.00"), Decimal("60.00")),
    ]


def test_below_the_threshold_the_draft_just_recomputes(plan):
    sub = subscribe(plan)
    use("acme", 1, at(2028, 2, 10), 3_000_000)  # $45, and $25 of fixed fees that do not count

    draft = recompute(sub, at(2028, 2, 10, 0, 0, 1))

    assert interims(sub) == []
    assert draft.is_draft and (draft.period_start, draft.period_end) == P0
    assert draft.total == Decimal("70.00")


def test_without_a_threshold_nothing_is_invoiced_early(plan):
    sub = subscribe(plan, threshold=None)
    use("acme", 1, at(2028, 2, 10), 30_000_000)
    recompute(sub, at(2028, 2, 10, 0, 0, 1))
    assert interims(sub) == []


def test_the_threshold_counts_only_usage_since_the_last_interim_invoice(plan):
    sub = subscribe(plan)
    use("acme", 1, at(2028, 2, 5), 3_500_000)
    recompute(sub, at(2028, 2, 5, 0, 0, 1))  # $60: the first interim
    use("acme", 2, at(2028, 2, 10), 3_000_000)
    recompute(sub, at(2028, 2, 10, 0, 0, 1))  # 6.5M: 7 packages, $105 less 60 = $45: not yet
    assert len(interims(sub)) == 1
    use("acme", 3, at(2028, 2, 12), 1_000_000)
    recompute(sub, at(2028, 2, 12, 0, 0, 1))  # 7.5M: $120 less 60 = $60: the second
    use("acme", 4, at(2028, 2, 20), 500_000)  # 8M: $120 less 120 = $0

    last = close(sub, P0[1])

    first, second = interims(sub)
    assert [first.total, second.total, last.total] == [Decimal(60), Decimal(60), Decimal(25)]
    assert second.cycle_start == last.cycle_start == P0[0]
    assert second.period_start == first.period_end and last.period_start == second.period_end
    # One end-of-period invoice for the same 8M tokens: $20 + $5 + 8 × $15.
    assert cycle_invoices(sub).aggregate(s=Sum("total"))["s"] == Decimal(145)
    advance = InvoiceLineItem.objects.filter(
        invoice__subscription=sub, invoice_cadence="ADVANCE", period_start=P1[0]
    ).exclude(invoice__invoice_status="DRAFT")
    assert advance.count() == 1  # the next period's fee, on the last invoice only
    assert late_usage() == []


def test_prepaid_credits_lower_the_amount_due_and_apply_to_the_interim_invoice(plan):
    sub = subscribe(plan)
    with time_machine.travel(P0[0], tick=False):
        wallet_create(customer=sub.customer, currency="usd", initial_credits=Decimal(30))
    use("acme", 1, at(2028, 2, 10), 3_500_000)  # $60 less $30 of credits: $30 due
    recompute(sub, at(2028, 2, 10, 0, 0, 1))
    assert interims(sub) == []

    use("acme", 2, at(2028, 2, 11), 2_000_000)  # $90 less $30: $60 due
    recompute(sub, at(2028, 2, 11, 0, 0, 1))

    [interim] = interims(sub)
    assert interim.subtotal == Decimal("90.00")
    assert interim.total_prepaid_credits_applied == Decimal("30.00")
    assert interim.total == interim.amount_due == Decimal("60.00")
    assert draft_of(sub).total_prepaid_credits_applied == 0  # nothing left for the rest


def test_cancelling_after_an_interim_invoice_bills_the_rest_once(plan):
    with_threshold, plain = subscribe(plan), subscribe(plan, None, "plain")
    for customer in ("acme", "plain"):
        use(customer, 1, at(2028, 2, 10), 3_500_000)
    recompute(with_threshold, at(2028, 2, 10, 0, 0, 1))
    for customer in ("acme", "plain"):
        use(customer, 2, at(2028, 2, 15), 1_200_000)
    for sub in (with_threshold, plain):
        with time_machine.travel(at(2028, 2, 20), tick=False):
            subscription_cancel(subscription=sub, cancellation_type="immediate")

    [interim] = interims(with_threshold)
    rest = Invoice.objects.get(subscription=with_threshold, period_start=interim.period_end)
    assert rest.invoice_status == "FINALIZED" and rest.billing_reason == CYCLE
    assert [(name, amount, before) for name, amount, before, _ in lines(rest)] == [
        ("Support", Decimal("5.00"), Decimal(0)),  # ARREAR, once; no next period to pay ahead
        ("Tokens", Decimal("15.00"), Decimal("60.00")),  # 4.7M: 5 packages, $75 less 60
    ]
    [single] = cycle_invoices(plain)
    assert interim.total + rest.total == single.total == Decimal(80)


def test_the_threshold_is_not_evaluated_once_the_period_is_due(plan):
    sub = subscribe(plan)
    use("acme", 1, at(2028, 2, 10), 3_500_000)
    with time_machine.travel(P0[1], tick=False):
        assert (
            services.subscription_threshold_invoice(subscription=sub, now=P0[1]) is None
        )  # period close bills it
    assert interims(sub) == []


def test_usage_stamped_at_the_crossing_or_sent_after_it_is_on_the_rest_not_late(plan):
    sub = subscribe(plan)
    use("acme", 1, at(2028, 2, 10), 3_500_000)
    crossing = at(2028, 2, 10, 0, 0, 1)
    use("acme", 2, crossing, 1_000_000)  # at the instant itself: the rest's
    recompute(sub, crossing)
    use("acme", 3, at(2028, 2, 9), 100)  # before the crossing, sent after it
    last = close(sub, P0[1])

    [interim] = interims(sub)
    assert interim.line_items.get(display_name="Tokens").event_count == 1
    assert last.line_items.get(display_name="Tokens").quantity == 4_500_100
    assert late_usage() == []


# Validation


@pytest.mark.parametrize(
    ("currency", "threshold", "message"),
    [
        ("usd", "0", "more than 0"),
        ("usd", "-5", "more than 0"),
        ("usd", "10.001", "USD amounts have at most 2 decimals"),
        ("jpy", "10.5", "JPY amounts have at most 0 decimals"),
        ("kwd", "1.0001", "KWD amounts have at most 3 decimals"),
    ],
)
def test_a_threshold_must_be_positive_in_the_currencys_minor_unit(currency, threshold, message):
    sub = Subscription(currency=currency, auto_invoice_threshold=Decimal(threshold))
    with pytest.raises(ValidationError, match=message) as error:
        sub.clean()
    assert list(error.value.message_dict) == ["auto_invoice_threshold"]


@pytest.mark.parametrize(
    ("currency", "threshold"), [("usd", "0.01"), ("jpy", "500"), ("usd", None)]
)
def test_a_threshold_in_whole_minor_units_is_valid(currency, threshold):
    Subscription(currency=currency, auto_invoice_threshold=threshold and Decimal(threshold)).clean()


def test_the_service_refuses_a_bad_threshold_and_stores_nothing(plan):
    with pytest.raises(ValidationError, match="at most 2 decimals"):
        subscribe(plan, threshold="0.005")
    assert not Subscription.objects.exists() and not Invoice.objects.exists()


# Split by thresholds or not, the period bills the same, to the cent.

SECONDS = int((P0[1] - P0[0]).total_seconds())
runs = itertools.count()


@pytest.fixture
def scenario_plan():
    """Fixed fees in ADVANCE and ARREAR, and one usage price per model of the pricing
    scenarios: package up with free units, package down, pro rata, VOLUME and SLAB tiers
    (with flat amounts), all on one SUM meter."""
    cases = load_scenario("pricing_cases.json")
    plan = PlanFactory()
    fixed(plan, "20", Price.Cadence.ADVANCE, "Platform")
    fixed(plan, "5", Price.Cadence.ARREAR, "Support")
    meter = MeterFactory()
    packages = cases["package"]
    for name, group, round_ in [
        ("Up, free units", packages[6], Price.Round.UP),
        ("Down", packages[1], Price.Round.DOWN),
    ]:
        PriceFactory(
            plan=plan,
            meter=meter,
            display_name=name,
            amount=Decimal(group["amount"]),
            divide_by=group["divide_by"],
            round=round_,
            free_units=Decimal(group.get("free_units", 0)),
        )
    PriceFactory(  # a third of a dollar per unit, rounded once on the line
        plan=plan,
        meter=meter,
        display_name="Pro rata",
        amount=Decimal(1),
        divide_by=3,
        round=Price.Round.NONE,
    )
    tiered = cases["tiered"]
    for name, group, mode in [
        ("Volume", tiered[0], Price.TierMode.VOLUME),
        ("Slab", tiered[2], Price.TierMode.SLAB),
    ]:
        price = PriceFactory(
            plan=plan,
            meter=meter,
            display_name=name,
            billing_model=Price.BillingModel.TIERED,
            tier_mode=mode,
            divide_by=None,
        )
        for tier in group["tiers"]:
            PriceTierFactory(
                price=price,
                up_to=tier["up_to"],
                unit_amount=Decimal(tier["unit_amount"]),
                flat_amount=Decimal(tier.get("flat_amount", "0")),
            )
    return plan


def billed_by_price(subscription) -> dict[str, Decimal]:
    rows = (
        cycle_invoices(subscription)
        .values_list("line_items__display_name")
        .annotate(billed=Sum("line_items__amount"))
    )
    return dict(rows)


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    stream=st.lists(
        # when, from the period's start; units; whether a recompute follows it
        st.tuples(st.integers(0, SECONDS - 2), st.integers(0, 40), st.booleans()),
        min_size=1,
        max_size=8,
    ),
    threshold_cents=st.integers(1, 200_000),
)
def test_threshold_invoices_add_up_to_the_single_end_of_period_invoice(
    scenario_plan, stream, threshold_cents
):
    run = next(runs)
    threshold = Decimal(threshold_cents).scaleb(-2)
    single = subscribe(scenario_plan, None, f"single-{run}")
    parted = subscribe(scenario_plan, str(threshold), f"parted-{run}")
    for n, (offset, units, recomputed) in enumerate(sorted(stream)):
        moment = P0[0] + timedelta(seconds=offset)
        for sub in (single, parted):
            use(sub.customer.external_id, n, moment, units)
        if recomputed:
            recompute(parted, moment + timedelta(seconds=1))
    close(single, P0[1])
    close(parted, P0[1])

    [whole] = cycle_invoices(single)
    parts = list(cycle_invoices(parted))
    assert sum(p.total for p in parts) == whole.total  # to the cent
    assert billed_by_price(parted) == billed_by_price(single)
    for part in parts:  # each is still the sum of its rounded lines
        assert part.subtotal == part.line_items.aggregate(s=Sum("amount"))["s"]
        if part.billing_reason == THRESHOLD:
            assert part.total >= threshold
    assert late_usage() == []


# The admin's subscription page


def test_the_operator_sets_a_threshold_when_adding_a_subscription(admin_client, plan):
    from tests.billing.test_admin import subscription_post

    customer = Customer.objects.create(external_id="initech", name="Initech")
    url = reverse("admin:billing_subscription_add")
    refused = admin_client.post(url, subscription_post(customer, plan, auto_invoice_threshold="-1"))
    assert refused.status_code == 200
    assert refused.context["adminform"].form.errors["auto_invoice_threshold"] == [
        "It must be more than 0."
    ]
    assert not Subscription.objects.exists()

    added = admin_client.post(url, subscription_post(customer, plan, auto_invoice_threshold="250"))

    assert added.status_code == 302
    assert Subscription.objects.get(customer=customer).auto_invoice_threshold == Decimal(250)


def test_the_operator_changes_or_clears_the_threshold_on_the_subscription_page(admin_client, plan):
    sub = subscribe(plan)
    url = reverse("admin:billing_subscription_change", args=[sub.pk])
    page = admin_client.get(url)
    assert page.status_code == 200 and "Finalize an interim invoice" in page.content.decode()

    refused = admin_client.post(url, {"metadata": "{}", "auto_invoice_threshold": "12.345"})
    assert refused.context["adminform"].form.errors["auto_invoice_threshold"] == [
        "USD amounts have at most 2 decimals."
    ]
    changed = admin_client.post(url, {"metadata": "{}", "auto_invoice_threshold": "75.50"})
    assert changed.status_code == 302
    sub.refresh_from_db()
    assert sub.auto_invoice_threshold == Decimal("75.50")

    admin_client.post(url, {"metadata": "{}", "auto_invoice_threshold": ""})
    sub.refresh_from_db()
    assert sub.auto_invoice_threshold is None
