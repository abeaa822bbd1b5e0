"""Each event in the portal says where it is billed, or why it is not."""

import csv
import io
from datetime import UTC, datetime, timedelta

import pytest
from django.contrib.auth import get_user_model
from django.urls import reverse

from billing.models import Invoice
from billing.portal.selectors import customer_events, event_marks
from billing.services import periods_close
from catalog.models import Price
from metering.models import Event
from metering.services import portal_user_create
from tests.factories import (
    CustomerFactory,
    FeatureFactory,
    MeterFactory,
    PlanFactory,
    PriceFactory,
    SubscriptionFactory,
    ingest,
)

pytestmark = pytest.mark.django_db

SEP = datetime(2026, 9, 1, tzinfo=UTC)
OCT = datetime(2026, 10, 1, tzinfo=UTC)


def tokens(event_id: str, at: datetime, prompt_type: str) -> dict:
    return {
        "event_id": event_id,
        "event_name": "tokens",
        "external_customer_id": "acme",
        "timestamp": at.isoformat(),
        "properties": {"prompt_type": prompt_type, "tokens": 100},
    }


@pytest.fixture
def world(time_machine):
    """A September invoice closed with a usage fence, October's proposed invoice, and one
    event of each kind."""
    time_machine.move_to(SEP + timedelta(hours=1), tick=False)
    meters = {}
    for name, values in (
        ("Input Tokens", ["input", "cached_input"]),
        ("Cached Tokens", ["cached_input"]),
        ("Output Tokens", ["output"]),
    ):
        meters[name] = MeterFactory(
            feature=FeatureFactory(name=name),
            filters=[{"key": "prompt_type", "values": values}],
        )
    plan = PlanFactory()
    for meter in meters.values():
        PriceFactory(plan=plan, meter=meter)
    customer = CustomerFactory(external_id="acme", name="Acme")
    SubscriptionFactory(customer=customer, plan=plan, start_date=SEP)
    time_machine.move_to(SEP + timedelta(days=5), tick=False)
    ingest(
        tokens("before-start", SEP - timedelta(days=3), "input"),
        tokens("september", SEP + timedelta(days=4), "input"),
    )

    time_machine.move_to(OCT + timedelta(hours=2), tick=False)
    assert periods_close(now=OCT + timedelta(hours=2)) == 1
    september = Invoice.objects.get(period_start=SEP)
    fence = Event.objects.get(event_id="september").id
    Invoice.objects.filter(pk=september.pk).update(usage_fence=fence)  # as finalize leaves it
    ingest(
        tokens("late", SEP + timedelta(days=20), "input"),
        tokens("october", OCT + timedelta(minutes=30), "input"),
        tokens("cached", OCT + timedelta(minutes=40), "cached_input"),
        tokens("unmetered", OCT + timedelta(minutes=50), "reasoning"),
    )
    september.refresh_from_db()
    return {"customer": customer, "meters": meters, "september": september}


def marks_by_id(customer, **filters) -> dict[str, str]:
    events = list(customer_events(customer, **filters))
    return {
        e.event_id: str(m)
        for e, m in zip(events, event_marks(customer=customer, events=events), strict=True)
    }


def test_each_event_says_where_it_is_billed_or_why_not(world):
    number = world["september"].invoice_number
    assert world["september"].invoice_status == Invoice.Status.FINALIZED and number
    assert marks_by_id(world["customer"]) == {
        "october": "billed: Input Tokens (proposed invoice)",
        "cached": "billed: Cached Tokens (proposed invoice); Input Tokens (proposed invoice)",
        "september": f"billed: Input Tokens on {number}",
        "late": f"not billed: late: it arrived after {number} was closed",
        "unmetered": "not billed: no meter counts it",
        "before-start": "not billed: outside the billing period",
    }


def test_a_closed_invoice_bills_by_the_meter_it_snapshotted(world):
    """Input Tokens stops counting cached input now; September's line was priced before."""
    meter = world["meters"]["Input Tokens"]
    meter.filters = [{"key": "prompt_type", "values": ["input"]}]
    meter.save()
    ingest(tokens("cached-in-september", SEP + timedelta(days=5), "cached_input"))
    marks = marks_by_id(world["customer"])
    assert marks["cached"] == "billed: Cached Tokens (proposed invoice)"
    assert marks["cached-in-september"].startswith("not billed: late")  # after the fence


def test_a_feature_lists_only_the_events_its_meter_counts(world):
    input_tokens = world["meters"]["Input Tokens"]
    listed = marks_by_id(world["customer"], meter=input_tokens)
    assert set(listed) == {"before-start", "september", "late", "october", "cached"}
    cached = marks_by_id(world["customer"], meter=world["meters"]["Cached Tokens"])
    assert set(cached) == {"cached"}


def test_marks_take_a_few_queries_whatever_the_page_holds(world, django_assert_max_num_queries):
    events = list(customer_events(world["customer"]))
    with django_assert_max_num_queries(4):
        event_marks(customer=world["customer"], events=events)


def test_the_events_page_and_csv_show_the_marks(client, world):
    portal_user_create(
        customer=world["customer"], email="acme@example.com", password="x", check_password=False
    )
    client.force_login(get_user_model().objects.get(email="acme@example.com"))
    page = client.get(reverse("portal:events")).content.decode()
    assert "billed: Input Tokens (proposed invoice)" in page
    assert "not billed: no meter counts it" in page
    feature = world["meters"]["Cached Tokens"].pk
    exported = b"".join(
        client.get(reverse("portal:events-csv"), {"feature": feature}).streaming_content
    ).decode()
    rows = list(csv.reader(io.StringIO(exported)))
    assert rows[0][-1] == "billing"
    assert [(r[0], r[-1]) for r in rows[1:]] == [
        ("cached", "billed: Cached Tokens (proposed invoice); Input Tokens (proposed invoice)")
    ]


def test_a_plan_without_usage_prices_counts_nothing(time_machine):
    time_machine.move_to(OCT, tick=False)
    meter = MeterFactory()
    plan = PlanFactory()
    PriceFactory(plan=plan, meter=None, type=Price.Type.FIXED, billing_model="FLAT_FEE")
    customer = CustomerFactory(external_id="acme", name="Acme")
    SubscriptionFactory(customer=customer, plan=plan, start_date=OCT)
    ingest(tokens("e1", OCT, "input"), now=OCT)
    assert meter.pk and marks_by_id(customer) == {"e1": "not billed: no meter counts it"}
