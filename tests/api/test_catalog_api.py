import copy
from decimal import Decimal

import pytest
from django.core.management import call_command

from catalog import pricing
from catalog.models import Feature, Meter, Plan, Price, PriceTier
from catalog.services import plan_version_create
from tests.api.asserts import assert_error
from tests.factories import MeterFactory, PlanFactory

pytestmark = pytest.mark.django_db

METER = {
    "name": "Input tokens",
    "event_name": "tokens",
    "aggregation": {"type": "SUM", "field": "tokens"},
    "filters": [{"key": "model", "values": ["OpenAI O1"]}],
    "reset_usage": "BILLING_PERIOD",
}


def post(client, path, body):
    return client.post(path, body, format="json")


def make_feature(client, **fields):
    body = {"name": "Input Tokens", "type": "metered", "meter": METER, **fields}
    response = post(client, "/v1/features", body)
    assert response.status_code == 201, response.content
    return response.json()


def make_plan(client, **fields):
    response = post(client, "/v1/plans", {"name": "Pro", **fields})
    assert response.status_code == 201, response.content
    return response.json()


@pytest.fixture
def plan(api_client):
    return make_plan(api_client, lookup_key="pro")


@pytest.fixture
def meter_id(api_client):
    return make_feature(api_client)["meter_id"]


def package(plan, meter_id, **fields):
    return {
        "entity_type": "PLAN",
        "entity_id": plan["id"],
        "type": "USAGE",
        "billing_model": "PACKAGE",
        "billing_period": "MONTHLY",
        "billing_period_count": 1,
        "invoice_cadence": "ARREAR",
        "price_unit_type": "FIAT",
        "currency": "usd",
        "amount": "15",
        "meter_id": meter_id,
        "transform_quantity": {"divide_by": 1000000, "round": "up"},
        **fields,
    }


def tiered(plan, meter_id, **fields):
    body = package(plan, meter_id, billing_model="TIERED", tier_mode="SLAB", **fields)
    del body["amount"], body["transform_quantity"]
    body.setdefault(
        "tiers",
        [
            {"up_to": 100, "unit_amount": "0.5"},
            {"up_to": "1000.5", "unit_amount": "0.25", "flat_amount": "1"},
            {"up_to": None, "unit_amount": "0.1", "flat_amount": "2"},
        ],
    )
    return body


def nothing_stored(*models):
    for model in models or (Feature, Meter, Price, PriceTier):
        assert not model.objects.exists(), model


# The o1 plan, end to end


def test_the_o1_plan_built_through_the_api(api_client, o1_scenario):
    meter_ids = {}
    for spec in o1_scenario["features"]:
        meter = {"name": spec["name"], "reset_usage": "BILLING_PERIOD", **spec["meter"]}
        body = {k: spec[k] for k in ("name", "type", "lookup_key")}
        feature = make_feature(api_client, **body, meter=meter)
        assert feature["meter"]["filters"] == spec["meter"]["filters"]
        meter_ids[spec["lookup_key"]] = feature["meter_id"]

    plan_spec = o1_scenario["plan"]
    plan = make_plan(api_client, name=plan_spec["name"], lookup_key=plan_spec["lookup_key"])
    for spec in plan_spec["prices"]:
        body = package(
            plan,
            meter_ids[spec["feature"]],
            amount=spec["amount"],
            transform_quantity=spec["transform_quantity"],
            display_name=spec["feature"],
        )
        assert post(api_client, "/v1/prices", body).status_code == 201

    got = api_client.get(f"/v1/plans/{plan['id']}").json()
    prices = {p["display_name"]: p for p in got["prices"]}
    assert {k: p["amount"] for k, p in prices.items()} == {
        "o1-input": "15",
        "o1-output": "60",
        "o1-cached-input": "7.5",
    }
    for p in prices.values():
        assert p["transform_quantity"] == {"divide_by": 1000000, "round": "up"}
        assert p["billing_model"] == "PACKAGE" and p["billing_cadence"] == "RECURRING"
    # What was stored prices tokens as the brief says: 5M input tokens cost $75.
    stored = Price.objects.get(id=prices["o1-input"]["id"])
    assert pricing.amount_for(stored.terms(), Decimal(5_000_001)) == Decimal(90)
    assert stored.meter.filters == o1_scenario["features"][0]["meter"]["filters"]


# Features


