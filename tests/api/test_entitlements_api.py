"""Entitlements and the "may I?" check on Flexprice's wire: the API, and the official SDK
unchanged against a live Tally."""

import json
import time
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from django.utils import timezone
from flexprice.models import CustomerEntitlementsResponse, CustomerUsageSummaryResponse, errors

from billing import entitlement_api
from catalog.models import Entitlement, Feature
from catalog.services import entitlement_create
from tests.api.test_sdk import fp, o1_catalog  # noqa: F401  (fp is the live SDK client)
from tests.billing.test_entitlements import use
from tests.factories import (
    CustomerFactory,
    FeatureFactory,
    MeterFactory,
    PlanFactory,
    PriceFactory,
    SubscriptionFactory,
)

METERED = Feature.Type.METERED


def check(api_client, **params):
    response = api_client.get("/v1/customers/usage", params)
    return response.status_code, response.json()


def test_the_check_answers_flexprice_s_summary_with_tally_s_fields(api_client, entitled):
    use(250)
    status, body = check(api_client, customer_lookup_key="acme", feature_lookup_keys="tokens")
    assert status == 200
    parsed = CustomerUsageSummaryResponse.model_validate(body)
    (feature,) = parsed.features
    assert (feature.current_usage, feature.total_limit, feature.usage_percent) == (
        "250",
        1000,
        "25",
    )
    assert feature.is_enabled and not feature.is_soft_limit and not feature.is_unlimited
    assert feature.next_usage_reset_at == entitled["sub"].current_period_end
    assert feature.feature.id == entitled["meter"].feature.pk
    assert feature.sources[0].subscription_id == entitled["sub"].pk
    (raw,) = body["features"]
    assert (raw["allowed"], raw["reason"], raw["remaining"]) == (True, None, "750")
    assert raw["wallet_real_time_balance"] is None
    assert parsed.customer_id == entitled["sub"].customer_id
    assert parsed.period.start_time == entitled["sub"].current_period_start


def test_the_check_by_customer_id_and_feature_id_matches_the_lookup_keys(api_client, entitled):
    by_key = check(api_client, customer_lookup_key="acme")
    by_id = check(
        api_client,
        customer_id=entitled["sub"].customer_id,
        feature_ids=entitled["meter"].feature.pk,
    )
    assert by_key == by_id and by_key[0] == 200


def test_the_check_refuses_once_the_hard_limit_is_reached(api_client, entitled):
    use(1000)
    _, body = check(api_client, customer_lookup_key="acme")
    assert (body["features"][0]["allowed"], body["features"][0]["reason"]) == (
        False,
        "usage_limit_reached",
    )


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({}, "customer_id"),
        ({"customer_id": "cust_nobody"}, "customer_id"),
        ({"customer_lookup_key": "nobody"}, "customer_lookup_key"),
        ({"customer_lookup_key": "acme", "customer_id": "x"}, "customer_id"),
        ({"customer_lookup_key": "acme", "feature_ids": "feat_nope"}, "feature_ids"),
        ({"customer_lookup_key": "acme", "feature_lookup_keys": "nope"}, "feature_lookup_keys"),
        ({"customer_lookup_key": "acme", "subscription_ids": "s"}, "subscription_ids"),
        ({"customer_lookup_key": "acme", "feature_ids": ",".join("x" * 101)}, "feature_ids"),
    ],
)
def test_bad_or_unknown_check_parameters_are_a_400_naming_them(api_client, entitled, params, field):
    status, body = check(api_client, **params)
    assert status == 400, body
    assert field in body["error"]["details"], body


def test_the_check_needs_an_api_key(client, entitled):
    assert client.get("/v1/customers/usage?customer_lookup_key=acme").status_code == 401


def test_the_check_is_kept_at_most_a_second(api_client, entitled):
    assert check(api_client, customer_lookup_key="acme")[1]["features"][0]["current_usage"] == "0"
    use(10)
    started = time.monotonic()
    while check(api_client, customer_lookup_key="acme")[1]["features"][0]["current_usage"] == "0":
        assert time.monotonic() - started < entitlement_api.SUMMARY_SECONDS + 0.5
        time.sleep(0.05)


