"""Issue 13: budgets the customer owns. Spend is the open period's proposed subtotal (or a
feature's lines); each threshold reached emails and emits budget.threshold_reached once per
period; a hard cap at 100 % makes ``budget_capped`` true, cheaply."""

from datetime import timedelta
from decimal import Decimal

import pytest
import time_machine
from django.core import mail
from django.core.exceptions import PermissionDenied, ValidationError
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from billing import budgets, services, tasks
from billing.budgets import budget_capped, budget_set
from billing.models import Budget, EventType, OutboxEvent, Price
from metering.services import portal_user_create
from tests.factories import (
    CustomerFactory,
    CustomerUserFactory,
    MeterFactory,
    PlanFactory,
    PriceFactory,
    SubscriptionFactory,
    ingest,
)

pytestmark = pytest.mark.django_db

D = Decimal


@pytest.fixture
def subscription():
    """acme on $15 per million input tokens and $60 per million output tokens, pro rata."""
    plan = PlanFactory()
    for kind, amount in (("input", 15), ("output", 60)):
        meter = MeterFactory(filters=[{"key": "kind", "values": [kind]}])
        PriceFactory(plan=plan, meter=meter, amount=D(amount), round=Price.Round.NONE)
    day_ago = timezone.now() - timedelta(days=1)
    customer = CustomerFactory(external_id="acme", name="Acme", email="billing@acme.test")
    CustomerUserFactory(customer=customer)  # billing@acme.test: mailed once
    portal_user_create(customer=customer, email="dev@acme.test", password="x", check_password=False)
    return SubscriptionFactory(
        customer=customer, plan=plan, start_date=day_ago, billing_anchor=day_ago
    )


def feature(subscription, kind: str):
    prices = subscription.plan.prices.select_related("meter__feature")
    return next(p.meter.feature for p in prices if p.meter.filters[0]["values"] == [kind])


def spend(subscription, n: int, kind: str, tokens: int) -> None:
    ingest(
        {
            "event_id": f"b-{n}",
            "event_name": "tokens",
            "external_customer_id": "acme",
            "timestamp": (timezone.now() - timedelta(minutes=5)).isoformat(),
            "properties": {"tokens": tokens, "kind": kind},
        }
    )
    tasks.subscription_recompute(subscription_id=subscription.pk)


def reached() -> list[int]:
    return [
        e.data["percent"]
        for e in OutboxEvent.objects.filter(event_type=EventType.BUDGET_THRESHOLD_REACHED).order_by(
            "created_at", "data__percent"
        )
    ]


def test_each_threshold_emails_and_emits_once_and_the_hard_cap_stops_use(
    subscription, django_capture_on_commit_callbacks
):
    customer = subscription.customer
    with django_capture_on_commit_callbacks(execute=True):
        budget = budget_set(
            customer=customer,
            amount=D(20),
            currency="usd",
            alert_percents=[50, 80, 100],
            hard_cap=True,
        )
        spend(subscription, 1, "input", 800_000)  # $12: 60 %
        spend(subscription, 2, "input", 1)  # $12.000015 rounds to $12.00: nothing new
        assert not budget_capped(customer_id=customer.pk)
        spend(subscription, 3, "input", 600_000)  # $21: 80 % and 100 % at once
        spend(subscription, 4, "input", 600_000)  # $30: all reached already
    budget.refresh_from_db()
    assert (budget.spent, budget.reached_percents, budget.capped) == (D(30), [50, 80, 100], True)
    assert reached() == [50, 80, 100]
    assert sorted((m.subject, m.to[0]) for m in mail.outbox) == sorted(
        (f"{p}% of your budget for your account is used", to)
        for p in (50, 80, 100)
        for to in ("billing@acme.test", "dev@acme.test")
    )
    assert budget_capped(customer_id=customer.pk)
    assert budget_capped(customer_id=customer.pk, feature_id=feature(subscription, "input").pk)


def test_a_feature_budget_counts_its_lines_and_caps_only_that_feature(subscription):
    customer, output = subscription.customer, feature(subscription, "output")
    budget_set(customer=customer, feature=output, amount=D(30), currency="usd", hard_cap=True)
    spend(subscription, 1, "input", 3_000_000)  # $45 of input: not the output budget's
    assert Budget.objects.get().spent == 0
    spend(subscription, 2, "output", 500_000)  # $30 of output
    assert Budget.objects.get().spent == D(30)
    assert reached() == [100]  # the cap's crossing is reported; no email was asked for
    assert mail.outbox == []
    assert budget_capped(customer_id=customer.pk, feature_id=output.pk)
    assert not budget_capped(customer_id=customer.pk, feature_id=feature(subscription, "input").pk)
    assert not budget_capped(customer_id=customer.pk)


