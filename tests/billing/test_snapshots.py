"""Issue 9 item 4: a finalized invoice explains itself from its lines' snapshots, however
the catalog changes afterwards."""

from decimal import Decimal

import pytest
from django.urls import reverse
from rest_framework.test import APIClient

from billing.models import Invoice
from billing.services import invoice_finalize
from catalog.models import Meter, Price, PriceTier
from metering.services import api_key_create

pytestmark = pytest.mark.django_db


@pytest.fixture
def finalized(o1_plan, o1_subscriptions):
    """acme's demo invoice ($202.50 on o1 prices), finalized; then the catalog moves on,
    behind the admin's back."""
    plan, acme = o1_plan, o1_subscriptions["acme"]
    draft = Invoice.objects.get(subscription=acme, invoice_status="DRAFT")
    invoice = invoice_finalize(invoice=draft)
    Price.objects.filter(plan=plan).update(
        amount=Decimal("99"), divide_by=1000, billing_model="TIERED", tier_mode="SLAB"
    )
    for price in Price.objects.filter(plan=plan):
        PriceTier.objects.create(price=price, up_to=None, unit_amount=Decimal(7))
    Meter.objects.update(event_name="renamed", aggregation="COUNT", field="", filters=[])
    return invoice


def test_lines_keep_the_terms_and_meter_that_priced_them(finalized):
    line = finalized.line_items.get(display_name="Input Tokens")
    assert line.terms["billing_model"] == "PACKAGE"
    assert (line.terms["amount"], line.terms["divide_by"], line.terms["round"]) == (
        "15.000000000000",
        1_000_000,
        "up",
    )
    assert line.meter_definition["event_name"] == "tokens"
    assert line.meter_definition["aggregation"] == "SUM"
    assert {"key": "prompt_type", "values": ["input"]} in line.meter_definition["filters"]
    assert line.packages == Decimal(line.quantity / 1_000_000).to_integral_value("ROUND_CEILING")
    assert line.event_count > 0
    assert (line.unit_singular, line.unit_plural) == ("token", "tokens")


def test_the_portal_explains_a_finalized_invoice_from_its_snapshot(client, finalized):
    assert client.login(username="acme@example.com", password="acme-demo")
    page = client.get(reverse("portal:invoice", args=[finalized.pk])).content.decode()
    assert "$15.00 per 1,000,000 tokens" in page
    assert "$99" not in page and "Tiered" not in page
    assert "$202.50" in page


def test_the_api_explains_a_finalized_invoice_from_its_snapshot(finalized):
    client = APIClient()
    client.credentials(HTTP_X_API_KEY=api_key_create(name="t")[1])
    body = client.get(f"/v1/invoices/{finalized.pk}").json()
    [line] = [li for li in body["line_items"] if li["display_name"] == "Input Tokens"]
    assert line["pricing"]["amount"] == "15.000000000000"
    assert line["pricing"]["billing_model"] == "PACKAGE"
    assert line["meter"]["event_name"] == "tokens"
    assert line["event_count"] > 0 and line["packages"] is not None


def test_the_admin_explains_a_finalized_invoice_from_its_snapshot(admin_client, finalized):
    url = reverse("admin:billing_invoice_change", args=[finalized.pk])
    page = admin_client.get(url).content.decode()
    assert "$15.00 per 1,000,000 tokens" in page
    assert "tokens · SUM(tokens) where" in page
    assert "renamed" not in page