def test_customer_entitlements_by_external_id(api_client, entitled):
    flag = FeatureFactory(type="boolean", name="SSO")
    entitlement_create(plan=entitled["plan"], feature=flag, feature_type="boolean")
    response = api_client.get("/v1/customers/external/acme/entitlements")
    assert response.status_code == 200
    parsed = CustomerEntitlementsResponse.model_validate(response.json())
    by_feature = {f.feature.id: f for f in parsed.features}
    metered = by_feature[entitled["meter"].feature.pk].entitlement
    assert (metered.usage_limit, metered.usage_reset_period, metered.is_enabled) == (
        1000,
        "MONTHLY",
        True,
    )
    assert by_feature[flag.pk].entitlement.usage_limit is None
    assert [s.id for s in parsed.subscriptions] == [entitled["sub"].pk]
    missing = api_client.get("/v1/customers/external/nobody/entitlements")
    assert missing.status_code == 404


def test_entitlement_crud_search_and_plan_list(api_client, entitled):
    flag = FeatureFactory(type="boolean")
    created = api_client.post(
        "/v1/entitlements",
        {"entity_type": "PLAN", "entity_id": entitled["plan"].pk, "feature_id": flag.pk,
         "feature_type": "boolean", "is_enabled": False},
        format="json",
    )  # fmt: skip
    assert created.status_code == 201, created.json()
    pk = created.json()["id"]
    assert api_client.get(f"/v1/entitlements/{pk}").json()["is_enabled"] is False
    updated = api_client.put(f"/v1/entitlements/{pk}", {"is_enabled": True}, format="json")
    assert updated.status_code == 200 and updated.json()["is_enabled"] is True
    found = api_client.post("/v1/entitlements/search", {"feature_ids": [flag.pk]}, format="json")
    assert [e["id"] for e in found.json()["items"]] == [pk]
    listed = api_client.get(f"/v1/plans/{entitled['plan'].pk}/entitlements").json()
    assert len(listed["items"]) == 2
    deleted = api_client.delete(f"/v1/entitlements/{pk}")
    assert deleted.status_code == 200
    assert Entitlement.objects.get(pk=pk).status == "archived"
    assert len(api_client.get(f"/v1/plans/{entitled['plan'].pk}/entitlements").json()["items"]) == 1
    assert api_client.get("/v1/plans/plan_nope/entitlements").status_code == 404
    assert api_client.get("/v1/entitlements/ent_nope").status_code == 404


@pytest.mark.parametrize(
    ("body", "field", "code"),
    [
        ({"feature_type": "metered"}, "feature_id", "validation_error"),
        ({"feature_type": "boolean"}, "feature_type", "validation_error"),
        ({"feature_type": "metered", "usage_reset_period": "HOURLY"}, "usage_reset_period", None),
        ({"feature_type": "metered", "usage_limit": -1}, "usage_limit", None),
        ({"feature_type": "metered", "grant_quota": "5"}, "grant_quota", None),
        ({"feature_type": "metered"}, "non_field_errors", "already_exists"),
    ],
)
def test_bad_entitlements_are_a_400_naming_the_field(api_client, entitled, body, field, code):
    body = {"entity_id": entitled["plan"].pk, "feature_id": entitled["meter"].feature.pk, **body}
    if field == "feature_id":
        body["feature_id"] = "feat_nope"
    response = api_client.post("/v1/entitlements", body, format="json")
    assert response.status_code == 400
    error = response.json()["error"]
    assert field in error["details"], error
    if code:
        assert error["code"] == code