def test_feature_create_answers_the_flexprice_shape(api_client):
    body = make_feature(api_client, lookup_key="in", unit_singular="token", metadata={"a": "b"})
    feature = Feature.objects.get()
    assert body["id"] == feature.id and body["id"].startswith("feat_")
    assert body["meter_id"] == feature.meter.id == body["meter"]["id"]
    assert body["lookup_key"] == "in"
    assert body["type"] == "metered"
    assert body["metadata"] == {"a": "b"}
    assert body["meter"] | {"id": None, "created_at": None, "updated_at": None} == {
        "id": None,
        "name": "Input tokens",
        "event_name": "tokens",
        "aggregation": {"type": "SUM", "field": "tokens", "multiplier": None},
        "filters": [{"key": "model", "values": ["OpenAI O1"]}],
        "reset_usage": "BILLING_PERIOD",
        "status": "published",
        "created_at": None,
        "updated_at": None,
    }


def test_a_meter_without_a_name_takes_the_features(api_client):
    meter = {k: v for k, v in METER.items() if k != "name"}
    assert make_feature(api_client, name="Calls", meter=meter)["meter"]["name"] == "Calls"


def test_a_missing_lookup_key_is_made_unique_from_the_name(api_client):
    assert make_feature(api_client)["lookup_key"] == "input-tokens"
    assert make_feature(api_client)["lookup_key"] == "input-tokens-2"
    assert make_feature(api_client, lookup_key="")["lookup_key"] == "input-tokens-3"


def test_multiplier_and_count(api_client):
    meter = {
        **METER,
        "aggregation": {"type": "SUM_WITH_MULTIPLIER", "field": "t", "multiplier": 1e3},
    }
    body = make_feature(api_client, meter=meter)
    assert body["meter"]["aggregation"]["multiplier"] == "1000"
    counted = make_feature(
        api_client, meter={"event_name": "call", "aggregation": {"type": "COUNT"}}
    )
    assert counted["meter"]["aggregation"] == {"type": "COUNT", "field": "", "multiplier": None}
    assert counted["meter"]["filters"] == []


def test_a_boolean_feature_has_no_meter(api_client):
    response = post(api_client, "/v1/features", {"name": "SSO", "type": "boolean"})
    assert response.status_code == 201
    assert response.json()["meter_id"] is None and response.json()["meter"] is None
    assert api_client.get(f"/v1/features/{response.json()['id']}").json()["meter"] is None


def bad_meter(**aggregation_or_meter):
    meter = {**METER, **aggregation_or_meter}
    return {"name": "X", "type": "metered", "meter": meter}


@pytest.mark.parametrize(
    "body, field",
    [
        ({"type": "metered"}, ("name",)),
        ({"name": "", "meter": METER}, ("name",)),
        ({"name": "X"}, ("meter",)),
        ({"name": "X", "type": "metered", "meter": None}, ("meter",)),
        ({"name": "X", "type": "boolean", "meter": METER}, ("meter",)),
        ({"name": "X", "type": "config", "meter": METER}, ("type",)),
        ({"name": "X", "meter": 5}, ("meter",)),
        ({"name": "X", "meter": METER, "lookup_key": "has space"}, ("lookup_key",)),
        ({"name": "X", "meter": METER, "metadata": ["a"]}, ("metadata",)),
        (bad_meter(event_name=""), ("meter", "event_name")),
        (bad_meter(aggregation={"type": "MEDIAN", "field": "t"}), ("meter", "aggregation", "type")),
        (bad_meter(aggregation={"field": "t"}), ("meter", "aggregation", "type")),
        (bad_meter(aggregation="SUM"), ("meter", "aggregation")),
        (bad_meter(aggregation={"type": "SUM"}), ("meter", "aggregation", "field")),
        (
            bad_meter(aggregation={"type": "SUM_WITH_MULTIPLIER", "field": "t"}),
            ("meter", "aggregation", "multiplier"),
        ),
        (
            bad_meter(aggregation={"type": "SUM", "field": "t", "multiplier": "abc"}),
            ("meter", "aggregation", "multiplier"),
        ),
        (bad_meter(filters="model=o1"), ("meter", "filters")),
        (bad_meter(filters=[{"key": "model", "values": []}]), ("meter", "filters")),
        (bad_meter(filters=[{"key": "", "values": ["a"]}]), ("meter", "filters")),
        (bad_meter(filters=[{"key": "m", "values": "a"}]), ("meter", "filters")),
        (bad_meter(filters=[{"key": "m", "values": ["a\x00"]}]), ("meter", "filters")),
        (
            bad_meter(filters=[{"key": "m", "values": ["a"]}, {"key": "m", "values": ["b"]}]),
            ("meter", "filters"),
        ),
        (bad_meter(reset_usage="HOURLY"), ("meter", "reset_usage")),
    ],
)
def test_bad_features_are_a_400_naming_the_field(api_client, body, field):
    assert_error(post(api_client, "/v1/features", body), 400, *field)
    nothing_stored(Feature, Meter)


