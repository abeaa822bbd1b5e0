import pytest
from django.urls import resolve
from rest_framework.test import APIClient

from metering.models import Customer
from metering.services import api_key_create, api_key_revoke, customer_create
from tests.api.asserts import assert_error

pytestmark = pytest.mark.django_db


def create(api_client, **body):
    return api_client.post("/v1/customers", body, format="json")


# Auth


def revoked_key():
    key, raw = api_key_create(name="old")
    api_key_revoke(key=key)
    return raw


@pytest.mark.parametrize("key", [None, "wrong", "revoked"], ids=["missing", "wrong", "revoked"])
@pytest.mark.parametrize(
    "method, path",
    [
        ("get", "/v1/customers"),
        ("post", "/v1/customers"),
        ("post", "/v1/customers/search"),
        ("get", "/v1/customers/cust_x"),
        ("post", "/v1/features"),
        ("post", "/v1/prices/search"),
    ],
)
def test_a_missing_wrong_or_revoked_key_is_a_401(key, method, path):
    client = APIClient()
    if key is not None:
        client.credentials(HTTP_X_API_KEY=revoked_key() if key == "revoked" else key)
    response = getattr(client, method)(path, {}, format="json")
    assert_error(response, 401)
    assert not Customer.objects.exists()


def test_a_good_key_is_accepted(api_key):
    client = APIClient()
    response = client.get("/v1/customers", HTTP_X_API_KEY=api_key)
    assert response.status_code == 200


# Create


def test_create_answers_201_with_the_customer(api_client):
    response = create(
        api_client, external_id="u1", name="Acme", email="a@acme.test", metadata={"k": "v"}
    )
    assert response.status_code == 201
    assert response["Content-Type"] == "application/json"
    body = response.json()
    customer = Customer.objects.get()
    assert body["id"] == customer.id and body["id"].startswith("cust_")
    assert body["external_id"] == "u1"
    assert body["name"] == "Acme"
    assert body["email"] == "a@acme.test"
    assert body["metadata"] == {"k": "v"}
    assert body["status"] == "published"
    assert body["created_at"].endswith("Z") and "T" in body["created_at"]


def test_create_refuses_a_flexprice_field_tally_does_not_implement(api_client):
    response = create(api_client, external_id="u1", name="A", timezone="UTC")
    assert response.status_code == 400
    assert response.json()["error"]["details"] == {
        "timezone": ["Tally does not implement this field."]
    }
    assert not Customer.objects.exists()


def test_create_defaults_what_is_not_sent(api_client):
    response = create(api_client, external_id="u1", name="A")
    assert response.status_code == 201
    assert response.json()["email"] == ""
    assert response.json()["metadata"] == {}
    assert response.json()["address_city"] == ""


ADDRESS = {
    "address_line1": "1 Market St",
    "address_line2": "Suite 300",
    "address_city": "San Francisco",
    "address_state": "CA",
    "address_postal_code": "94105",
    "address_country": "US",
}


def test_the_billing_address_round_trips(api_client):
    created = create(api_client, external_id="u1", name="A", **ADDRESS)
    assert created.status_code == 201, created.content
    assert {k: created.json()[k] for k in ADDRESS} == ADDRESS
    stored = Customer.objects.get()
    assert {k: str(getattr(stored, k)) for k in ADDRESS} == ADDRESS
    fetched = api_client.get(f"/v1/customers/{stored.id}").json()
    assert {k: fetched[k] for k in ADDRESS} == ADDRESS


def test_the_address_at_its_flexprice_bounds_is_kept(api_client):
    longest = {
        "address_line1": "a" * 255,
        "address_line2": "b" * 255,
        "address_city": "c" * 100,
        "address_state": "d" * 100,
        "address_postal_code": "e" * 20,
    }
    response = create(api_client, external_id="u1", name="A", **longest)
    assert response.status_code == 201, response.content
    assert {k: response.json()[k] for k in longest} == longest


