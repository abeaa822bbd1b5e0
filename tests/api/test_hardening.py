"""Issue 10: no 500 and no silent change, on any input. Each test is one probe that failed."""

import json

import pytest
from django.db import connection

from billing.services import subscription_create
from metering.models import Customer, Event
from tests.factories import CustomerFactory, MeterFactory, PlanFactory, PriceFactory

pytestmark = pytest.mark.django_db


def post(client, path, body):
    data = body if isinstance(body, str | bytes) else json.dumps(body)
    return client.post(f"/v1/{path}", data=data, content_type="application/json")


def assert_error(response, status, *texts):
    assert response.status_code == status, response.content
    body = response.json()
    assert body["error"]["http_status_code"] == status
    assert body["message"] == body["error"]["message"]
    for text in texts:
        assert text in json.dumps(body), body
    return body


@pytest.fixture
def meter():
    return MeterFactory()


def event(**extra):
    return {
        "event_name": "tokens",
        "external_customer_id": "acme",
        "properties": {"tokens": "5"},
        **extra,
    }


@pytest.fixture
def plan(meter):
    price = PriceFactory(meter=meter)
    CustomerFactory(external_id="acme", name="Acme")
    return price.plan


# Datetimes: one definition, everywhere.


@pytest.mark.parametrize(
    "value",
    ["2026-01-01T00:00:00+18:00", "1999-12-31T23:59:59Z", "2100-01-01T00:00:00Z"],
)
def test_an_invoice_filter_beyond_the_bounds_is_a_400(api_client, value):
    response = api_client.get("/v1/invoices", {"period_end_lte": value})
    assert_error(response, 400, "period_end_lte")


def test_an_invoice_search_beyond_the_bounds_is_a_400(api_client):
    response = post(api_client, "invoices/search", {"period_end_lte": "9999-12-31T00:00:00Z"})
    assert_error(response, 400, "period_end_lte", "2100-01-01")


@pytest.mark.parametrize(
    "change, field",
    [
        ({"billing_period_count": 2_000_000_000}, "billing_period_count"),
        ({"billing_period": "ANNUAL", "billing_period_count": 1000}, "billing_period_count"),
        ({"start_date": "9999-12-31T00:00:00Z"}, "start_date"),
        ({"start_date": "0001-01-01T00:00:00Z"}, "start_date"),
        ({"billing_anchor": "2026-01-01T00:00:00-16:00"}, "billing_anchor"),
    ],
)
def test_a_subscription_beyond_the_bounds_is_a_400(api_client, plan, change, field):
    body = {"plan_id": plan.pk, "external_customer_id": "acme", **change}
    assert_error(post(api_client, "subscriptions", body), 400, field)


def test_a_monthly_period_of_twelve_months_is_allowed(api_client, plan):
    body = {"plan_id": plan.pk, "external_customer_id": "acme", "billing_period_count": 12}
    body["billing_period"] = "MONTHLY"
    assert post(api_client, "subscriptions", body).status_code == 201


def test_the_subscription_service_refuses_dates_beyond_the_bounds(plan):
    from datetime import UTC, datetime

    from django.core.exceptions import ValidationError

    with pytest.raises(ValidationError, match="2100"):
        subscription_create(
            customer=Customer.objects.get(),
            plan=plan,
            start_date=datetime(2200, 1, 1, tzinfo=UTC),
        )


@pytest.mark.parametrize(
    "timestamp",
    ["0001-01-01T00:00:00+14:00", "1999-12-31T23:59:59Z", "2026-01-01T00:00:00+16:00"],
)
def test_an_event_timestamp_beyond_the_bounds_is_a_400(api_client, meter, timestamp):
    assert_error(post(api_client, "events", event(timestamp=timestamp)), 400, "timestamp")
    assert not Event.objects.exists()