def test_a_duplicate_feature_lookup_key_is_already_exists(api_client):
    make_feature(api_client, lookup_key="in")
    body = {"name": "Other", "lookup_key": "in", "meter": METER}
    error = assert_error(post(api_client, "/v1/features", body), 400, "lookup_key")
    assert error["code"] == "already_exists"
    assert Feature.objects.count() == Meter.objects.count() == 1


@pytest.fixture
def features(api_client):
    return [
        make_feature(api_client, name="Input Tokens", lookup_key="in"),
        make_feature(api_client, name="Output Tokens", lookup_key="out"),
        make_feature(api_client, name="Calls", lookup_key="calls"),
    ]


def lookup_keys(response) -> set[str]:
    assert response.status_code == 200, response.content
    return {f["lookup_key"] for f in response.json()["items"]}


@pytest.mark.parametrize(
    "query, expected",
    [
        ("", {"in", "out", "calls"}),
        ("lookup_key=out", {"out"}),
        ("name=tokens", {"in", "out"}),
        ("type=boolean", set()),
    ],
)
def test_feature_list_filters(api_client, features, query, expected):
    assert lookup_keys(api_client.get(f"/v1/features?{query}")) == expected


def test_feature_search(api_client, features):
    def search(**body):
        return lookup_keys(post(api_client, "/v1/features/search", body))

    assert search() == {"in", "out", "calls"}
    assert search(feature_ids=[features[0]["id"]]) == {"in"}
    assert search(lookup_key="calls") == {"calls"}
    assert search(lookup_keys=["in", "calls"]) == {"in", "calls"}
    assert search(meter_ids=[features[1]["meter_id"]]) == {"out"}
    assert search(name_contains="TOKENS", limit=10) == {"in", "out"}
    page = post(api_client, "/v1/features/search", {"limit": 2}).json()
    assert page["pagination"] == {"total": 3, "limit": 2, "offset": 0}
    assert len(page["items"]) == 2
    assert_error(post(api_client, "/v1/features/search", {"feature_ids": 5}), 400, "feature_ids")


def test_feature_get(api_client, features):
    response = api_client.get(f"/v1/features/{features[0]['id']}")
    assert response.status_code == 200
    assert response.json() == features[0]
    assert_error(api_client.get("/v1/features/feat_nope"), 404)


# Plans


def test_plan_create_get_and_list(api_client):
    plan = make_plan(api_client, description="d", lookup_key="pro", metadata={"tier": "2"})
    assert plan["id"].startswith("plan_")
    assert {k: plan[k] for k in ("name", "description", "lookup_key", "status", "metadata")} == {
        "name": "Pro",
        "description": "d",
        "lookup_key": "pro",
        "status": "published",
        "metadata": {"tier": "2"},
    }
    assert plan["prices"] == []
    assert api_client.get(f"/v1/plans/{plan['id']}").json() == plan
    make_plan(api_client, name="Team")
    listed = api_client.get("/v1/plans?name=te").json()
    assert [p["name"] for p in listed["items"]] == ["Team"]
    assert api_client.get("/v1/plans?lookup_key=pro").json()["pagination"]["total"] == 1
    assert_error(api_client.get("/v1/plans/plan_nope"), 404)


def test_plan_search(api_client):
    pro, team = make_plan(api_client, lookup_key="pro"), make_plan(api_client, name="Team")
    response = post(api_client, "/v1/plans/search", {"plan_ids": [team["id"]]})
    assert [p["id"] for p in response.json()["items"]] == [team["id"]]
    response = post(api_client, "/v1/plans/search", {"lookup_key": "pro"})
    assert [p["id"] for p in response.json()["items"]] == [pro["id"]]
    assert post(api_client, "/v1/plans/search", {}).json()["pagination"]["total"] == 2


