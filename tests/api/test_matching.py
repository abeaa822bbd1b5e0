"""One matching rule everywhere: usage, rollups, the events API, the portal list and its CSV
all agree with ``aggregation.matches`` on which events a filter selects."""

import csv
import io
import json
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from django.contrib.auth import get_user_model
from django.urls import reverse

from catalog.models import Meter
from metering.aggregation import matches
from metering.ingestion import EventRejected
from metering.rollups import meter_rollups_rebuild, rollups_fold
from metering.selectors import meter_usage
from tests.factories import (
    CustomerFactory,
    CustomerUserFactory,
    MeterFactory,
    PlanFactory,
    PriceFactory,
    SubscriptionFactory,
    ingest,
)

pytestmark = pytest.mark.django_db

START = datetime(2026, 10, 1, 13, 27, tzinfo=UTC)  # not on the hour: edges and whole hours
END = START + timedelta(days=3)
OFFSETS = (timedelta(minutes=5), timedelta(days=1), timedelta(days=3, minutes=-1))
MISSING = None  # the property is not sent at all
ODD_KEY = "a.b \"c' __in -> x[0]"

# (key, the property's value as JSON text sent on the wire, filter values, expected match)
CASES = [
    ("k", '"1"', ["1"], True),
    ("k", "1", ["1"], True),
    ("k", "1", ["1.0"], False),
    ("k", "1.0", ["1.0"], True),
    ("k", "1.0", ["1"], False),
    ("k", "1.5e-7", ["0.00000015"], True),
    ("k", "1.5e-7", ["1.5e-07", "1.5e-7"], False),
    ("k", "1e20", ["100000000000000000000"], True),
    ("k", "1e20", ["1e+20", "1e20"], False),
    ("k", "-0.0", ["0.0"], True),
    ("k", "true", ["true"], True),
    ("k", "true", ["True", "1"], False),
    ("k", '"true"', ["true"], True),
    ("k", "null", ["null", "None"], False),
    ("k", '{"a":1}', ['{"a":1}', '{"a": 1}'], False),
    ("k", "[1]", ["[1]"], False),
    ("k", MISSING, ["1"], False),
    ("k", '"h\\u00e9llo \\u2713"', ["héllo ✓"], True),
    ("k", '"héllo"', ["hello"], False),
    (ODD_KEY, '"x"', ["x"], True),
    (ODD_KEY, '"x"', ["y"], False),
]
IDS = [f"{key[:5]}={value}~{values[0]}" for key, value, values, _ in CASES]


def body(key: str, value: str | None, *, offsets=OFFSETS, first_id: int = 0) -> str:
    """A bulk request as a client would write it, so numbers are parsed as the API parses
    them."""
    properties = "{}" if value is MISSING else "{" + json.dumps(key) + ": " + value + "}"
    events = []
    for i, offset in enumerate(offsets, start=first_id):
        envelope = {
            "event_id": f"acme-{i}",
            "event_name": "tokens",
            "external_customer_id": "acme",
            "timestamp": (START + offset).isoformat(),
        }
        events.append(json.dumps(envelope)[:-1] + ', "properties": ' + properties + "}")
    return '{"events": [' + ", ".join(events) + "]}"


def send(api_client, text: str) -> None:
    response = api_client.post("/v1/events/bulk", data=text, content_type="application/json")
    assert response.status_code == 202, response.content


def sent_properties(text: str) -> dict:
    return json.loads(text)["events"][0]["properties"]


def usage(meter, **kwargs) -> Decimal:
    return meter_usage(meter=meter, external_customer_id="acme", start=START, end=END, **kwargs)


@pytest.fixture
def portal_client(client):
    """A signed-in portal user of ``acme``, and a way to subscribe it to a meter's plan."""
    customer = CustomerFactory(external_id="acme", name="Acme")
    CustomerUserFactory(customer=customer)
    client.force_login(get_user_model().objects.get(email="acme@example.com"))

    def subscribe(meter: Meter) -> None:
        price = PriceFactory(meter=meter, plan=PlanFactory())
        SubscriptionFactory(customer=customer, plan=price.plan, start_date=START)

    client.subscribe = subscribe
    return client


