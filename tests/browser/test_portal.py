"""The portal in Chromium, through the pages a customer uses."""

import json
import os
import urllib.request
from datetime import timedelta
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