@pytest.mark.parametrize(
    "field, value",
    [
        ("address_line1", "a" * 256),
        ("address_line2", "b" * 256),
        ("address_city", "c" * 101),
        ("address_state", "d" * 101),
        ("address_postal_code", "9" * 21),
        ("address_country", "USA"),
        ("address_country", "us"),
        ("address_country", "XX"),
        ("address_country", "United States"),
        ("address_country", ["US"]),
        ("address_city", {"name": "X"}),
        ("address_line1", "a\x00b"),
    ],
)
def test_a_bad_address_is_a_400_naming_the_field(api_client, field, value):
    body = assert_error(
        create(api_client, external_id="u1", name="A", **{field: value}), 400, field
    )
    if field == "address_country" and isinstance(value, str):
        assert "ISO 3166-1 alpha-2" in str(body["error"]["details"])
    assert not Customer.objects.exists()


def test_duplicate_external_id_is_a_400_already_exists(api_client):
    assert create(api_client, external_id="u1", name="A").status_code == 201
    body = assert_error(create(api_client, external_id="u1", name="B"), 400, "external_id")
    assert body["code"] == "already_exists"
    assert "already exists" in body["message"]
    assert Customer.objects.get().name == "A"


@pytest.mark.parametrize(
    "body, field",
    [
        ({"name": "A"}, "external_id"),
        ({"external_id": "", "name": "A"}, "external_id"),
        ({"external_id": "x" * 256, "name": "A"}, "external_id"),
        ({"external_id": ["u1"], "name": "A"}, "external_id"),
        ({"external_id": "a\x00b", "name": "A"}, "external_id"),
        ({"external_id": "u1"}, "name"),
        ({"external_id": "u1", "name": ""}, "name"),
        ({"external_id": "u1", "name": None}, "name"),
        ({"external_id": "u1", "name": "A", "email": "not an email"}, "email"),
        ({"external_id": "u1", "name": "A", "metadata": "x"}, "metadata"),
        ({"external_id": "u1", "name": "A", "metadata": {"k": {"nested": 1}}}, "metadata"),
        ({"external_id": "u1", "name": "A", "metadata": {"k\x00": "v"}}, "metadata"),
    ],
)
def test_bad_customers_are_a_400_naming_the_field(api_client, body, field):
    assert_error(create(api_client, **body), 400, field)
    assert not Customer.objects.exists()


@pytest.mark.parametrize("payload", ["{not json", "[1, 2]", "null", '"text"', "NaN"])
def test_a_body_that_is_not_a_json_object_is_a_400(api_client, payload):
    response = api_client.post("/v1/customers", payload, content_type="application/json")
    assert_error(response, 400)
    assert not Customer.objects.exists()


# Get


def test_get_by_id(api_client):
    customer = customer_create(external_id="u1", name="A")
    response = api_client.get(f"/v1/customers/{customer.id}")
    assert response.status_code == 200
    assert response.json()["external_id"] == "u1"


@pytest.mark.parametrize("path", ["/v1/customers/cust_nope", "/v1/customers/a%00b"])
def test_get_an_unknown_id_is_a_json_404(api_client, path):
    assert assert_error(api_client.get(path), 404)["code"] == "not_found"


@pytest.mark.parametrize("external_id", ["u1", "team/alice", "a b", "subscriptions"])
def test_get_by_external_id(api_client, external_id):
    customer = customer_create(external_id=external_id, name="A")
    response = api_client.get(f"/v1/customers/external/{external_id}")
    assert response.status_code == 200
    assert response.json()["id"] == customer.id


@pytest.mark.parametrize("external_id", ["nobody", "a/b", "a%00b"])
def test_get_an_unknown_external_id_is_a_json_404(api_client, external_id):
    customer_create(external_id="u1", name="A")
    body = assert_error(api_client.get(f"/v1/customers/external/{external_id}"), 404)
    assert body["code"] == "not_found"


