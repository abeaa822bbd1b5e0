"""The events page's numbers and the CSV export's columns."""

import csv
import io

import pytest
from django.urls import reverse

from tests.factories import CustomerFactory, CustomerUserFactory, MeterFactory, ingest

pytestmark = pytest.mark.django_db


@pytest.fixture
def initech(client):
    MeterFactory(event_name="calls", aggregation="COUNT", field="")
    user = CustomerUserFactory(customer=CustomerFactory(external_id="initech"))
    client.force_login(user.user)
    return client


def send(event_id, **properties):
    ingest(
        {
            "event_id": event_id,
            "event_name": "calls",
            "external_customer_id": "initech",
            "properties": properties,
        }
    )


def export(client, **query) -> list[list[str]]:
    response = client.get(reverse("portal:events-csv"), query)
    assert response.status_code == 200
    return list(csv.reader(io.StringIO(b"".join(response.streaming_content).decode())))


def test_numbers_on_the_events_page_have_thousands_separators(initech):
    send("n1", tokens=2500000, share=1234.5, code="12345", ok=True, nothing=None, tags=["a"])
    page = initech.get(reverse("portal:events")).content.decode()
    assert "tokens: 2,500,000" in page and "share: 1,234.5" in page
    assert "code: 12345" in page  # text stays as sent
    assert "ok: true" in page and "nothing: null" in page and "tags: [&quot;a&quot;]" in page


def test_the_csv_has_a_column_per_property_of_the_whole_export(initech):
    send("c1", model="o1", tokens=1000000)
    send("c2", region="eu", note='says "hi", then\nleaves', size=1.5)
    send("c3")
    rows = export(initech)
    header, body = rows[0], {row[0]: dict(zip(rows[0], row, strict=True)) for row in rows[1:]}
    assert header == [
        "event_id",
        "event_name",
        "timestamp",
        "properties.model",
        "properties.note",
        "properties.region",
        "properties.size",
        "properties.tokens",
        "billing",
    ]
    assert all(len(row) == len(header) for row in rows)
    assert body["c1"]["properties.tokens"] == "1000000"  # machine-readable: no separators
    assert body["c1"]["properties.region"] == ""
    assert body["c2"]["properties.note"] == 'says "hi", then\nleaves'  # quoted by csv
    assert body["c2"]["properties.size"] == "1.5"
    assert body["c3"]["properties.model"] == "" and body["c3"]["billing"].startswith("not billed")


def test_the_csv_header_follows_the_filter(initech):
    send("d1", model="o1")
    rows = export(initech, end="2000-01-02")  # nothing that old
    assert rows == [["event_id", "event_name", "timestamp", "billing"]]


def test_the_csv_quotes_text_a_spreadsheet_would_run_as_a_formula(initech):
    send("=HYPERLINK(1)", note="=1+1", cmd="@SUM(A1)", plus="+1", debt=-5, ok="fine")
    header, row = export(initech)
    cells = dict(zip(header, row, strict=True))
    assert cells["event_id"] == "'=HYPERLINK(1)"
    assert cells["properties.note"] == "'=1+1"
    assert cells["properties.cmd"] == "'@SUM(A1)"
    assert cells["properties.plus"] == "'+1"
    assert cells["properties.debt"] == "-5"  # a number stays a number
    assert cells["properties.ok"] == "fine"