def _store_year_zero_event():
    """A row as an earlier Tally stored 0001-01-01T00:00:00+14:00: year 0 in UTC."""
    moment = "0001-12-31 10:00:00+00 BC" if connection.vendor == "postgresql" else None
    moment = moment or "0000-12-31 10:00:00"
    with connection.cursor() as cursor:
        cursor.execute(
            f"INSERT INTO {Event._meta.db_table} (event_id, event_name, external_customer_id, "
            "timestamp, ingested_at, source, properties) "
            "VALUES ('old', 'tokens', 'ghost', %s, %s, '', '{}')",
            [
                moment,
                "2026-01-01 00:00:00+00"
                if connection.vendor == "postgresql"
                else "2026-01-01 00:00:00",
            ],
        )


def test_an_unreadable_stored_event_does_not_poison_reads(api_client, admin_client, meter):
    _store_year_zero_event()
    assert post(api_client, "events", event(event_id="fine")).status_code == 202
    for query in ({"order": "asc"}, {"external_customer_id": "ghost"}, {}):
        response = api_client.get("/v1/events", query)
        assert response.status_code == 200, response.content
    assert [e["id"] for e in api_client.get("/v1/events").json()["events"]] == ["fine"]
    assert post(api_client, "events/query", {"order": "asc"}).status_code == 200
    assert admin_client.get("/admin/metering/event/").status_code == 200
    assert admin_client.get("/admin/metering/customer/unmatched/").status_code == 200


# Numbers: stored as sent or refused.


@pytest.mark.parametrize("number", ["1e400", "-1e400", "NaN", "Infinity"])
def test_an_unfit_number_in_properties_is_a_400_naming_it(api_client, meter, number):
    body = json.dumps(event()).replace('"tokens": "5"', f'"tokens": "5", "unused": {number}')
    assert_error(post(api_client, "events", body), 400, "properties.unused", number)
    assert not Event.objects.exists()


def test_an_unfit_number_in_a_bulk_names_its_event(api_client, meter):
    body = json.dumps({"events": [event(), event()]})
    body = body[: body.rindex("}}")] + ', "big": 1e999}}]}'
    assert_error(post(api_client, "events/bulk", body), 400, "events.1.properties.big")


@pytest.mark.parametrize("amount", [" 5 ", "5 ", "+5", "1_000", "٥", ".5"])
def test_an_amount_written_unusually_is_a_400(api_client, meter, amount):
    plan = PlanFactory()
    body = {
        "entity_type": "PLAN",
        "entity_id": plan.pk,
        "type": "USAGE",
        "billing_model": "PACKAGE",
        "amount": amount,
        "currency": "usd",
        "meter_id": meter.pk,
        "transform_quantity": {"divide_by": 1},
    }
    assert_error(post(api_client, "prices", body), 400, "amount")


# Paging: 0 ≤ offset ≤ 1,000,000 and 1 ≤ limit ≤ 1,000, or a 400 naming the parameter.


@pytest.mark.parametrize(
    "query, name",
    [
        ({"offset": "100000000000000000000"}, "offset"),
        ({"offset": "-1"}, "offset"),
        ({"page_size": "0"}, "page_size"),
    ],
)
def test_event_paging_beyond_the_bounds_is_a_400(api_client, query, name):
    assert_error(api_client.get("/v1/events", query), 400, name)
    body = {k: int(v) for k, v in query.items()}
    assert_error(post(api_client, "events/query", body), 400, name)


@pytest.mark.parametrize(
    "query, name",
    [
        ({"limit": "abc"}, "limit"),
        ({"limit": "0"}, "limit"),
        ({"limit": "1001"}, "limit"),
        ({"offset": "x"}, "offset"),
        ({"offset": "1000001"}, "offset"),
        ({"offset": "100000000000000000000"}, "offset"),
    ],
)
def test_list_paging_beyond_the_bounds_is_a_400(api_client, query, name):
    assert_error(api_client.get("/v1/customers", query), 400, name)


def test_list_paging_within_the_bounds_pages(api_client):
    response = api_client.get("/v1/customers", {"limit": "1000", "offset": "1000000"})
    assert response.status_code == 200
    assert response.json()["pagination"] == {"total": 0, "limit": 1000, "offset": 1000000}


