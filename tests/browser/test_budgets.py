"""Issue 13 in Chromium: the customer sets a monthly budget with a hard cap in the portal,
usage runs past it, and the portal shows the cap reached."""

from datetime import timedelta
from decimal import Decimal

import pytest
from django.core import mail
from django.utils import timezone
from playwright.sync_api import expect

from billing.budgets import budget_capped
from billing.models import Budget
from tests.browser.test_portal import sign_in
from tests.browser.test_wallets import screenshot
from tests.factories import ingest

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def test_customer_sets_a_hard_cap_and_sees_it_reached(
    page, live_server, o1_subscriptions, tmp_path
):
    customer = o1_subscriptions["acme"].customer  # $202.50 proposed so far
    sign_in(page, live_server, "acme@example.com", "acme-demo")
    page.get_by_role("link", name="Budgets").click()

    page.get_by_label("Monthly budget").fill("3OO")  # letters: refused, shown
    page.get_by_role("button", name="Save budget").click()
    expect(page.get_by_test_id("amount-error")).to_contain_text("Enter a number.")
    assert not Budget.objects.exists()

    page.get_by_label("Monthly budget").fill("300")
    page.get_by_label("80%", exact=True).check()
    page.get_by_label("100%", exact=True).check()
    page.get_by_label("Stop use at 100% (hard cap)").check()
    page.get_by_role("button", name="Save budget").click()
    expect(page.get_by_test_id("budget-row")).to_contain_text(
        "$300.00, emails at 80%, 100%, hard cap"
    )
    status = page.get_by_test_id("budget-account")
    expect(status).to_contain_text("$202.50")
    expect(status).to_contain_text("67%")
    expect(status).to_contain_text("Within budget (hard cap at 100%)")
    assert not budget_capped(customer_id=customer.pk)
    screenshot(page, "portal-budgets.png", tmp_path)

    page.get_by_role("link", name="Usage").click()
    expect(page.get_by_test_id("budget-account")).to_contain_text("Within budget")
    # 10M input tokens at $15 per million: $352.50, past the $300 budget.
    ingest(
        {
            "event_id": "over-budget",
            "event_name": "tokens",
            "external_customer_id": "acme",
            "timestamp": (timezone.now() - timedelta(minutes=1)).isoformat(),
            "properties": {"model": "OpenAI O1", "prompt_type": "input", "tokens": 10_000_000},
        }
    )
    # The live panel refreshes itself once the recompute lands: no reload.
    expect(page.get_by_test_id("budget-capped")).to_have_text(
        "Cap reached: use is stopped", timeout=15_000
    )
    expect(page.get_by_test_id("budget-account")).to_contain_text("$352.50")
    expect(page.get_by_test_id("budget-account")).to_contain_text("117%")
    screenshot(page, "portal-budget-capped.png", tmp_path)
    assert budget_capped(customer_id=customer.pk)
    budget = Budget.objects.get()
    assert (budget.spent, budget.reached_percents) == (Decimal("352.50"), [80, 100])
    assert sorted(m.subject for m in mail.outbox) == [
        "100% of your budget for your account is used",
        "80% of your budget for your account is used",
    ]
