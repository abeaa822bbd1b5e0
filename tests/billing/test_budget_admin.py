"""Issue 13: the operator sees customers' budgets in the admin and overrides one, evaluated
at once; locked, the customer cannot change it; alerts, their log and emails are listed."""

from decimal import Decimal

import pytest
from django.urls import reverse

from billing import alerts
from billing.budgets import budget_set
from billing.models import Budget
from tests.billing.test_alerts import subscription, use  # noqa: F401  (the fixture)

pytestmark = pytest.mark.django_db

D = Decimal


def budget_post(customer, **overrides) -> dict:
    return {
        "customer": customer.pk,
        "feature": "",
        "amount": "10",
        "currency": "usd",
        "alert_percents": ["50", "100"],
        "hard_cap": "on",
        "locked": "on",
        **overrides,
    }


def test_operator_overrides_a_budget_and_locks_it(admin_client, admin_user, subscription):  # noqa: F811
    use(1, 1_000_000, subscription=subscription)  # $15 so far
    customer = subscription.customer
    budget_set(customer=customer, amount=D(100), currency="usd", alert_percents=[80])
    budget = Budget.objects.get()
    url = reverse("admin:billing_budget_change", args=[budget.pk])
    page = admin_client.get(url).content.decode()
    assert "$15.00" in page and "15%" in page

    answer = admin_client.post(url, budget_post(customer))
    assert answer.status_code == 302, answer.content.decode()[:2000]
    budget.refresh_from_db()
    assert (budget.amount, budget.alert_percents, budget.hard_cap, budget.locked) == (
        D(10),
        [50, 100],
        True,
        True,
    )
    assert (budget.set_by, budget.set_by_user) == (Budget.SetBy.OPERATOR, admin_user)
    assert (budget.spent, budget.capped, budget.reached_percents) == (D(15), True, [50, 100])
    listed = admin_client.get(reverse("admin:billing_budget_changelist")).content.decode()
    assert "<strong>150%</strong>" in listed


def test_operator_adds_a_budget_and_a_bad_amount_is_shown(admin_client, subscription):  # noqa: F811
    customer = subscription.customer
    add = reverse("admin:billing_budget_add")
    refused = admin_client.post(add, budget_post(customer, amount="0"))
    assert refused.status_code == 200 and "errorlist" in refused.content.decode()
    refused = admin_client.post(add, budget_post(customer, alert_percents=["90"]))
    assert refused.status_code == 200 and "errorlist" in refused.content.decode()
    assert not Budget.objects.exists()
    assert admin_client.post(add, budget_post(customer, locked="")).status_code == 302
    budget = Budget.objects.get()
    assert (budget.set_by, budget.locked) == (Budget.SetBy.OPERATOR, False)


def test_alerts_their_log_and_emails_are_listed(admin_client, subscription):  # noqa: F811
    subscription.customer.email = "ops@acme.test"
    subscription.customer.save()
    alerts.alert_setting_create(
        entity_type="subscription",
        entity_id=subscription.pk,
        config={"alert_enabled": True, "warning": {"threshold": "10"}},
    )
    use(1, 1_000_000, subscription=subscription)
    for name, text in [
        ("alertsetting", "warning"),
        ("alertlog", "subscription_spend"),
        ("outboxemail", "ops@acme.test"),
    ]:
        page = admin_client.get(reverse(f"admin:billing_{name}_changelist"))
        assert text in page.content.decode(), name
