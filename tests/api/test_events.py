"""The events API: ingestion contract, bad input, and usage reads."""

import json
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from django.test import override_settings
from django.utils import timezone

from metering.models import Event
from tests.factories import MeterFactory

pytestmark = pytest.mark.django_db


@pytest.fixture
def meter():
    return MeterFactory(filters=[{"key": "model", "values": ["OpenAI O1"]}])


def ev(event_id="e1", tokens="100", **extra):
    return {
        "event_id": event_id,
        "event_name": "tokens",
        "external_customer_id": "acme",
        "properties": {"model": "OpenAI O1", "tokens": tokens},
        **extra,
    }


def post(client, path, body):
    data = body if isinstance(body, str | bytes) else json.dumps(body)
    return client.post(f"/v1/{path}", data=data, content_type="application/json")


def assert_error(response, status, text):
    assert response.status_code == status, response.content
    body = response.json()
    assert text in body["error"]["message"], body
    assert body["error"]["http_status_code"] == status
    assert body["message"] == body["error"]["message"]  # the SDK reads the top level


def test_single_event_is_acknowledged_with_string_values(api_client, meter):
    response = post(api_client, "events", ev())
    assert response.status_code == 202
    assert response.json() == {"message": "Event accepted for processing", "event_id": "e1"}
    assert Event.objects.get().properties["tokens"] == "100"


def test_event_id_is_generated_when_absent(api_client, meter):
    body = ev()
    del body["event_id"]
    response = post(api_client, "events", body)
    assert response.status_code == 202
    assert response.json()["event_id"] == Event.objects.get().event_id
    assert all(isinstance(v, str) for v in response.json().values())


def test_replay_is_accepted_and_counted_once(api_client, meter):
    assert post(api_client, "events", ev(tokens="1")).status_code == 202
    assert post(api_client, "events", ev(tokens="2")).status_code == 202
    assert Event.objects.get().properties["tokens"] == "1"


def test_requests_without_a_valid_key_are_401(client, meter):
    assert_error(post(client, "events", ev()), 401, "x-api-key")
    client.defaults["HTTP_X_API_KEY"] = "tly_wrong"
    assert_error(post(client, "events", ev()), 401, "not valid")
    assert not Event.objects.exists()


@pytest.mark.parametrize(
    ("change", "text"),
    [
        ({"event_name": ""}, "event_name is required"),
        ({"event_name": "x" * 256}, "longer than 255"),
        ({"event_name": "tok\x00ens"}, "printable"),
        ({"event_name": 5}, "event_name must be a string"),
        ({"event_name": "unknown"}, "no meter uses event_name 'unknown'"),
        ({"external_customer_id": None}, "external_customer_id is required"),
        ({"timestamp": "yesterday"}, "RFC 3339"),
        ({"timestamp": "2026-13-45T00:00:00Z"}, "RFC 3339"),
        ({"timestamp": 1700000000}, "RFC 3339"),
        ({"properties": []}, "properties must be a JSON object"),
        ({"properties": {"model": "OpenAI O1", "tokens": "lots"}}, "'tokens' is not a number"),
        ({"properties": {"model": "OpenAI O1"}}, "'tokens' is missing"),
        ({"properties": {"model": "OpenAI O1", "tokens": "1e400"}}, "out of range"),
        ({"properties": {"model": "OpenAI O1", "tokens": 1, "n": "a\x00b"}}, "NUL"),
        (
            {"properties": {"model": "OpenAI O1", "tokens": 1, "d": [[[[[[["deep"]]]]]]]}},
            "nested more than",
        ),
        ({"properties": {"model": "OpenAI O1", "tokens": 1, "big": "x" * 40000}}, "larger than"),
    ],
)
def test_bad_event_gets_400_naming_the_problem_and_stores_nothing(api_client, meter, change, text):
    assert_error(post(api_client, "events", {**ev(), **change}), 400, text)
    assert not Event.objects.exists()


def test_timestamp_more_than_five_minutes_ahead_is_refused(api_client, meter):
    ahead = (timezone.now() + timedelta(minutes=6)).isoformat()
    assert_error(post(api_client, "events", ev(timestamp=ahead)), 400, "future")
    near = (timezone.now() + timedelta(minutes=4)).isoformat()
    assert post(api_client, "events", ev(timestamp=near)).status_code == 202


@pytest.mark.parametrize(
    "body",
    [
        '{"event_name": ',
        "[1, 2",
        "NaN",
        '{"a": NaN}',
        b"\xff\xfe",
        "[" * 100000 + "]" * 100000,
        '{"n": ' + "9" * 5000 + "}",
        "[]",
        '"just a string"',
        "null",
    ],
)
def test_malformed_bodies_get_400_never_500(api_client, meter, body):
    for path in ("events", "events/bulk", "events/batch"):
        response = post(api_client, path, body)
        assert response.status_code == 400, (path, response.content[:200])
        assert response.json()["error"]["code"] == "validation_error"
    assert not Event.objects.exists()


@override_settings(DATA_UPLOAD_MAX_MEMORY_SIZE=1000)
def test_oversized_body_is_413(api_client, meter):
    response = post(api_client, "events/bulk", {"events": [ev(f"e{i}") for i in range(50)]})
    assert_error(response, 413, "larger than 1000 bytes")
    assert not Event.objects.exists()


def test_bulk_accepts_and_counts_duplicates(api_client, meter):
    post(api_client, "events", ev("e0"))
    response = post(api_client, "events/bulk", {"events": [ev("e0"), ev("e1"), ev("e2"), ev("e1")]})
    assert response.status_code == 202
    assert response.json() == {
        "message": "Events accepted for processing",
        "accepted": "2",
        "duplicates": "2",
    }
    assert Event.objects.count() == 3