def test_bulk_creates_all_or_none(api_client, entitled):
    flags = [FeatureFactory(type="boolean") for _ in range(2)]
    items = [
        {"entity_id": entitled["plan"].pk, "feature_id": f.pk, "feature_type": "boolean"}
        for f in flags
    ]
    bad = api_client.post(
        "/v1/entitlements/bulk",
        {"items": [*items, {**items[0], "feature_type": "metered"}]},
        format="json",
    )
    assert bad.status_code == 400 and Entitlement.objects.count() == 1
    good = api_client.post("/v1/entitlements/bulk", {"items": items}, format="json")
    assert good.status_code == 201 and len(good.json()["items"]) == 2


@pytest.mark.django_db(transaction=True)
def test_an_event_ingested_over_http_flips_allowed_within_two_seconds(live_server):
    """The whole path: the SDK sends the event that reaches the limit; the next checks
    refuse within 2 s of the 202."""
    import httpx

    from metering.services import api_key_create

    meter = MeterFactory(feature__lookup_key="tokens")
    plan = PlanFactory()
    PriceFactory(plan=plan, meter=meter)
    entitlement_create(plan=plan, feature=meter.feature, feature_type=METERED, usage_limit=100)
    SubscriptionFactory(
        customer=CustomerFactory(external_id="acme"),
        plan=plan,
        start_date=timezone.now() - timedelta(hours=1),
    )
    _, key = api_key_create(name="flip")
    with httpx.Client(base_url=f"{live_server.url}/v1", headers={"x-api-key": key}) as http:

        def allowed() -> bool:
            answer = http.get("/customers/usage", params={"customer_lookup_key": "acme"})
            return answer.json()["features"][0]["allowed"]

        assert allowed()
        sent = http.post(
            "/events",
            json={"event_name": "tokens", "external_customer_id": "acme",
                  "properties": {"tokens": "100"}},
        )  # fmt: skip
        assert sent.status_code == 202
        acked = time.monotonic()
        while allowed():
            assert time.monotonic() - acked < 2.0, "still allowed 2 s after the event"
            time.sleep(0.02)


@pytest.mark.django_db(transaction=True)
def test_sdk_entitlement_calls_work_unchanged(fp):  # noqa: F811
    features, plan, _ = o1_catalog(fp)
    flag = fp.features.create_feature(name="SSO", type_="boolean", lookup_key="sso")
    limited = fp.entitlements.create_entitlement(
        feature_id=features["input"].id,
        feature_type="metered",
        plan_id=plan.id,
        usage_limit=1000,
        usage_reset_period="MONTHLY",
    )
    assert (limited.usage_limit, limited.feature_type, limited.status) == (
        1000,
        "metered",
        "published",
    )
    bulk = fp.entitlements.create_entitlements_bulk(
        items=[
            {"feature_id": flag.id, "feature_type": "boolean", "plan_id": plan.id},
            {"feature_id": features["output"].id, "feature_type": "metered",
             "plan_id": plan.id, "usage_limit": 10, "is_soft_limit": True},
        ]
    )  # fmt: skip
    assert len(bulk.items) == 2
    assert fp.entitlements.get_entitlement(id=limited.id).id == limited.id
    assert len(fp.entitlements.get_plan_entitlements(id=plan.id).items) == 3
    assert fp.entitlements.query_entitlement(plan_ids=[plan.id]).pagination.total == 3
    changed = fp.entitlements.update_entitlement(id=limited.id, usage_limit=2000)
    assert changed.usage_limit == 2000

    customer = fp.customers.create_customer(external_id="acme", name="Acme AI")
    fp.subscriptions.create_subscription(
        plan_id=plan.id,
        currency="usd",
        billing_period="MONTHLY",
        external_customer_id="acme",
        start_date=datetime.now(UTC) - timedelta(hours=1),
    )
    stamp = (datetime.now(UTC) - timedelta(minutes=1)).isoformat().replace("+00:00", "Z")
    fp.events.ingest_event(
        event_name="tokens",
        external_customer_id="acme",
        timestamp=stamp,
        properties={"model": "OpenAI O1", "prompt_type": "output", "tokens": "25"},
    )
    entitled = fp.customers.get_customer_entitlements_by_external_id(external_id="acme")
    assert {f.feature.id for f in entitled.features} == {
        features["input"].id,
        features["output"].id,
        flag.id,
    }
    summary = fp.customers.get_customer_usage_summary(
        customer_lookup_key="acme", feature_lookup_keys=["o1-output", "sso"]
    )
    by_key = {f.feature.lookup_key: f for f in summary.features}
    assert (by_key["o1-output"].current_usage, by_key["o1-output"].usage_percent) == (
        "25",
        "250",
    )
    assert by_key["o1-output"].is_soft_limit and by_key["sso"].is_enabled
    assert summary.customer_id == customer.id
    by_id = fp.customers.get_customer_usage_summary(
        customer_id=customer.id, feature_ids=[features["input"].id]
    )
    assert [f.current_usage for f in by_id.features] == ["0"]
    assert Decimal(by_id.features[0].usage_percent) == 0

    with pytest.raises(errors.ErrorResponse) as unknown:
        fp.customers.get_customer_usage_summary(customer_lookup_key="nobody")
    assert unknown.value.data.http_status_code == 400
    with pytest.raises(errors.ErrorResponse) as missing:
        fp.customers.get_customer_entitlements_by_external_id(external_id="nobody")
    assert missing.value.data.code == "not_found"
    assert fp.entitlements.delete_entitlement(id=limited.id).message == "entitlement archived"