@pytest.mark.parametrize(
    "body, field",
    [
        ({}, "name"),
        ({"name": ""}, "name"),
        ({"name": "x" * 256}, "name"),
        ({"name": "P", "lookup_key": "not a slug"}, "lookup_key"),
        ({"name": "P", "metadata": {"k": ["v"]}}, "metadata"),
    ],
)
def test_bad_plans_are_a_400(api_client, body, field):
    assert_error(post(api_client, "/v1/plans", body), 400, field)
    nothing_stored(Plan)


def test_a_duplicate_plan_lookup_key_is_already_exists(api_client):
    make_plan(api_client, lookup_key="pro")
    error = assert_error(post(api_client, "/v1/plans", {"name": "B", "lookup_key": "pro"}), 400)
    assert error["code"] == "already_exists"


# Prices


def test_package_price_answers_the_flexprice_shape(api_client, plan, meter_id):
    response = post(api_client, "/v1/prices", package(plan, meter_id, metadata={"k": "v"}))
    assert response.status_code == 201
    body = response.json()
    assert body["id"] == Price.objects.get().id
    expected = {
        "entity_type": "PLAN",
        "entity_id": plan["id"],
        "type": "USAGE",
        "billing_model": "PACKAGE",
        "billing_cadence": "RECURRING",
        "billing_period": "MONTHLY",
        "billing_period_count": 1,
        "invoice_cadence": "ARREAR",
        "price_unit_type": "FIAT",
        "currency": "usd",
        "amount": "15",
        "meter_id": meter_id,
        "transform_quantity": {"divide_by": 1000000, "round": "up"},
        "free_units": "0",
        "tier_mode": None,
        "tiers": [],
        "metadata": {"k": "v"},
        "status": "published",
    }
    assert {k: body[k] for k in expected} == expected
    assert api_client.get(f"/v1/prices/{body['id']}").json() == body


def test_plan_id_is_accepted_for_entity_id(api_client, plan, meter_id):
    body = package(plan, meter_id)
    del body["entity_id"], body["entity_type"]
    response = post(api_client, "/v1/prices", {**body, "plan_id": plan["id"]})
    assert response.status_code == 201
    assert response.json()["entity_id"] == plan["id"]


def test_fixed_flat_fee_price(api_client, plan):
    body = {
        "entity_type": "PLAN",
        "entity_id": plan["id"],
        "type": "FIXED",
        "billing_model": "FLAT_FEE",
        "billing_period": "ANNUAL",
        "invoice_cadence": "ADVANCE",
        "currency": "EUR",
        "amount": 20,
        "display_name": "Base fee",
    }
    response = post(api_client, "/v1/prices", body)
    assert response.status_code == 201
    price = response.json()
    assert (price["amount"], price["currency"], price["meter_id"]) == ("20", "eur", None)
    assert (price["billing_period"], price["invoice_cadence"]) == ("ANNUAL", "ADVANCE")
    assert price["transform_quantity"] is None


def test_tiered_price_keeps_its_tiers(api_client, plan, meter_id):
    response = post(api_client, "/v1/prices", tiered(plan, meter_id))
    assert response.status_code == 201
    body = response.json()
    assert body["tier_mode"] == "SLAB"
    assert body["tiers"] == [
        {"up_to": 100, "unit_amount": "0.5", "flat_amount": "0"},
        {"up_to": "1000.5", "unit_amount": "0.25", "flat_amount": "1"},
        {"up_to": None, "unit_amount": "0.1", "flat_amount": "2"},
    ]
    stored = Price.objects.get()
    # 100 × 0.5 + (900.5 × 0.25 + 1) + (99.5 × 0.1 + 2) = 288.075
    assert pricing.amount_for(stored.terms(), Decimal(1100)) == Decimal("288.075")


def test_extensions_round_none_and_free_units(api_client, plan, meter_id):
    transform = {"divide_by": 1000000, "round": "none"}
    body = package(plan, meter_id, transform_quantity=transform, free_units="1000")
    price = post(api_client, "/v1/prices", body).json()
    assert price["transform_quantity"]["round"] == "none"
    assert price["free_units"] == "1000"


@pytest.mark.parametrize(
    "amount, shown",
    [("0.000015", "0.000015"), ("1E+2", "100"), ("15.000000000000", "15"), (7.5, "7.5")],
)
def test_amounts_are_plain_decimal_strings(api_client, plan, meter_id, amount, shown):
    price = post(api_client, "/v1/prices", package(plan, meter_id, amount=amount)).json()
    assert price["amount"] == shown


