"""auto_invoice_threshold on the subscription wire (issue 13)."""

import json

import pytest
from flexprice import Flexprice

from billing.models import Invoice, Subscription
from metering.models import Customer
from metering.services import api_key_create


def post(client, body):
    return client.post("/v1/subscriptions", json.dumps(body), content_type="application/json")


@pytest.fixture
def body(o1_plan):
    Customer.objects.create(external_id="initech", name="Initech")
    return {"plan_id": o1_plan.pk, "external_customer_id": "initech", "currency": "usd"}


@pytest.mark.django_db
def test_a_subscription_is_created_with_a_threshold_and_shows_it(api_client, body):
    created = post(api_client, {**body, "auto_invoice_threshold": "250.50"})

    assert created.status_code == 201, created.json()
    assert created.json()["auto_invoice_threshold"] == "250.5"
    shown = api_client.get(f"/v1/subscriptions/{created.json()['id']}").json()
    assert shown["auto_invoice_threshold"] == "250.5"


@pytest.mark.django_db
def test_without_a_threshold_the_field_is_null(api_client, body):
    created = post(api_client, body)
    assert created.status_code == 201 and created.json()["auto_invoice_threshold"] is None


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("threshold", "says"),
    [
        ("0", "more than 0"),
        ("-10", "more than 0"),
        ("10.005", "at most 2 decimals"),
        ("ten", "plain decimal number"),
        (" 5 ", "plain decimal number"),
        ("1" * 40, "digits"),
        ([], "number"),
    ],
)
def test_a_bad_threshold_is_a_400_naming_it_and_stores_nothing(api_client, body, threshold, says):
    refused = post(api_client, {**body, "auto_invoice_threshold": threshold})

    assert refused.status_code == 400, refused.json()
    details = refused.json()["error"]["details"]
    assert list(details) == ["auto_invoice_threshold"]
    assert says in json.dumps(details)
    assert not Subscription.objects.filter(customer__external_id="initech").exists()
    assert not Invoice.objects.filter(customer__external_id="initech").exists()


@pytest.mark.django_db(transaction=True)
def test_the_sdk_sends_the_threshold_and_reads_it_back(live_server, o1_plan):
    Customer.objects.create(external_id="initech", name="Initech")
    _, raw = api_key_create(name="sdk")
    with Flexprice(api_key_auth=raw, server_url=f"{live_server.url}/v1") as fp:
        created = fp.subscriptions.create_subscription(
            plan_id=o1_plan.pk,
            currency="usd",
            billing_period="MONTHLY",
            external_customer_id="initech",
            auto_invoice_threshold="100",
        )
        assert created.auto_invoice_threshold == "100"
        assert fp.subscriptions.get_subscription(id=created.id).auto_invoice_threshold == "100"
