"""Subscriptions and invoices over the API, on the o1 scenario."""

import json
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
import time_machine

from billing.demo import demo_catalog_load, demo_customers_load, scenario_load
from billing.models import Invoice, Subscription
from metering.models import Customer

pytestmark = pytest.mark.django_db


@pytest.fixture
def o1():
    plan = demo_catalog_load(scenario=scenario_load())
    subs = demo_customers_load(scenario=scenario_load(), plan=plan)
    return plan, {s.customer.external_id: s for s in subs}


def post(client, path, body=None):
    return client.post(f"/v1/{path}", json.dumps(body or {}), content_type="application/json")


def test_create_subscription_by_external_customer_id(api_client, o1):
    plan, _ = o1
    Customer.objects.create(external_id="initech", name="Initech")
    body = {
        "plan_id": plan.pk,
        "external_customer_id": "initech",
        "currency": "usd",
        "billing_period": "MONTHLY",
        "billing_cycle": "calendar",
        "start_date": "2026-11-10T08:00:00Z",
    }
    with time_machine.travel(datetime(2026, 11, 12, tzinfo=UTC), tick=False):
        response = post(api_client, "subscriptions", body)
    assert response.status_code == 201, response.json()
    data = response.json()
    assert data["subscription_status"] == "active" and data["billing_cadence"] == "RECURRING"
    assert data["current_period_start"] == "2026-11-10T08:00:00Z"
    assert data["current_period_end"] == "2026-12-01T00:00:00Z"
    assert Invoice.objects.filter(subscription_id=data["id"], invoice_status="DRAFT").exists()
    page = api_client.get("/v1/customers/external/initech/subscriptions").json()
    assert [s["id"] for s in page["items"]] == [data["id"]] and page["pagination"]["total"] == 1


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"plan_id": "plan_nope"}, "plan_id"),
        ({"external_customer_id": "nobody"}, "external_customer_id"),
        ({"external_customer_id": None}, "customer_id"),
        ({"currency": "eur"}, "currency"),
        ({"billing_period": "FORTNIGHTLY"}, "billing_period"),
        ({"start_date": "soon"}, "start_date"),
    ],
)
def test_bad_subscription_is_400_naming_the_field(api_client, o1, change, field):
    plan, _ = o1
    before = Subscription.objects.count()
    body = {"plan_id": plan.pk, "external_customer_id": "acme", "currency": "usd", **change}
    body = {k: v for k, v in body.items() if v is not None}
    response = post(api_client, "subscriptions", body)
    assert response.status_code == 400, response.json()
    assert field in response.json()["error"]["details"]
    assert Subscription.objects.count() == before


def test_list_search_and_get_subscriptions(api_client, o1):
    _, subs = o1
    listed = api_client.get("/v1/subscriptions", {"external_customer_id": "acme"}).json()
    assert [s["id"] for s in listed["items"]] == [subs["acme"].pk]
    found = post(api_client, "subscriptions/search", {"subscription_status": ["active"]}).json()
    assert found["pagination"]["total"] == 2
    one = api_client.get(f"/v1/subscriptions/{subs['globex'].pk}").json()
    assert one["customer_id"] == subs["globex"].customer_id
    assert api_client.get("/v1/subscriptions/subs_nope").status_code == 404


def test_preview_computes_the_proposed_invoice_live(api_client, o1):
    _, subs = o1
    count = Invoice.objects.count()
    response = post(api_client, "invoices/preview", {"subscription_id": subs["acme"].pk})
    assert response.status_code == 200
    data = response.json()
    assert (data["total"], data["subtotal"], data["amount_due"]) == ("202.50",) * 3
    assert {li["display_name"]: li["amount"] for li in data["line_items"]} == {
        "Input Tokens": "75.00",
        "Output Tokens": "120.00",
        "Cached Input Tokens": "7.50",
    }
    hidden = post(
        api_client,
        "invoices/preview",
        {"subscription_id": subs["globex"].pk, "hide_zero_charges_line_items": True},
    )
    assert [li["amount"] for li in hidden.json()["line_items"]] == ["15.00"]
    assert Invoice.objects.count() == count


def test_preview_of_another_period_and_bad_previews(api_client, o1):
    _, subs = o1
    sub = subs["acme"]
    earlier = {
        "subscription_id": sub.pk,
        "period_start": (sub.current_period_start - timedelta(days=1)).isoformat(),
        "period_end": sub.current_period_start.isoformat(),
    }
    assert post(api_client, "invoices/preview", earlier).json()["total"] == "135.00"  # e8
    bad = post(api_client, "invoices/preview", {**earlier, "period_end": earlier["period_start"]})
    assert bad.status_code == 400 and "period_end" in bad.json()["error"]["details"]
    missing = post(api_client, "invoices/preview", {"subscription_id": "subs_nope"})
    assert missing.status_code == 400 and "subscription_id" in missing.json()["error"]["details"]