def test_a_decimal_tier_bound_is_kept_exactly(api_client, plan, meter_id):
    tiers = [{"up_to": "0.5", "unit_amount": "1"}, {"unit_amount": "0"}]
    price = post(api_client, "/v1/prices", tiered(plan, meter_id, tiers=tiers)).json()
    assert price["tiers"][0]["up_to"] == "0.5"
    assert price["tiers"][1]["up_to"] is None


def bad(base, *drop, **changes):
    def build(plan, meter_id):
        body = base(plan, meter_id)
        for key in drop:
            body.pop(key)
        return {**body, **changes}

    return build


@pytest.mark.parametrize(
    "build, field",
    [
        (bad(package, "entity_id"), ("entity_id",)),
        (bad(package, entity_id="plan_nope"), ("entity_id",)),
        (bad(package, entity_id=5), ("entity_id",)),
        (bad(package, entity_id=["x"]), ("entity_id",)),
        (bad(package, entity_type="ADDON"), ("entity_type",)),
        (bad(package, "entity_id", plan_id="plan_nope"), ("plan_id",)),
        (bad(package, "type"), ("type",)),
        (bad(package, type="METERED"), ("type",)),
        (bad(package, billing_model="GRADUATED"), ("billing_model",)),
        (bad(package, amount="abc"), ("amount",)),
        (bad(package, amount="NaN"), ("amount",)),
        (bad(package, amount="Infinity"), ("amount",)),
        (bad(package, amount=None), ("amount",)),
        (bad(package, amount=[]), ("amount",)),
        (bad(package, amount="-1"), ("amount",)),
        (bad(package, amount="0.0000000000001"), ("amount",)),
        (bad(package, amount="1" * 20), ("amount",)),
        (bad(package, currency="dollars"), ("currency",)),
        (bad(package, currency=5), ("currency",)),
        (bad(package, billing_period="ONETIME"), ("billing_period",)),
        (bad(package, billing_period_count=0), ("billing_period_count",)),
        (bad(package, billing_period_count="x"), ("billing_period_count",)),
        (bad(package, billing_period_count=2**63), ("billing_period_count",)),
        (bad(package, invoice_cadence="LATER"), ("invoice_cadence",)),
        (bad(package, price_unit_type="CUSTOM"), ("price_unit_type",)),
        (bad(package, "meter_id"), ("meter_id",)),
        (bad(package, meter_id="meter_nope"), ("meter_id",)),
        (bad(package, meter_id={"id": 1}), ("meter_id",)),
        (bad(package, type="FIXED", billing_model="FLAT_FEE"), ("meter_id",)),
        (bad(package, "transform_quantity"), ("transform_quantity", "divide_by")),
        (bad(package, transform_quantity={"round": "up"}), ("transform_quantity", "divide_by")),
        (bad(package, transform_quantity={"divide_by": 0}), ("transform_quantity", "divide_by")),
        (
            bad(package, transform_quantity={"divide_by": 10**30}),
            ("transform_quantity", "divide_by"),
        ),
        (bad(package, transform_quantity={"divide_by": "x"}), ("transform_quantity", "divide_by")),
        (
            bad(package, transform_quantity={"divide_by": 1, "round": "sideways"}),
            ("transform_quantity", "round"),
        ),
        (bad(package, transform_quantity=7), ("transform_quantity",)),
        (bad(package, free_units="-5"), ("free_units",)),
        (bad(package, tier_mode="STAIRS"), ("tier_mode",)),
        (bad(package, tiers=[{"unit_amount": "1"}]), ("tiers",)),
        (bad(package, lookup_key="not a slug"), ("lookup_key",)),
        (bad(package, display_name="x" * 256), ("display_name",)),
        (bad(package, metadata={"k": {"a": 1}}), ("metadata",)),
        (bad(tiered, tiers="x"), ("tiers",)),
        (bad(tiered, tiers=[]), ("tiers",)),
        (bad(tiered, "tiers"), ("tiers",)),
        (bad(tiered, tiers=[{"up_to": 5}]), ("tiers",)),
        (bad(tiered, tiers=[{"unit_amount": "abc"}]), ("tiers",)),
        (bad(tiered, tiers=[{"up_to": "x", "unit_amount": "1"}]), ("tiers",)),
        (bad(tiered, tiers=[{"unit_amount": "-1"}]), ("tiers",)),
        (bad(tiered, tiers=[{"unit_amount": "1", "flat_amount": "-1"}]), ("tiers",)),
        (bad(tiered, tiers=[{"up_to": 10, "unit_amount": "1"}]), ("tiers",)),
        (
            bad(tiered, tiers=[{"unit_amount": "1"}, {"up_to": 10, "unit_amount": "1"}]),
            ("tiers",),
        ),
        (
            bad(
                tiered,
                tiers=[
                    {"up_to": 10, "unit_amount": "1"},
                    {"up_to": 5, "unit_amount": "1"},
                    {"unit_amount": "1"},
                ],
            ),
            ("tiers",),
        ),
        (
            bad(
                tiered,
                tiers=[{"up_to": "0.0000000000001", "unit_amount": "1"}, {"unit_amount": "1"}],
            ),
            ("tiers",),
        ),
    ],
)
def test_bad_prices_are_a_400_naming_the_field(api_client, plan, meter_id, build, field):
    response = post(api_client, "/v1/prices", build(plan, meter_id))
    assert_error(response, 400, *field)
    nothing_stored(Price, PriceTier)