def test_the_external_route_leaves_subscriptions_to_billing():
    assert resolve("/v1/customers/external/u1").url_name == "customer-by-external-id"
    assert resolve("/v1/customers/external/a/subscriptions").url_name != "customer-by-external-id"


def test_metadata_that_is_not_text_goes_out_as_text(api_client):
    customer = customer_create(external_id="u1", name="A", metadata={"n": 5, "ok": True})
    body = api_client.get(f"/v1/customers/{customer.id}").json()
    assert body["metadata"] == {"n": "5", "ok": "true"}


# List and search


@pytest.fixture
def three(db):
    return [
        customer_create(external_id="acme", name="Acme AI", email="billing@acme.test"),
        customer_create(external_id="globex", name="Globex", email="ap@globex.test"),
        customer_create(external_id="initech", name="Initech AI", email="x@initech.test"),
    ]


def external_ids(response) -> set[str]:
    assert response.status_code == 200, response.content
    return {c["external_id"] for c in response.json()["items"]}


def test_list_is_paginated(api_client, three):
    body = api_client.get("/v1/customers?limit=2&offset=1").json()
    assert body["pagination"] == {"total": 3, "limit": 2, "offset": 1}
    assert len(body["items"]) == 2
    everything = api_client.get("/v1/customers").json()
    assert everything["pagination"] == {"total": 3, "limit": 50, "offset": 0}


@pytest.mark.parametrize(
    "query, expected",
    [
        ("external_id=globex", {"globex"}),
        ("email=BILLING@acme.test", {"acme"}),
        ("name=ai", {"acme", "initech"}),
        ("name=nothing", set()),
    ],
)
def test_list_filters(api_client, three, query, expected):
    assert external_ids(api_client.get(f"/v1/customers?{query}")) == expected


@pytest.mark.parametrize(
    "body, expected",
    [
        ({}, {"acme", "globex", "initech"}),
        ({"external_id": "acme"}, {"acme"}),
        ({"external_ids": ["acme", "globex", "nobody"]}, {"acme", "globex"}),
        ({"email": "ap@globex.test"}, {"globex"}),
        ({"external_ids": ["acme", "globex"], "email": "ap@globex.test"}, {"globex"}),
        ({"external_id": "acme", "sort": [{"field": "name"}], "status": "published"}, {"acme"}),
    ],
)
def test_search_filters(api_client, three, body, expected):
    response = api_client.post("/v1/customers/search", body, format="json")
    assert external_ids(response) == expected


def test_search_by_customer_ids(api_client, three):
    body = {"customer_ids": [three[0].id, three[2].id]}
    response = api_client.post("/v1/customers/search", body, format="json")
    assert external_ids(response) == {"acme", "initech"}


def test_search_pages_from_the_body(api_client, three):
    response = api_client.post("/v1/customers/search", {"limit": 1, "offset": 2}, format="json")
    assert response.status_code == 200
    body = response.json()
    assert body["pagination"] == {"total": 3, "limit": 1, "offset": 2}
    assert len(body["items"]) == 1


@pytest.mark.parametrize(
    "body, field",
    [
        ({"customer_ids": "cust_1"}, "customer_ids"),
        ({"external_ids": [["x"]]}, "external_ids"),
        ({"external_id": {"a": 1}}, "external_id"),
        ({"limit": "abc"}, "limit"),
        ({"limit": 0}, "limit"),
        ({"offset": -1}, "offset"),
        ({"limit": 5000}, "limit"),
        ({"offset": 1_000_001}, "offset"),
    ],
)
def test_bad_search_bodies_are_a_400(api_client, three, body, field):
    assert_error(api_client.post("/v1/customers/search", body, format="json"), 400, field)


def test_a_search_body_that_is_not_an_object_is_a_400(api_client):
    response = api_client.post("/v1/customers/search", "[]", content_type="application/json")
    assert_error(response, 400)
