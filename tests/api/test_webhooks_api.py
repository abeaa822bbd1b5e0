"""``/v1/webhooks/endpoints``: register, list, change, rotate and delete endpoints."""

import json

import pytest
from standardwebhooks import Webhook

from billing.models import WebhookEndpoint

pytestmark = pytest.mark.django_db
BASE = "/v1/webhooks/endpoints"


def send(client, method, path, body=None):
    return getattr(client, method)(path, json.dumps(body or {}), content_type="application/json")


def test_an_endpoint_is_registered_with_a_generated_secret(api_client):
    response = send(
        api_client,
        "post",
        BASE,
        {
            "url": "https://hooks.example/tally",
            "event_types": ["invoice.finalized", "wallet.balance_low", "invoice.finalized"],
            "description": "finance",
        },
    )
    assert response.status_code == 201, response.json()
    body = response.json()
    assert body["id"].startswith("whep_") and body["secret"].startswith("whsec_")
    assert Webhook(body["secret"])
    assert (body["url"], body["event_types"], body["enabled"], body["description"]) == (
        "https://hooks.example/tally",
        ["invoice.finalized", "wallet.balance_low"],
        True,
        "finance",
    )
    assert api_client.get(f"{BASE}/{body['id']}").json() == body
    listed = api_client.get(BASE).json()
    assert listed["items"] == [body] and listed["pagination"]["total"] == 1


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"url": "ftp://hooks.example/"}, "url"),
        ({"url": "not a url"}, "url"),
        ({"url": "https://hooks.example/", "event_types": ["invoice.eaten"]}, "event_types"),
        ({"url": "https://hooks.example/", "secret": "whsec_mine"}, "secret"),
        ({}, "url"),
    ],
)
def test_a_bad_endpoint_is_refused_naming_the_field(api_client, body, field):
    response = send(api_client, "post", BASE, body)
    assert response.status_code == 400
    assert field in response.json()["error"]["details"]
    assert not WebhookEndpoint.objects.exists()


def test_an_endpoint_is_changed_rotated_and_deleted(api_client):
    created = send(api_client, "post", BASE, {"url": "https://a.example/"}).json()
    path = f"{BASE}/{created['id']}"
    changed = send(api_client, "put", path, {"enabled": False, "event_types": ["invoice.voided"]})
    assert changed.status_code == 200
    assert (changed.json()["enabled"], changed.json()["event_types"]) == (False, ["invoice.voided"])
    assert changed.json()["url"] == "https://a.example/"
    assert send(api_client, "put", path, {"url": "ftp://a.example/"}).status_code == 400
    rotated = send(api_client, "post", f"{path}/rotate_secret")
    assert rotated.status_code == 200
    assert rotated.json()["secret"] != created["secret"]
    assert WebhookEndpoint.objects.get().secret == rotated.json()["secret"]
    deleted = send(api_client, "delete", path)
    assert deleted.json() == {"message": "webhook endpoint deleted"}
    assert api_client.get(path).status_code == 404


def test_an_unknown_endpoint_is_a_404(api_client):
    assert api_client.get(f"{BASE}/whep_nope").status_code == 404
    assert send(api_client, "put", f"{BASE}/whep_nope", {"enabled": True}).status_code == 404


def test_the_list_filters_by_enabled(api_client):
    on = send(api_client, "post", BASE, {"url": "https://a.example/"}).json()
    send(api_client, "post", BASE, {"url": "https://b.example/", "enabled": False})
    assert [e["id"] for e in api_client.get(f"{BASE}?enabled=true").json()["items"]] == [on["id"]]
    assert api_client.get(f"{BASE}?enabled=maybe").status_code == 400
