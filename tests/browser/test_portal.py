"""The portal in Chromium, through the pages a customer uses."""

import json
import os
import urllib.request
from datetime import timedelta
from decimal import Decimal
from pathlib import Path

import pytest
from django.utils import timezone
from playwright.sync_api import expect

from billing.models import Invoice
from billing.services import invoice_finalize
from metering.services import api_key_create

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]
DOCS = Path(__file__).resolve().parents[2] / "docs"


@pytest.fixture
def demo(o1_subscriptions):
    return o1_subscriptions


def sign_in(page, live_server, email, password):
    page.goto(f"{live_server.url}/portal/")
    expect(page).to_have_url(f"{live_server.url}/portal/login/?next=/portal/")
    page.get_by_label("Email").fill(email)
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Sign in").click()
    expect(page).to_have_url(f"{live_server.url}/portal/")


def send_event(live_server, body):
    _, key = api_key_create(name="browser")
    request = urllib.request.Request(
        f"{live_server.url}/v1/events",
        data=json.dumps(body).encode(),
        method="POST",
        headers={"content-type": "application/json", "x-api-key": key},
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        assert response.status == 202


def test_acme_sees_its_total_and_a_new_event_appears_without_reload(
    page, live_server, demo, tmp_path
):
    sign_in(page, live_server, "acme@example.com", "acme-demo")
    total = page.get_by_test_id("proposed-total")
    expect(total).to_have_text("$202.50")
    expect(page.get_by_role("heading", name="Input Tokens", exact=True)).to_be_visible()
    shot = (
        DOCS / "portal-home.png" if os.environ.get("UPDATE_SCREENSHOTS") else tmp_path / "home.png"
    )
    page.screenshot(path=str(shot), full_page=True)

    page.evaluate("window.notReloaded = true")
    send_event(
        live_server,
        {
            "event_name": "tokens",
            "external_customer_id": "acme",
            "timestamp": (timezone.now() - timedelta(seconds=5)).isoformat(),
            "properties": {"model": "OpenAI O1", "prompt_type": "output", "tokens": "1"},
        },
    )
    expect(total).to_have_text("$262.50", timeout=15_000)  # a third output package: +$60
    expect(page.get_by_test_id("live-changed")).to_contain_text("Total updated")
    expect(page.locator(".total-box.changed")).to_have_count(1)
    assert page.evaluate("window.notReloaded") is True


def test_invoice_page_and_its_print_view(page, live_server, demo):
    invoice = invoice_finalize(invoice=Invoice.objects.get(subscription=demo["acme"]))
    sign_in(page, live_server, "acme@example.com", "acme-demo")
    page.get_by_role("link", name="Invoices").click()
    page.get_by_role("link", name=invoice.invoice_number).click()
    expect(page.get_by_test_id("invoice-total")).to_have_text("$202.50")
    expect(page.get_by_role("button", name="Print")).to_be_visible()
    page.emulate_media(media="print")
    expect(page.locator("header.top")).to_be_hidden()
    expect(page.get_by_role("button", name="Print")).to_be_hidden()
    expect(page.get_by_test_id("invoice-total")).to_be_visible()


def test_globex_cannot_open_acmes_invoice(page, live_server, demo):
    acme_invoice = Invoice.objects.get(subscription=demo["acme"])
    sign_in(page, live_server, "globex@example.com", "globex-demo")
    expect(page.get_by_test_id("proposed-total")).to_have_text("$15.00")
    response = page.goto(f"{live_server.url}/portal/invoices/{acme_invoice.pk}/")
    assert response.status == 404
    page.goto(f"{live_server.url}/portal/invoices/")
    expect(page.get_by_text("$202.50")).to_have_count(0)


def test_events_say_where_they_are_billed_and_invoices_keep_their_terms(
    page, live_server, demo, tmp_path
):
    """Issue 9 items 4 and 6 through the real pages: after the invoice closes, a late event
    says so, billed events name their invoice, and a price change does not rewrite it."""
    from catalog.models import Price

    invoice = invoice_finalize(invoice=Invoice.objects.get(subscription=demo["acme"]))
    send_event(
        live_server,
        {
            "event_id": "late-one",
            "event_name": "tokens",
            "external_customer_id": "acme",
            "timestamp": (invoice.period_start + timedelta(minutes=1)).isoformat(),
            "properties": {"model": "OpenAI O1", "prompt_type": "input", "tokens": 7},
        },
    )
    Price.objects.update(amount=99)  # behind the admin's back: the invoice must not move
    sign_in(page, live_server, "acme@example.com", "acme-demo")
    page.get_by_role("link", name="Events").click()
    page.get_by_label("Feature").select_option(label="Input Tokens")
    page.get_by_role("button", name="Filter").click()
    late_row = page.locator("tr", has_text="late-one")
    expect(late_row).to_contain_text(f"late: it arrived after {invoice.invoice_number}")
    billed = page.locator("td.billed").first
    expect(billed).to_contain_text(f"Input Tokens on {invoice.invoice_number}")
    page.screenshot(path=str(tmp_path / "events.png"), full_page=True)

    page.get_by_role("link", name="Invoices").click()
    page.get_by_role("link", name=invoice.invoice_number).click()
    expect(page.get_by_test_id("invoice-total")).to_have_text("$202.50")
    expect(page.get_by_text("$15.00 per 1,000,000 tokens")).to_be_visible()
    expect(page.get_by_text("$99")).to_have_count(0)


def chart_bars(page, testid):
    """(label, total) of each bar of a chart, from the SVG itself."""
    return page.eval_on_selector_all(
        f"[data-testid={testid}] g.bar",
        "bars => bars.map(b => [b.dataset.label, b.dataset.total])",
    )


def chart_sum(page, testid):
    return sum((Decimal(total) for _, total in chart_bars(page, testid)), Decimal(0))


def test_cost_chart_adds_up_to_the_invoice_and_the_range_switch_moves_it(page, live_server, demo):
    from billing.services import subscription_period_close

    sign_in(page, live_server, "acme@example.com", "acme-demo")
    expect(page.get_by_test_id("cost-chart").locator("svg")).to_be_visible()
    assert chart_sum(page, "cost-chart") == Decimal("202.50")  # the proposed usage total
    expect(page.get_by_test_id("proposed-total")).to_have_text("$202.50")
    assert chart_sum(page, "usage-chart") == Decimal(8_000_000)

    subscription = demo["acme"]
    old_start = subscription.current_period_start
    subscription_period_close(subscription_id=subscription.pk, now=subscription.current_period_end)
    page.reload()
    assert chart_sum(page, "cost-chart") == 0  # the new period has no usage yet
    this_bars = chart_bars(page, "cost-chart")

    page.get_by_label("Last period").check()
    page.get_by_role("button", name="Show").click()
    expect(page.get_by_test_id("range-span")).to_contain_text(f"{old_start:%b} {old_start.day},")
    assert chart_sum(page, "cost-chart") == Decimal("202.50")
    assert chart_bars(page, "cost-chart")[0][0] != this_bars[0][0]

    page.get_by_label("Custom dates").check()
    page.locator("#id_start").fill((old_start - timedelta(days=1)).date().isoformat())
    page.locator("#id_end").fill(old_start.date().isoformat())
    page.get_by_role("button", name="Show").click()
    bars = chart_bars(page, "cost-chart")
    assert [Decimal(total) for _, total in bars] == [0, Decimal("202.50")]

    page.locator("#id_start").fill("2024-01-01")
    page.locator("#id_end").fill("2023-01-01")
    page.get_by_role("button", name="Show").click()
    expect(page.get_by_role("alert")).to_contain_text("To must not be before From")


def admin_sign_in(page, live_server):
    from django.contrib.auth import get_user_model

    get_user_model().objects.create_superuser("ops", "ops@example.com", "ops-secret-42")
    page.goto(f"{live_server.url}/admin/login/")
    page.fill("#id_username", "ops")
    page.fill("#id_password", "ops-secret-42")
    page.locator("input[type=submit]").click()
    expect(page).to_have_url(f"{live_server.url}/admin/")


@pytest.mark.parametrize("leave", ["Back to admin", "Sign out"])
def test_view_as_then_back_to_admin_keeps_the_staff_session(page, live_server, demo, leave):
    from metering.models import Customer

    acme = Customer.objects.get(external_id="acme")
    admin_sign_in(page, live_server)
    page.goto(f"{live_server.url}/admin/metering/customer/{acme.pk}/change/")
    page.get_by_role("button", name="View as customer").click()
    expect(page.get_by_test_id("view-as")).to_contain_text("Viewing as Acme AI (read-only)")
    expect(page.get_by_test_id("proposed-total")).to_have_text("$202.50")
    if leave == "Back to admin":
        page.get_by_role("link", name="Back to admin").click()
    else:
        page.get_by_role("button", name="Sign out").click()
    expect(page).to_have_url(f"{live_server.url}/admin/metering/customer/{acme.pk}/change/")
    page.goto(f"{live_server.url}/admin/")
    expect(page).to_have_url(f"{live_server.url}/admin/")  # still signed in, not sent to login


def test_events_page_fits_a_phone_and_shows_whole_ids(browser, live_server, demo, tmp_path):
    long_id = "req-2026-11-28-0123456789abcdef0123456789abcdef-retry-3"
    send_event(
        live_server,
        {
            "event_id": long_id,
            "event_name": "tokens",
            "external_customer_id": "acme",
            "timestamp": (timezone.now() - timedelta(seconds=5)).isoformat(),
            "properties": {"model": "OpenAI O1", "prompt_type": "input", "tokens": 1234567},
        },
    )
    context = browser.new_context(viewport={"width": 390, "height": 844})
    page = context.new_page()
    try:
        sign_in(page, live_server, "acme@example.com", "acme-demo")
        assert page.evaluate("document.documentElement.scrollWidth") <= 390  # charts scale
        page.screenshot(path=str(tmp_path / "home-390.png"), full_page=True)
        page.get_by_role("link", name="Events").click()
        expect(page.get_by_text(long_id)).to_be_visible()
        expect(page.get_by_text("tokens: 1,234,567")).to_be_visible()
        assert page.evaluate("document.documentElement.scrollWidth") <= 390
        for box in page.eval_on_selector_all(
            "td.event-id",
            """cells => cells.map(c => {
                const r = c.getBoundingClientRect();
                return [r.left, r.right, c.scrollWidth, c.clientWidth];
            })""",
        ):
            left, right, scroll_width, client_width = box
            assert left >= 0 and right <= 390 and scroll_width <= client_width
        page.screenshot(path=str(tmp_path / "events-390.png"), full_page=True)
    finally:
        context.close()


def test_password_reset_through_the_pages(page, live_server, demo):
    import re

    from django.core import mail

    page.goto(f"{live_server.url}/portal/login/")
    page.get_by_role("link", name="Forgot password?").click()
    page.get_by_label("Email").fill("acme@example.com")
    page.get_by_role("button", name="Send the link").click()
    expect(page.get_by_test_id("reset-sent")).to_be_visible()
    assert len(mail.outbox) == 1
    link = re.search(r"https?://\S+/portal/password-reset/\S+/", mail.outbox[0].body).group(0)
    page.goto(link)
    page.get_by_label("New password").fill("a-long-new-passphrase-42")
    page.get_by_label("Repeat it").fill("a-long-new-passphrase-42")
    page.get_by_role("button", name="Set password").click()
    expect(page.get_by_role("heading", name="Password set")).to_be_visible()
    page.get_by_role("link", name="Sign in").click()
    page.get_by_label("Email").fill("acme@example.com")
    page.get_by_label("Password").fill("a-long-new-passphrase-42")
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_test_id("proposed-total")).to_have_text("$202.50")
