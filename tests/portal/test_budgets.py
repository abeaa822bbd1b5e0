"""Issue 13: the customer's own budgets in the portal: set, cleared, validated, shown on the
home page, never another customer's, never through a read-only view."""

from decimal import Decimal

import pytest
from django.core import mail
from django.test import Client
from django.urls import reverse

from billing.budgets import budget_capped, budget_set
from billing.models import Budget
from tests.portal.test_credits import by_testid

pytestmark = pytest.mark.django_db

D = Decimal
PAGE = "portal:budgets"


@pytest.fixture
def acme(client, o1_subscriptions):
    """Signed in as acme, whose proposed invoice is $202.50."""
    assert client.login(username="acme@example.com", password="acme-demo")
    return client


def set_budget(client, **fields):
    return client.post(reverse(PAGE), {"scope": "", "amount": "250", **fields})


def test_the_page_offers_the_account_and_the_plans_features(acme):
    page = acme.get(reverse(PAGE)).content.decode()
    assert "The whole account" in page
    for name in ("Input Tokens", "Output Tokens", "Cached Input Tokens"):
        assert name in page
    assert 'name="csrfmiddlewaretoken"' in page


def test_a_budget_set_in_the_portal_is_evaluated_at_once_and_shown_on_home(
    acme, o1_subscriptions, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True):
        answer = set_budget(acme, amount="250", alert_percents=["50", "80"])
    assert answer.status_code == 302
    budget = Budget.objects.get()
    customer = o1_subscriptions["acme"].customer
    assert (budget.customer, budget.feature, budget.amount, budget.set_by) == (
        customer,
        None,
        D(250),
        Budget.SetBy.CUSTOMER,
    )
    assert budget.set_by_user.email == "acme@example.com"
    assert (budget.spent, budget.reached_percents) == (D("202.50"), [50, 80])
    assert sorted(m.subject for m in mail.outbox) == [
        "50% of your budget for your account is used",
        "80% of your budget for your account is used",
    ]
    home = acme.get(reverse("portal:home")).content.decode()
    assert "$202.50" in home and "$250.00" in home and "81%" in home
    assert 'data-testid="budget-capped"' not in home


def test_a_hard_cap_reached_shows_on_home_and_caps(acme, o1_subscriptions):
    assert set_budget(acme, amount="200", hard_cap="on").status_code == 302
    home = acme.get(reverse("portal:home")).content.decode()
    assert by_testid(home, "budget-capped") == "Cap reached: use is stopped"
    assert budget_capped(customer_id=o1_subscriptions["acme"].customer_id)


def test_a_feature_budget_and_its_clearing(acme, o1_subscriptions):
    plan = o1_subscriptions["acme"].plan
    output = plan.prices.get(meter__feature__name="Output Tokens").meter.feature
    assert set_budget(acme, scope=output.pk, amount="10").status_code == 302
    budget = Budget.objects.get()
    assert budget.feature == output and budget.spent > 0
    assert acme.post(reverse("portal:budget-clear", args=[budget.pk])).status_code == 302
    assert not Budget.objects.exists()


@pytest.mark.parametrize(
    ("fields", "error"),
    [
        ({"amount": "abc"}, "Enter a number."),
        ({"amount": "-5"}, "greater than or equal to 0.01"),
        ({"amount": "1.234"}, "whole USD minor units"),
        ({"amount": "1e9999"}, "less than or equal to 1000000000"),
        ({"alert_percents": ["90"]}, "Select a valid choice"),
        ({"scope": "feat_not_on_the_plan"}, "Select a valid choice"),
    ],
)
def test_bad_input_is_shown_and_nothing_is_stored(acme, fields, error):
    answer = set_budget(acme, **fields)
    assert answer.status_code == 400
    assert error in answer.content.decode()
    assert not Budget.objects.exists()


def test_another_customers_budget_cannot_be_cleared(acme, o1_subscriptions):
    theirs = budget_set(customer=o1_subscriptions["globex"].customer, amount=D(5), currency="usd")
    assert acme.post(reverse("portal:budget-clear", args=[theirs.pk])).status_code == 404
    assert Budget.objects.filter(pk=theirs.pk).exists()
    assert "$5.00" not in acme.get(reverse(PAGE)).content.decode()


def test_a_budget_the_operator_locked_stays(acme, o1_subscriptions):
    locked = budget_set(
        customer=o1_subscriptions["acme"].customer,
        amount=D(1000),
        currency="usd",
        set_by=Budget.SetBy.OPERATOR,
        locked=True,
    )
    page = acme.get(reverse(PAGE)).content.decode()
    assert "set by your account manager" in page
    refused = set_budget(acme, amount="5000")
    assert (
        refused.status_code == 400
        and "The operator has set this budget" in refused.content.decode()
    )
    assert acme.post(reverse("portal:budget-clear", args=[locked.pk])).status_code == 400
    locked.refresh_from_db()
    assert locked.amount == D(1000)


def test_posting_needs_the_csrf_token(o1_subscriptions):
    client = Client(enforce_csrf_checks=True)
    assert client.login(username="acme@example.com", password="acme-demo")
    assert client.post(reverse(PAGE), {"amount": "10"}).status_code == 403
    assert not Budget.objects.exists()


def test_staff_viewing_as_the_customer_cannot_set_a_budget(admin_client, o1_subscriptions):
    customer = o1_subscriptions["acme"].customer
    admin_client.post(reverse("portal:view-as", args=[customer.pk]))
    assert admin_client.get(reverse(PAGE)).status_code == 200
    assert set_budget(admin_client).status_code == 403
    assert not Budget.objects.exists()