def test_bulk_with_one_bad_event_stores_nothing_and_names_each_index(api_client, meter):
    events = [ev("ok"), ev("bad1", tokens="x"), ev("ok2"), {"event_name": "tokens"}]
    response = post(api_client, "events/bulk", {"events": events})
    assert_error(response, 400, "2 of 4 events are invalid")
    rejected = response.json()["error"]["details"]["rejected"]
    assert [r["index"] for r in rejected] == [1, 3]
    assert "external_customer_id is required" in rejected[1]["reason"]
    assert not Event.objects.exists()


@pytest.mark.parametrize(
    ("body", "text"),
    [
        ({"events": []}, "1 to 1000"),
        ({}, "1 to 1000"),
        ({"events": "x"}, "1 to 1000"),
        ({"events": [{}] * 1001}, "at most 1000"),
    ],
)
def test_bulk_and_batch_refuse_bad_envelopes(api_client, meter, body, text):
    assert_error(post(api_client, "events/bulk", body), 400, text)
    assert_error(post(api_client, "events/batch", body), 400, text)


def test_batch_keeps_the_good_events_and_reports_each(api_client, meter):
    post(api_client, "events", ev("seen"))
    events = [ev("a"), ev("b", tokens="x"), ev("seen"), ev("a"), "not an object"]
    response = post(api_client, "events/batch", {"events": events})
    assert response.status_code == 200
    body = response.json()
    assert (body["accepted"], body["duplicates"], body["rejected"]) == (1, 2, 2)
    assert [r["status"] for r in body["results"]] == [
        "accepted",
        "rejected",
        "duplicate",
        "duplicate",
        "rejected",
    ]
    assert "'tokens' is not a number" in body["results"][1]["reason"]
    assert set(Event.objects.values_list("event_id", flat=True)) == {"seen", "a"}


def test_events_list_filters_and_pages_newest_first(api_client, meter):
    base = datetime(2026, 11, 2, tzinfo=UTC)
    for i in range(5):
        post(api_client, "events", ev(f"e{i}", timestamp=(base + timedelta(hours=i)).isoformat()))
    page = api_client.get("/v1/events", {"external_customer_id": "acme", "page_size": 2}).json()
    assert [e["id"] for e in page["events"]] == ["e4", "e3"] and page["has_more"]
    body = {
        "event_name": "tokens",
        "start_time": (base + timedelta(hours=1)).isoformat(),
        "end_time": (base + timedelta(hours=3)).isoformat(),
        "order": "asc",
    }
    page = post(api_client, "events/query", body).json()
    assert [e["id"] for e in page["events"]] == ["e1", "e2"] and not page["has_more"]
    assert_error(api_client.get("/v1/events", {"page_size": 0}), 400, "page_size")


def test_usage_by_meter_is_exact_and_windowed(api_client, meter):
    base = datetime(2026, 11, 2, 10, 30, tzinfo=UTC)
    for i, tokens in enumerate(["2000000", "2500000", "0.5"]):
        post(
            api_client,
            "events",
            ev(f"u{i}", tokens=tokens, timestamp=(base + timedelta(days=i)).isoformat()),
        )
    body = {
        "meter_id": meter.pk,
        "external_customer_id": "acme",
        "start_time": "2026-11-01T00:00:00Z",
        "end_time": "2026-11-05T00:00:00Z",
        "window_size": "DAY",
    }
    response = post(api_client, "events/usage/meter", body)
    assert response.status_code == 200
    data = response.json()
    assert Decimal(data["value"]) == Decimal("4500000.5")
    assert (data["event_name"], data["type"]) == ("tokens", "SUM")
    assert [(r["window_size"], Decimal(r["value"])) for r in data["results"]] == [
        ("2026-11-02T00:00:00Z", Decimal(2000000)),
        ("2026-11-03T00:00:00Z", Decimal(2500000)),
        ("2026-11-04T00:00:00Z", Decimal("0.5")),
    ]


@pytest.mark.parametrize(
    ("body", "status", "text"),
    [
        ({"meter_id": "meter_nope", "external_customer_id": "acme"}, 404, "No meter"),
        ({"external_customer_id": "acme"}, 400, "meter_id"),
        ({"meter_id": "m", "customer_id": "cust_nope"}, 400, "external_customer_id"),
        (
            {
                "meter_id": "m",
                "external_customer_id": "a",
                "start_time": "2026-11-02T00:00:00Z",
                "end_time": "2026-11-01T00:00:00Z",
            },
            400,
            "after start_time",
        ),
        ({"meter_id": "m", "external_customer_id": "a", "window_size": "YEAR"}, 400, "window_size"),
    ],
)
def test_usage_by_meter_bad_requests(api_client, meter, body, status, text):
    assert_error(post(api_client, "events/usage/meter", body), status, text)


def test_ad_hoc_usage_aggregates_raw_events(api_client, meter):
    post(api_client, "events", ev("a", tokens="3"))
    post(api_client, "events", ev("b", tokens="4"))
    body = {
        "event_name": "tokens",
        "aggregation_type": "MAX",
        "property_name": "tokens",
        "external_customer_id": "acme",
        "filters": {"model": ["OpenAI O1"]},
    }
    assert Decimal(post(api_client, "events/usage", body).json()["value"]) == 4
    body["aggregation_type"] = "SUM"
    body["property_name"] = ""
    assert_error(post(api_client, "events/usage", body), 400, "needs the event property")