def test_invoice_list_get_finalize_and_void(api_client, o1):
    _, subs = o1
    draft = Invoice.objects.get(subscription=subs["acme"])
    listed = api_client.get(
        "/v1/invoices", {"external_customer_id": "acme", "invoice_status": "DRAFT"}
    ).json()
    assert [i["id"] for i in listed["items"]] == [draft.pk] and listed["items"][0][
        "total"
    ] == "202.50"
    searched = post(api_client, "invoices/search", {"invoice_status": ["DRAFT"]}).json()
    assert searched["pagination"]["total"] == 2

    assert post(api_client, f"invoices/{draft.pk}/finalize").json() == {
        "message": "invoice finalized"
    }
    got = api_client.get(f"/v1/invoices/{draft.pk}").json()
    assert got["invoice_status"] == "FINALIZED" and got["invoice_number"].startswith("INV-")
    again = post(api_client, f"invoices/{draft.pk}/finalize")
    assert again.status_code == 400 and "Only a DRAFT" in again.json()["message"]

    assert post(api_client, f"invoices/{draft.pk}/void").status_code == 200
    voided = api_client.get(f"/v1/invoices/{draft.pk}").json()
    assert voided["invoice_status"] == "VOIDED" and voided["amount_due"] == "0.00"
    twice = post(api_client, f"invoices/{draft.pk}/void")
    assert twice.status_code == 400 and "cannot be voided" in twice.json()["message"]
    assert api_client.get("/v1/invoices/inv_nope").status_code == 404


def test_cancel_subscription(api_client, o1):
    _, subs = o1
    response = post(
        api_client,
        f"subscriptions/{subs['globex'].pk}/cancel",
        {"cancellation_type": "end_of_period"},
    )
    assert response.status_code == 200 and response.json()["status"] == "active"
    now = post(
        api_client, f"subscriptions/{subs['acme'].pk}/cancel", {"cancellation_type": "immediate"}
    )
    assert now.json()["status"] == "cancelled"
    closed = Invoice.objects.get(subscription=subs["acme"])
    assert closed.invoice_status == "FINALIZED" and closed.total == Decimal("202.50")
    twice = post(
        api_client, f"subscriptions/{subs['acme'].pk}/cancel", {"cancellation_type": "immediate"}
    )
    assert twice.status_code == 400
    bad = post(api_client, f"subscriptions/{subs['acme'].pk}/cancel", {"cancellation_type": "x"})
    assert bad.status_code == 400 and "cancellation_type" in bad.json()["error"]["details"]


def test_advance_fees_over_the_api_and_the_preview_equals_the_draft(api_client):
    from catalog.models import Price
    from tests.factories import MeterFactory, PlanFactory, PriceFactory

    plan = PlanFactory()
    for amount, cadence in (("20", "ADVANCE"), ("5", "ARREAR")):
        PriceFactory(
            plan=plan,
            type=Price.Type.FIXED,
            billing_model=Price.BillingModel.FLAT_FEE,
            meter=None,
            divide_by=None,
            amount=Decimal(amount),
            invoice_cadence=cadence,
            display_name=f"{cadence} fee",
        )
    PriceFactory(plan=plan, meter=MeterFactory(), display_name="Tokens")
    Customer.objects.create(external_id="initech", name="Initech")
    body = {"plan_id": plan.pk, "external_customer_id": "initech", "currency": "usd"}
    with time_machine.travel(datetime(2028, 1, 31, 9, 30, tzinfo=UTC), tick=False):
        created = post(api_client, "subscriptions", body)
    assert created.status_code == 201, created.json()
    sub_id = created.json()["id"]

    listed = api_client.get("/v1/invoices", {"subscription_id": sub_id}).json()["items"]
    by_reason = {i["billing_reason"]: i for i in listed}
    assert set(by_reason) == {"SUBSCRIPTION_CREATE", "SUBSCRIPTION_CYCLE"}
    first = by_reason["SUBSCRIPTION_CREATE"]
    assert (first["invoice_status"], first["total"]) == ("FINALIZED", "20.00")
    assert (first["period_start"], first["period_end"]) == (
        "2028-01-31T09:30:00Z",
        "2028-02-29T09:30:00Z",
    )
    assert [
        (li["display_name"], li["period_start"], li["period_end"]) for li in first["line_items"]
    ] == [("ADVANCE fee", "2028-01-31T09:30:00Z", "2028-02-29T09:30:00Z")]

    def shown(invoice):
        keys = ("price_id", "display_name", "amount", "period_start", "period_end")
        return [{k: li[k] for k in keys} for li in invoice["line_items"]]

    draft = api_client.get(f"/v1/invoices/{by_reason['SUBSCRIPTION_CYCLE']['id']}").json()
    preview = post(api_client, "invoices/preview", {"subscription_id": sub_id}).json()
    assert preview["billing_reason"] == draft["billing_reason"] == "SUBSCRIPTION_CYCLE"
    assert preview["total"] == draft["total"] == "25.00"
    assert shown(preview) == shown(draft)
    assert [(li["display_name"], li["period_start"]) for li in shown(draft)] == [
        ("ADVANCE fee", "2028-02-29T09:30:00Z"),  # the next period, billed as this one closes
        ("ARREAR fee", "2028-01-31T09:30:00Z"),
        ("Tokens", "2028-01-31T09:30:00Z"),
    ]


def test_a_preview_beyond_2100_is_a_400_not_a_500(api_client, o1):
    from catalog.services import price_create

    plan, subs = o1
    price_create(
        plan=plan,
        type="FIXED",
        billing_model="FLAT_FEE",
        amount=Decimal(20),
        invoice_cadence="ADVANCE",
    )
    far = {
        "subscription_id": subs["acme"].pk,
        "period_start": "9999-12-01T00:00:00Z",
        "period_end": "9999-12-31T23:00:00Z",
    }
    answer = post(api_client, "invoices/preview", far)
    assert answer.status_code == 400
    assert "period_start" in answer.json()["error"]["message"]
    assert "2100-01-01" in answer.json()["error"]["message"]
