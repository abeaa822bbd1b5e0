"""The official flexprice SDK, unchanged, against a live Tally."""

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from flexprice import Flexprice
from flexprice.models import errors

from metering.services import api_key_create

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def fp(live_server):
    _, raw = api_key_create(name="sdk")
    with Flexprice(api_key_auth=raw, server_url=f"{live_server.url}/v1") as client:
        yield client


def o1_meter(prompt_type: str) -> dict:
    return {
        "name": f"o1 {prompt_type}",
        "event_name": "tokens",
        "reset_usage": "BILLING_PERIOD",
        "aggregation": {"type": "SUM", "field": "tokens"},
        "filters": [
            {"key": "model", "values": ["OpenAI O1"]},
            {"key": "prompt_type", "values": [prompt_type]},
        ],
    }


def o1_catalog(fp) -> tuple[dict, object, list]:
    """o1's input and output features, its plan and its two package prices, through the SDK."""
    features = {
        kind: fp.features.create_feature(
            name=f"{kind} tokens", type_="metered", lookup_key=f"o1-{kind}", meter=o1_meter(kind)
        )
        for kind in ("input", "output")
    }
    plan = fp.plans.create_plan(name="OpenAI O1", lookup_key="openai-o1")
    prices = [
        fp.prices.create_price(
            entity_type="PLAN",
            entity_id=plan.id,
            type_="USAGE",
            billing_model="PACKAGE",
            billing_period="MONTHLY",
            billing_period_count=1,
            invoice_cadence="ARREAR",
            price_unit_type="FIAT",
            currency="usd",
            amount=amount,
            meter_id=features[kind].meter_id,
            transform_quantity={"divide_by": 1000000, "round": "up"},
        )
        for kind, amount in (("input", "15"), ("output", "60"))
    ]
    return features, plan, prices


def test_sdk_builds_o1_ingests_and_reads_usage_and_invoices(fp):
    features, plan, prices = o1_catalog(fp)
    assert all(f.meter_id for f in features.values())
    for price, amount in zip(prices, ("15", "60"), strict=True):
        assert price.amount == amount and price.transform_quantity.divide_by == 1000000
    customer = fp.customers.create_customer(external_id="acme", name="Acme AI")
    assert fp.customers.get_customer_by_external_id(external_id="acme").id == customer.id
    assert fp.customers.query_customer(external_id="acme").pagination.total == 1

    now = datetime.now(UTC)
    stamp = (now - timedelta(minutes=1)).isoformat().replace("+00:00", "Z")
    ack = fp.events.ingest_event(
        event_name="tokens",
        external_customer_id="acme",
        event_id="sdk-1",
        timestamp=stamp,
        properties={"model": "OpenAI O1", "prompt_type": "input", "tokens": "2000000"},
    )
    assert ack["event_id"] == "sdk-1"
    bulk = fp.events.ingest_events_bulk(
        events=[
            {
                "event_name": "tokens",
                "external_customer_id": "acme",
                "event_id": f"sdk-b{n}",
                "timestamp": stamp,
                "properties": {"model": "OpenAI O1", "prompt_type": kind, "tokens": tokens},
            }
            for n, (kind, tokens) in enumerate([("input", "500000"), ("output", "1500000")])
        ]
    )
    assert bulk["accepted"] == "2"

    usage = fp.events.get_usage_by_meter(
        meter_id=features["input"].meter_id,
        external_customer_id="acme",
        start_time=now - timedelta(days=1),
        end_time=now + timedelta(minutes=1),
    )
    assert Decimal(str(usage.value)) == Decimal(2500000) and usage.type == "SUM"
    listed = fp.events.list_raw_events(external_customer_id="acme")
    assert len(listed.events) == 3

    subscription = fp.subscriptions.create_subscription(
        plan_id=plan.id,
        currency="usd",
        billing_period="MONTHLY",
        external_customer_id="acme",
        start_date=now - timedelta(hours=1),
    )
    preview = fp.invoices.get_invoice_preview(subscription_id=subscription.id)
    assert preview.total == "165.00"  # 3 input packages × $15 + 2 output packages × $60
    invoices = fp.invoices.query_invoice(subscription_id=subscription.id)
    draft = invoices.items[0]
    assert draft.invoice_status == "DRAFT" and draft.total == preview.total
    fp.invoices.finalize_invoice(id=draft.id)
    assert fp.invoices.get_invoice(id=draft.id).invoice_status == "FINALIZED"
    fp.invoices.void_invoice(id=draft.id)
    assert fp.invoices.get_invoice(id=draft.id).invoice_status == "VOIDED"

    with pytest.raises(errors.ErrorResponse) as missing:
        fp.customers.get_customer_by_external_id(external_id="nobody")
    assert missing.value.data.code == "not_found"
    with pytest.raises(errors.ErrorResponse) as refused:
        fp.events.ingest_event(
            event_name="tokens",
            external_customer_id="acme",
            properties={"model": "OpenAI O1", "prompt_type": "input", "tokens": "lots"},
        )
    assert "'tokens' is not a number" in str(refused.value)