def test_without_a_hard_cap_spend_past_the_budget_is_not_capped(subscription):
    budget_set(customer=subscription.customer, amount=D(10), currency="usd", alert_percents=[100])
    spend(subscription, 1, "input", 1_000_000)
    assert Budget.objects.get().percent_used == 150
    assert not budget_capped(customer_id=subscription.customer_id)


def test_thresholds_rearm_in_the_next_period(subscription):
    budget_set(customer=subscription.customer, amount=D(10), currency="usd", alert_percents=[50])
    spend(subscription, 1, "input", 1_000_000)
    assert reached() == [50]
    with time_machine.travel(subscription.current_period_end + timedelta(minutes=10)):
        services.periods_close(now=timezone.now())
        subscription.refresh_from_db()
        spend(subscription, 2, "input", 500_000)  # $7.50 in the new period
    budget = Budget.objects.get()
    assert (budget.spent, budget.reached_percents) == (D("7.5"), [50])
    assert reached() == [50, 50]


def test_a_new_amount_is_evaluated_at_once_and_its_thresholds_cross_anew(subscription):
    customer = subscription.customer
    budget_set(customer=customer, amount=D(100), currency="usd", alert_percents=[50])
    spend(subscription, 1, "input", 1_000_000)  # $15
    assert reached() == []
    budget = budget_set(customer=customer, amount=D(20), currency="usd", alert_percents=[50])
    assert (budget.spent, budget.reached_percents) == (D(15), [50])
    assert reached() == [50]


def test_a_locked_budget_is_the_operators(subscription, admin_user):
    customer = subscription.customer
    budget_set(
        customer=customer,
        amount=D(50),
        currency="usd",
        user=admin_user,
        set_by=Budget.SetBy.OPERATOR,
        locked=True,
    )
    with pytest.raises(PermissionDenied):
        budget_set(customer=customer, amount=D(500), currency="usd")
    with pytest.raises(PermissionDenied):
        budgets.budget_clear(budget=Budget.objects.get())
    budget_set(customer=customer, amount=D(60), currency="usd", set_by=Budget.SetBy.OPERATOR)
    assert Budget.objects.get().amount == D(60)


def test_budget_percents_are_among_50_80_100(subscription):
    with pytest.raises(ValidationError) as refused:
        budget_set(customer=subscription.customer, amount=D(5), currency="usd", alert_percents=[90])
    assert "alert_percents" in refused.value.message_dict
    assert not Budget.objects.exists()


def test_budget_capped_reads_the_cache_after_the_first_call(
    subscription, django_capture_on_commit_callbacks
):
    customer = subscription.customer
    with django_capture_on_commit_callbacks(execute=True):
        budget_set(customer=customer, amount=D(1), currency="usd", hard_cap=True)
    assert not budget_capped(customer_id=customer.pk)
    with CaptureQueriesContext(connection) as queries:
        for _ in range(100):
            budget_capped(customer_id=customer.pk, feature_id="feat_x")
    assert len(queries) == 0
    with django_capture_on_commit_callbacks(execute=True):
        spend(subscription, 1, "input", 1_000_000)  # the cap's change clears the cache
    assert budget_capped(customer_id=customer.pk)


def test_the_recompute_path_evaluates_budgets(subscription):
    budget_set(customer=subscription.customer, amount=D(30), currency="usd")
    ingest(
        {
            "event_id": "r-1",
            "event_name": "tokens",
            "external_customer_id": "acme",
            "timestamp": (timezone.now() - timedelta(minutes=5)).isoformat(),
            "properties": {"tokens": 1_000_000, "kind": "output"},
        }
    )
    assert Budget.objects.get().spent == 0
    tasks.invoice_recompute(subscription.pk)
    assert Budget.objects.get().spent == D(60)


def test_a_new_period_lifts_a_cap_without_any_usage(
    subscription, django_capture_on_commit_callbacks
):
    """Capped, the customer sends nothing more, so no recompute comes: closing the period
    re-evaluates the budget, and the new period starts uncapped."""
    budget_set(customer=subscription.customer, amount=D(10), currency="usd", hard_cap=True)
    spend(subscription, 1, "input", 1_000_000)
    assert budget_capped(customer_id=subscription.customer_id)
    with (
        time_machine.travel(subscription.current_period_end + timedelta(minutes=10)),
        django_capture_on_commit_callbacks(execute=True),
    ):
        assert tasks.periods_close() == 1
    budget = Budget.objects.get()
    assert (budget.spent, budget.capped, budget.reached_percents) == (0, False, [])
    assert not budget_capped(customer_id=subscription.customer_id)