def wsgi_get(app, query: str, key: str, host="testserver") -> tuple[str, dict, bytes]:
    """One GET through the WSGI application that gunicorn serves."""
    import io

    answer = {}

    def start_response(status, headers, exc_info=None):
        answer.update(status=status, headers=dict(headers))

    environ = {
        "REQUEST_METHOD": "GET",
        "PATH_INFO": "/v1/customers/usage",
        "QUERY_STRING": query,
        "SERVER_NAME": "testserver",
        "SERVER_PORT": "80",
        "HTTP_HOST": host,
        "wsgi.url_scheme": "http",
        "wsgi.input": io.BytesIO(b""),
        "wsgi.errors": io.StringIO(),
    }
    if key:
        environ["HTTP_X_API_KEY"] = key
    body = b"".join(app(environ, start_response))
    return answer["status"], answer["headers"], body


@pytest.mark.django_db(transaction=True)
def test_the_fast_path_serves_kept_answers_as_django_does_and_refuses_as_django_does(
    entitled, settings
):
    from config.wsgi import application
    from metering.services import api_key_create

    _, key = api_key_create(name="fast")
    django_status, django_headers, first = wsgi_get(application, "customer_lookup_key=acme", key)
    assert django_status == "200 OK"
    use(10)  # kept for up to a second: the fast path answers what Django answered
    status, headers, kept = wsgi_get(application, "customer_lookup_key=acme", key)
    assert (status, kept) == ("200 OK", first)
    assert headers == django_headers
    assert headers["X-Content-Type-Options"] == "nosniff"
    # a Host Django refuses is refused here too, kept answer or not
    assert wsgi_get(application, "customer_lookup_key=acme", key, "evil.example")[0].startswith(
        "400"
    )
    started = time.monotonic()
    while (
        json.loads(wsgi_get(application, "customer_lookup_key=acme", key)[2])["features"][0][
            "current_usage"
        ]
        == "0"
    ):
        assert time.monotonic() - started < entitlement_api.SUMMARY_SECONDS + 0.5
        time.sleep(0.05)
    assert wsgi_get(application, "customer_lookup_key=acme", "")[0].startswith("401")
    assert wsgi_get(application, "customer_lookup_key=acme", "not-a-key")[0].startswith("401")
    assert wsgi_get(application, "customer_lookup_key=nobody", key)[0].startswith("400")
    settings.TALLY_API_RATE = "1/min"
    statuses = [wsgi_get(application, "customer_lookup_key=acme", key)[0] for _ in range(2)]
    assert statuses[-1].startswith("429")
