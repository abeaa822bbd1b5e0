"""The operator's overview in Chromium: what a staff user sees on /admin/ with the demo data."""

import os
import re
from datetime import timedelta
from pathlib import Path

import pytest
from django.core.cache import cache
from django.utils import timezone
from playwright.sync_api import expect

from billing.models import Invoice
from billing.overview import OVERVIEW_KEY
from billing.services import invoice_finalize
from catalog.money import format_money
from tests.factories import ingest

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]
DOCS = Path(__file__).resolve().parents[2] / "docs"


def sign_in_to_admin(page, live_server, username, password):
    page.goto(f"{live_server.url}/admin/")
    page.get_by_label("Username").fill(username)
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Log in").click()
    expect(page).to_have_url(f"{live_server.url}/admin/")


def test_staff_sees_the_month_and_follows_an_attention_count(
    page, live_server, o1_subscriptions, django_user_model, tmp_path
):
    cache.delete(OVERVIEW_KEY)  # computed afresh from this test's data
    django_user_model.objects.create_superuser("operator", "ops@example.com", "operator-pw-1")
    billed = invoice_finalize(
        invoice=Invoice.objects.get(subscription=o1_subscriptions["acme"], invoice_status="DRAFT")
    )
    proposed = Invoice.objects.get(subscription=o1_subscriptions["globex"], invoice_status="DRAFT")
    ingest(
        {
            "event_id": "from-a-stranger",
            "event_name": "tokens",
            "external_customer_id": "stranger",
            "timestamp": (timezone.now() - timedelta(minutes=2)).isoformat(),
            "properties": {"model": "OpenAI O1", "prompt_type": "input", "tokens": 10},
        }
    )

    sign_in_to_admin(page, live_server, "operator", "operator-pw-1")
    expect(page).to_have_title("Overview | Tally")
    overview = page.get_by_test_id("overview")
    expect(overview.get_by_test_id("billed")).to_contain_text(format_money(billed.total, "usd"))
    expect(overview.get_by_test_id("proposed")).to_contain_text(format_money(proposed.total, "usd"))
    by_plan = overview.get_by_test_id("by-plan")
    expect(by_plan.get_by_role("row", name="OpenAI O1")).to_contain_text(
        format_money(billed.total, "usd")
    )
    input_line = billed.line_items.get(display_name="Input Tokens")
    expect(
        overview.get_by_test_id("by-feature").get_by_role("row", name=re.compile(r"^Input Tokens"))
    ).to_contain_text(format_money(input_line.amount, "usd"))
    expect(overview.get_by_test_id("top-customers")).to_contain_text("Globex")
    chart = overview.get_by_test_id("usage-chart").first
    expect(chart.get_by_role("img")).to_be_visible()
    expect(chart).to_contain_text("Input Tokens")  # the legend
    expect(page.locator("#content-main .app-billing")).to_be_visible()  # the app list stays

    attention = overview.get_by_test_id("attention")
    unknown = attention.get_by_role("row", name="Events of unknown customers")
    expect(unknown.get_by_test_id("attention-count")).to_have_text("1")
    shot = (
        DOCS / "admin-overview.png"
        if os.environ.get("UPDATE_SCREENSHOTS")
        else tmp_path / "overview.png"
    )
    page.screenshot(path=str(shot), full_page=True)

    unknown.get_by_role("link").click()
    expect(page).to_have_url(f"{live_server.url}/admin/metering/customer/unmatched/")
    expect(page.get_by_role("cell", name="stranger", exact=True)).to_be_visible()