# Catalog sizes.


def test_a_meter_with_too_many_filter_values_is_a_400(api_client):
    values = [f"v{n}" for n in range(101)]
    body = _feature(filters=[{"key": "model", "values": values}])
    assert_error(post(api_client, "features", body), 400, "at most 100 values")


def test_a_meter_with_too_many_filter_keys_is_a_400(api_client):
    body = _feature(filters=[{"key": f"k{n}", "values": ["v"]} for n in range(21)])
    assert_error(post(api_client, "features", body), 400, "At most 20 filter keys")


def test_a_meter_filter_value_over_255_characters_is_a_400(api_client):
    body = _feature(filters=[{"key": "model", "values": ["x" * 256]}])
    assert_error(post(api_client, "features", body), 400, "255 characters")


def _feature(*, filters):
    meter = {"event_name": "tokens", "aggregation": {"type": "COUNT"}, "filters": filters}
    return {"name": "Tokens", "lookup_key": "tokens", "type": "metered", "meter": meter}


def test_a_price_with_more_than_100_tiers_is_a_400(api_client, meter):
    plan = PlanFactory()
    tiers = [{"up_to": n, "unit_amount": "1"} for n in range(1, 101)] + [{"unit_amount": "1"}]
    body = {
        "entity_id": plan.pk,
        "type": "USAGE",
        "billing_model": "TIERED",
        "tier_mode": "SLAB",
        "currency": "usd",
        "meter_id": meter.pk,
        "tiers": tiers,
    }
    assert_error(post(api_client, "prices", body), 400, "At most 100 tiers")


def test_a_price_over_a_year_long_is_a_400(api_client, meter):
    plan = PlanFactory()
    body = {
        "entity_id": plan.pk,
        "type": "FIXED",
        "billing_model": "FLAT_FEE",
        "amount": "5",
        "currency": "usd",
        "billing_period": "WEEKLY",
        "billing_period_count": 53,
    }
    assert_error(post(api_client, "prices", body), 400, "billing_period_count", "at most 52")


# Every /v1/ answer is JSON in the error shape.


@pytest.mark.parametrize(
    "method, path, status",
    [
        ("post", "/v1/nothing", 404),
        ("get", "/v1/wallets", 405),
        ("delete", "/v1/nothing/here", 404),
        ("get", "/v1", 404),
        ("delete", "/v1/events", 405),
        ("put", "/v1/customers", 405),
    ],
)
def test_every_v1_answer_is_json_in_the_error_shape(api_client, method, path, status):
    from django.test import Client

    strict = Client(
        enforce_csrf_checks=True, HTTP_X_API_KEY=api_client._credentials.get("HTTP_X_API_KEY")
    )
    response = getattr(strict, method)(path)
    assert response["content-type"] == "application/json"
    assert_error(response, status)


def test_a_non_api_404_stays_an_html_page(client):
    response = client.get("/nothing/here")
    assert response.status_code == 404
    assert "application/json" not in response["content-type"]


def test_a_finite_float_property_is_stored_as_sent(api_client, meter):
    assert post(api_client, "events", event(properties={"tokens": 1.5})).status_code == 202
    assert Event.objects.get().properties["tokens"] == 1.5


def test_a_v1_request_for_an_unknown_host_is_a_json_400():
    from django.test import Client

    response = Client().get("/v1/customers", HTTP_HOST="evil.example")
    assert response["content-type"] == "application/json"
    assert_error(response, 400)


def test_a_v1_crash_answers_json_in_the_error_shape(api_client, monkeypatch):
    from metering import customer_api

    def crash(*args, **kwargs):
        raise RuntimeError("boom")

    monkeypatch.setattr(customer_api.CustomerViewSet, "list", crash)
    api_client.raise_request_exception = False
    response = api_client.get("/v1/customers")
    assert response["content-type"] == "application/json"
    body = assert_error(response, 500)
    assert "boom" not in json.dumps(body)
