"""Issue 13 on PostgreSQL: evaluations that run at once (threads with their own connections,
released together at a barrier) log a change of alert state once and report a budget's
threshold once, whatever the interleaving."""

from datetime import timedelta
from decimal import Decimal

import pytest
from django.utils import timezone

from billing import alerts, budgets, services, tasks
from billing.models import AlertLog, Budget, EventType, OutboxEmail, OutboxEvent, Price
from tests.billing.test_alerts import use as use_and_recompute
from tests.billing.test_late_usage import require_postgresql
from tests.billing.test_wallet_concurrency import race
from tests.factories import (
    CustomerFactory,
    MeterFactory,
    PlanFactory,
    PriceFactory,
    SubscriptionFactory,
)

pytestmark = pytest.mark.django_db(transaction=True)

D = Decimal


@pytest.fixture
def subscription():
    require_postgresql()
    plan = PlanFactory()
    PriceFactory(plan=plan, meter=MeterFactory(), amount=D(15), round=Price.Round.NONE)
    day_ago = timezone.now() - timedelta(days=1)
    return SubscriptionFactory(
        customer=CustomerFactory(external_id="acme", email="ops@acme.test"),
        plan=plan,
        start_date=day_ago,
        billing_anchor=day_ago,
    )


def use(n: int, tokens: int) -> None:
    """Ingest; its commit queues the recompute (in-process here)."""
    use_and_recompute(n, tokens, recompute=False)


def test_two_concurrent_evaluations_of_one_crossing_log_it_once(subscription):
    rule = alerts.alert_setting_create(
        entity_type="subscription",
        entity_id=subscription.pk,
        config={"alert_enabled": False, "warning": {"threshold": "10"}},
    )
    use(1, 1_000_000)  # its recompute (in-process here) says $15 now; the rule is off
    services.invoice_propose(subscription=subscription)
    # Switched on behind the evaluator's back: the two evaluations below find the crossing.
    type(rule).objects.filter(pk=rule.pk).update(config={**rule.config, "alert_enabled": True})
    logged = race(2, lambda i: alerts.subscription_alerts_check(subscription_id=subscription.pk))
    assert sorted(logged) == [0, 1]
    assert list(AlertLog.objects.values_list("sequence", "alert_status")) == [(1, "warning")]
    assert OutboxEvent.objects.filter(event_type=EventType.ALERT_STATE_CHANGED).count() == 1
    assert OutboxEmail.objects.count() == 1


def test_two_concurrent_budget_checks_report_a_threshold_once(subscription):
    use(1, 1_000_000)
    services.invoice_propose(subscription=subscription)
    # Stored without its first evaluation: the two checks below find the crossing.
    Budget.objects.create(
        customer=subscription.customer, amount=D(20), currency="usd", alert_percents=[50]
    )
    found = race(2, lambda i: budgets.customer_budgets_check(customer_id=subscription.customer_id))
    assert sorted(found) == [0, 1]
    assert OutboxEvent.objects.filter(event_type=EventType.BUDGET_THRESHOLD_REACHED).count() == 1
    assert OutboxEmail.objects.filter(key__startswith="budget:").count() == 1
    assert Budget.objects.get().reached_percents == [50]


def test_recomputes_racing_ingest_leave_one_consistent_chain_of_changes(subscription):
    """Stress: six recomputes at a time while usage climbs through every level. The log is
    one chain (sequence 1..n, each change from the state before it, never to the same
    state), ending in the state the usage now gives."""
    alerts.alert_setting_create(
        entity_type="subscription",
        entity_id=subscription.pk,
        config={
            "alert_enabled": True,
            "info": {"threshold": "10"},
            "warning": {"threshold": "25"},
            "critical": {"threshold": "40"},
        },
    )
    budgets.budget_set(
        customer=subscription.customer,
        amount=D(50),
        currency="usd",
        alert_percents=[50, 80, 100],
        hard_cap=True,
    )
    for step in range(4):
        use(step, 1_000_000)  # $15 more each step: info, warning, in_alarm, in_alarm
        race(6, lambda i: tasks.subscription_recompute(subscription_id=subscription.pk))
    logs = list(AlertLog.objects.order_by("sequence"))
    assert [log.sequence for log in logs] == list(range(1, len(logs) + 1))
    before = "ok"
    for log in logs:
        assert log.previous_status == before != log.alert_status
        before = log.alert_status
    assert [log.alert_status for log in logs] == ["info", "warning", "in_alarm"]
    percents = OutboxEvent.objects.filter(event_type=EventType.BUDGET_THRESHOLD_REACHED)
    assert sorted(e.data["percent"] for e in percents) == [50, 80, 100]
    assert budgets.budget_capped(customer_id=subscription.customer_id)