def test_a_usage_price_billed_in_advance_is_a_400_naming_invoice_cadence(
    api_client, plan, meter_id
):
    body = package(plan, meter_id, invoice_cadence="ADVANCE")
    error = assert_error(post(api_client, "/v1/prices", body), 400, "invoice_cadence")
    assert "always billed in arrears" in " ".join(error["error"]["details"]["invoice_cadence"])
    nothing_stored(Price, PriceTier)


def test_a_fixed_price_with_a_meter_names_it(api_client, plan, meter_id):
    body = package(plan, meter_id, type="FIXED", billing_model="PACKAGE")
    error = assert_error(post(api_client, "/v1/prices", body), 400, "billing_model")
    assert "FIXED" in error["error"]["details"]["meter_id"][0]


def test_a_duplicate_price_lookup_key_is_already_exists(api_client, plan, meter_id):
    assert (
        post(api_client, "/v1/prices", package(plan, meter_id, lookup_key="in")).status_code == 201
    )
    error = assert_error(
        post(api_client, "/v1/prices", package(plan, meter_id, lookup_key="in")), 400
    )
    assert error["code"] == "already_exists"
    assert Price.objects.count() == 1


@pytest.fixture
def prices(api_client, plan, meter_id):
    other_plan = make_plan(api_client, name="Team")
    other_meter = make_feature(api_client, name="Output")["meter_id"]
    bodies = [
        package(plan, meter_id),
        package(plan, other_meter, billing_period="ANNUAL"),
        package(other_plan, meter_id),
    ]
    return [post(api_client, "/v1/prices", b).json() for b in bodies]


def ids(response) -> list[str]:
    assert response.status_code == 200, response.content
    return sorted(p["id"] for p in response.json()["items"])


def test_price_search(api_client, prices, plan):
    def search(**body):
        return ids(post(api_client, "/v1/prices/search", {"allow_expired_prices": False, **body}))

    a, b, c = (p["id"] for p in prices)
    assert search() == sorted([a, b, c])
    assert search(price_ids=[b]) == [b]
    assert search(plan_ids=[plan["id"]]) == sorted([a, b])
    assert search(entity_ids=[plan["id"]], entity_type="PLAN") == sorted([a, b])
    assert search(meter_ids=[prices[0]["meter_id"]]) == sorted([a, c])
    assert search(billing_periods=["ANNUAL"]) == [b]
    assert search(plan_ids=[plan["id"]], meter_ids=[prices[0]["meter_id"]]) == [a]
    assert search(limit=1, offset=5) == []
    assert_error(post(api_client, "/v1/prices/search", {"price_ids": "x"}), 400, "price_ids")


def test_price_list_and_get(api_client, prices, plan):
    assert len(ids(api_client.get(f"/v1/prices?plan_id={plan['id']}"))) == 2
    assert len(ids(api_client.get("/v1/prices?billing_model=TIERED"))) == 0
    assert api_client.get("/v1/prices").json()["pagination"]["total"] == 3
    assert api_client.get(f"/v1/prices/{prices[0]['id']}").json() == prices[0]
    assert_error(api_client.get("/v1/prices/price_nope"), 404)
    assert_error(api_client.get("/v1/prices?billing_model=NOPE"), 400, "billing_model")