@pytest.mark.parametrize(("key", "value", "values", "expected"), CASES, ids=IDS)
def test_every_surface_selects_what_matches_selects(
    api_client, portal_client, key, value, values, expected
):
    m = MeterFactory(aggregation="COUNT", field="", filters=[{"key": key, "values": values}])
    text = body(key, value)
    assert matches(m, "tokens", sent_properties(text)) is expected  # the rule, as documented
    fed = Decimal(len(OFFSETS) if expected else 0)
    ids = sorted(f"acme-{i}" for i in range(len(OFFSETS))) if expected else []

    # (a) usage: unfolded, folded, rebuilt (SQL on PostgreSQL), raw, and edge hours alone
    send(api_client, text)
    assert usage(m) == fed
    rollups_fold()
    assert usage(m) == fed
    meter_rollups_rebuild(meter=m)
    assert usage(m) == fed
    assert usage(m, use_rollups=False) == fed
    first_edge = meter_usage(
        meter=m, external_customer_id="acme", start=START, end=START + timedelta(minutes=30)
    )
    assert first_edge == (1 if expected else 0)

    # (b) the events API, by query string and by JSON body
    listed = api_client.get("/v1/events", {f"property_filters.{key}": values}).json()
    assert sorted(e["id"] for e in listed["events"]) == ids
    query = {"property_filters": {key: values}, "page_size": 100}
    queried = api_client.post("/v1/events/query", query, format="json").json()
    assert sorted(e["id"] for e in queried["events"]) == ids

    # (c) the portal's per-feature list and (d) its CSV
    portal_client.subscribe(m)
    page = portal_client.get(reverse("portal:events"), {"feature": m.pk}).content.decode()
    assert [i for i in ("acme-0", "acme-1", "acme-2") if i in page] == ids
    exported = b"".join(
        portal_client.get(reverse("portal:events-csv"), {"feature": m.pk}).streaming_content
    ).decode()
    assert sorted(row[0] for row in list(csv.reader(io.StringIO(exported)))[1:]) == ids


UNIQUE_VALUES = ['"1"', "1", "1.0", "1.5e-7", '"0.00000015"', "1e20", "true", '"true"', '"x"']
UNIQUE_TEXTS = {"1", "1.0", "0.00000015", "100000000000000000000", "true", "x"}


def test_count_unique_counts_the_same_texts_at_ingest_in_rollups_and_rebuilds(api_client):
    m = MeterFactory(aggregation="COUNT_UNIQUE", field="user")
    for i, value in enumerate(UNIQUE_VALUES):
        send(api_client, body("user", value, offsets=[timedelta(hours=i)], first_id=i))
    assert usage(m) == len(UNIQUE_TEXTS)
    rollups_fold()
    assert usage(m) == len(UNIQUE_TEXTS)
    meter_rollups_rebuild(meter=m)
    assert usage(m) == len(UNIQUE_TEXTS)
    assert usage(m, use_rollups=False) == len(UNIQUE_TEXTS)


@pytest.mark.parametrize("value", [None, {"a": 1}, [1]])
def test_a_value_without_text_cannot_feed_count_unique(value):
    MeterFactory(aggregation="COUNT_UNIQUE", field="user")
    with pytest.raises(EventRejected, match="'user' is null, an object or an array"):
        ingest(
            {"event_name": "tokens", "external_customer_id": "acme", "properties": {"user": value}}
        )


def test_events_stored_before_a_count_unique_meter_without_text_are_skipped_by_its_rebuild():
    MeterFactory(aggregation="COUNT", field="")
    for i, value in enumerate(["a", None, {"b": 1}, [1], "a", 2.5, "2.5"]):
        ingest(
            {
                "event_id": f"e{i}",
                "event_name": "tokens",
                "external_customer_id": "acme",
                "timestamp": (START + timedelta(hours=i)).isoformat(),
                "properties": {"user": value},
            }
        )
    m = MeterFactory(aggregation="COUNT_UNIQUE", field="user")  # rebuilt from those events
    assert usage(m) == 2  # "a" and "2.5"
    assert usage(m, use_rollups=False) == 2


@pytest.mark.parametrize(
    "filters",
    [
        {"a\u0000b": ["x"]},
        {"": ["x"]},
        {"k" * 256: ["x"]},
        {f"k{n}": ["x"] for n in range(21)},
        {"model": [str(n) for n in range(101)]},
        {"model": ["x" * 256]},
        {"model": ["a\u0000"]},
    ],
)
def test_bad_property_filters_are_a_400(api_client, filters):
    answer = api_client.post("/v1/events/query", {"property_filters": filters}, format="json")
    assert answer.status_code == 400, answer.content
    assert "property_filters" in answer.json()["error"]["details"]
    query = api_client.get("/v1/events", {"property_filters.a\u0000b": "x"})
    assert query.status_code == 400