def test_plan_lists_its_prices(api_client, prices, plan):
    got = api_client.get(f"/v1/plans/{plan['id']}").json()
    assert sorted(p["id"] for p in got["prices"]) == sorted([prices[0]["id"], prices[1]["id"]])


# The API as a whole

ODD_VALUES = [None, -1, 2**70, 1.5, True, "", "x", "a\x00b", [], ["a"], [{}], {}, {"\x00": 1}]


def field_paths(body, prefix=()):
    """Every key path in a JSON body, into nested objects and lists of objects."""
    for key, value in body.items():
        yield (*prefix, key)
        if isinstance(value, dict):
            yield from field_paths(value, (*prefix, key))
        if isinstance(value, list):
            for index, item in enumerate(value):
                if isinstance(item, dict):
                    yield from field_paths(item, (*prefix, key, index))


def replaced(body, path, value):
    body = copy.deepcopy(body)
    node = body
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    return body


def test_no_odd_value_in_any_field_is_a_500(api_client, plan, meter_id):
    meter = {**METER, "aggregation": {"type": "SUM", "field": "t", "multiplier": "2"}}
    good = [
        ("/v1/customers", {"external_id": "u", "name": "A", "email": "a@b.co", "metadata": {}}),
        ("/v1/features", {"name": "F", "type": "metered", "lookup_key": "f", "meter": meter}),
        ("/v1/plans", {"name": "P", "lookup_key": "p", "description": "d", "metadata": {}}),
        ("/v1/prices", package(plan, meter_id, free_units="1", lookup_key="l")),
        ("/v1/prices", tiered(plan, meter_id)),
        ("/v1/customers/search", {"customer_ids": ["a"], "external_ids": ["x"], "limit": 5}),
        ("/v1/features/search", {"meter_ids": ["m"], "name_contains": "x", "offset": 1}),
        ("/v1/plans/search", {"plan_ids": ["a"], "lookup_key": "a"}),
        ("/v1/prices/search", {"entity_ids": ["a"], "billing_periods": ["MONTHLY"]}),
    ]
    for path, body in good:
        for field in field_paths(body):
            for value in ODD_VALUES:
                response = post(api_client, path, replaced(body, field, value))
                assert response.status_code < 500, (path, field, value, response.content)


def test_schema_is_served_and_has_no_warnings(client, tmp_path):
    response = client.get("/v1/schema/")
    assert response.status_code == 200
    assert b"/v1/prices/search" in response.content
    call_command("spectacular", "--fail-on-warn", "--file", str(tmp_path / "schema.yml"))


def test_unknown_paths_are_a_json_404(api_client):
    assert_error(api_client.get("/v1/nonexistent"), 404)
    assert_error(api_client.post("/v1/customers/", {}, format="json"), 404)


def test_wrong_method_is_a_json_405(api_client):
    assert_error(api_client.delete("/v1/plans"), 405)


def test_interactive_docs_serve_swagger_ui_from_this_server(client):
    page = client.get("/v1/docs/").content.decode()
    assert "/static/drf_spectacular_sidecar/swagger-ui-dist/" in page
    assert "cdn" not in page.lower()


def test_plan_shows_its_version(api_client):
    plan = make_plan(api_client, lookup_key="pro")
    v2 = plan_version_create(plan=Plan.objects.get(pk=plan["id"]))
    assert plan["version"] == 1
    assert api_client.get(f"/v1/plans/{v2.pk}").json()["version"] == 2


def test_a_price_field_tally_does_not_implement_is_refused_not_ignored(api_client):
    """An ignored ``filter_values`` would bill every model's tokens at this price."""
    plan, meter = PlanFactory(), MeterFactory()
    response = api_client.post(
        "/v1/prices",
        {
            "entity_type": "PLAN",
            "entity_id": plan.pk,
            "type": "USAGE",
            "billing_model": "FLAT_FEE",
            "amount": "1",
            "currency": "usd",
            "meter_id": meter.pk,
            "filter_values": {"model": ["o1"]},
        },
        format="json",
    )
    assert response.status_code == 400, response.content
    assert response.json()["error"]["details"] == {
        "filter_values": ["Tally does not implement this field."]
    }
    assert not Price.objects.exists()
