"""Proposed invoices, finalization, voiding and period close, on the o1 scenario."""

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
import time_machine
from django.db import IntegrityError, connection, transaction

from billing.demo import demo_catalog_load, scenario_load
from billing.models import Invoice
from billing.services import (
    InvalidTransition,
    invoice_compute,
    invoice_finalize,
    invoice_propose,
    invoice_void,
    periods_close,
    subscription_cancel,
    subscription_create,
)
from catalog.models import Plan
from metering.models import Customer
from metering.tasks import rollups_refresh
from tests.factories import CustomerFactory, SubscriptionFactory, ingest

pytestmark = pytest.mark.django_db

START = datetime(2026, 11, 3, 13, 27, 41, tzinfo=UTC)


@pytest.fixture
def o1(django_capture_on_commit_callbacks):
    """The o1 plan, its two customers subscribed from START, and the scenario's events."""
    o1_demo = scenario_load()  # the app's demo data; the reference's expectations are below
    plan = demo_catalog_load(scenario=o1_demo)
    rollups_refresh(settle_seconds=0)
    subs = {}
    with time_machine.travel(START + timedelta(days=1), tick=False):
        for spec in o1_demo["customers"]:
            customer = CustomerFactory(external_id=spec["external_id"], name=spec["name"])
            subs[spec["external_id"]] = SubscriptionFactory(
                customer=customer,
                plan=plan,
                start_date=START - timedelta(days=40),
                billing_anchor=START - timedelta(days=31),
            )
        for spec in o1_demo["events"]:
            at = START + timedelta(seconds=spec["period_offset_s"])
            with django_capture_on_commit_callbacks(execute=True):  # as after a real commit
                ingest(
                    {
                        "event_id": spec["event_id"],
                        "event_name": "tokens",
                        "external_customer_id": spec["customer"],
                        "timestamp": at.isoformat(),
                        "properties": spec["properties"],
                    }
                )
    return subs


def lines_of(invoice: Invoice) -> dict:
    return {
        li.price.meter.feature.lookup_key: (li.quantity, li.amount)
        for li in invoice.line_items.select_related("price__meter__feature")
    }


def draft_of(subscription) -> Invoice:
    return Invoice.objects.get(subscription=subscription, invoice_status="DRAFT")


def test_subscription_period_follows_its_anchor(o1):
    sub = o1["acme"]
    assert (sub.current_period_start, sub.current_period_end) == (
        START,
        datetime(2026, 12, 3, 13, 27, 41, tzinfo=UTC),
    )


def test_proposed_invoices_match_the_scenario_exactly(o1, o1_scenario):
    for customer, expected in o1_scenario["expected"].items():
        draft = draft_of(o1[customer])
        assert draft.total == Decimal(expected["total"])
        assert draft.subtotal == draft.total
        assert lines_of(draft) == {
            key: (Decimal(line["quantity"]), Decimal(line["amount"]))
            for key, line in expected["lines"].items()
        }
        assert draft.last_computed_at is not None


def test_proposing_twice_changes_nothing(o1):
    first = draft_of(o1["acme"])
    again = invoice_propose(subscription=o1["acme"])
    assert again.pk == first.pk and again.total == first.total
    assert Invoice.objects.filter(subscription=o1["acme"]).count() == 1
    assert again.line_items.count() == 3


def test_preview_computes_without_persisting(o1):
    sub = o1["acme"]
    before = Invoice.objects.count()
    proposal = invoice_compute(
        subscription=sub, period_start=sub.current_period_start, period_end=sub.current_period_end
    )
    assert proposal.total == Decimal("202.50")
    previous = invoice_compute(
        subscription=sub, period_start=START - timedelta(days=30), period_end=START
    )
    assert previous.total == Decimal("135.00")  # e8: 9,000,000 input tokens
    assert Invoice.objects.count() == before


def test_finalize_numbers_sequentially_and_freezes(o1):
    with time_machine.travel(datetime(2026, 11, 20, tzinfo=UTC), tick=False):
        acme = invoice_finalize(invoice=draft_of(o1["acme"]))
        globex = invoice_finalize(invoice=draft_of(o1["globex"]))
    assert (acme.invoice_number, globex.invoice_number) == ("INV-202611-00001", "INV-202611-00002")
    assert acme.invoice_status == "FINALIZED" and acme.finalized_at is not None
    acme.total = Decimal("1")
    with pytest.raises(IntegrityError, match="closed invoice cannot change"), transaction.atomic():
        acme.save()
    with pytest.raises(InvalidTransition, match="Only a DRAFT"):
        invoice_finalize(invoice=acme)
    ingest(
        {
            "event_id": "late",
            "event_name": "tokens",
            "external_customer_id": "acme",
            "timestamp": (START + timedelta(hours=5)).isoformat(),
            "properties": {"model": "OpenAI O1", "prompt_type": "input", "tokens": 1},
        }
    )
    assert invoice_propose(subscription=o1["acme"]).total == Decimal("202.50")
    acme.refresh_from_db()
    assert acme.total == Decimal("202.50")


def test_a_zero_invoice_is_skipped_without_a_number(o1):
    sub = o1["acme"]
    Invoice.objects.filter(pk=draft_of(sub).pk).delete()
    empty = Invoice.objects.create(
        subscription=sub,
        customer=sub.customer,
        currency="usd",
        period_start=sub.current_period_start,
        period_end=sub.current_period_start,
    )
    skipped = invoice_finalize(invoice=empty)
    assert skipped.invoice_status == "SKIPPED" and skipped.invoice_number is None


def test_void_keeps_the_record_and_refuses_twice(o1):
    invoice = invoice_finalize(invoice=draft_of(o1["acme"]))
    voided = invoice_void(invoice=invoice)
    assert voided.invoice_status == "VOIDED" and voided.voided_at is not None
    assert voided.invoice_number == invoice.invoice_number and voided.total == Decimal("202.50")
    with pytest.raises(InvalidTransition, match="VOIDED invoice cannot be voided"):
        invoice_void(invoice=voided)
    voided.total = Decimal(0)
    with pytest.raises(IntegrityError, match="closed invoice"), transaction.atomic():
        voided.save()


def test_voiding_cannot_change_the_amounts(o1):
    invoice = invoice_finalize(invoice=draft_of(o1["acme"]))
    invoice.invoice_status = "VOIDED"
    invoice.total = Decimal("1.00")
    with pytest.raises(IntegrityError, match="closed invoice"), transaction.atomic():
        invoice.save()


def test_the_database_itself_keeps_closed_invoices_and_their_lines(o1):
    """Bulk updates and deletes go round every service; the triggers stop them."""
    invoice = invoice_finalize(invoice=draft_of(o1["acme"]))
    closed = Invoice.objects.filter(pk=invoice.pk)
    for change in (
        lambda: closed.update(total=Decimal(1)),
        lambda: closed.update(invoice_status="DRAFT"),
        lambda: invoice.line_items.update(amount=Decimal(0)),
        lambda: invoice.line_items.create(
            price_type="FIXED",
            display_name="sneaked in",
            quantity=1,
            amount=Decimal(1),
            currency="usd",
            period_start=invoice.period_start,
            period_end=invoice.period_end,
        ),
    ):
        with pytest.raises(IntegrityError), transaction.atomic():
            change()
    if connection.vendor == "postgresql":  # SQLite leaves deleting to the services
        for delete in (closed.delete, invoice.line_items.all().delete):
            with pytest.raises(IntegrityError), transaction.atomic():
                delete()
    closed.update(payment_status="SUCCEEDED")  # paying it is no change to what it bills
    voided = invoice_void(invoice=Invoice.objects.get(pk=invoice.pk))
    assert (voided.total, voided.line_items.count()) == (Decimal("202.50"), 3)


def test_period_close_finalizes_and_opens_the_next_draft(o1):
    sub = o1["acme"]
    end = sub.current_period_end
    assert periods_close(now=end - timedelta(seconds=1)) == 0
    with time_machine.travel(end + timedelta(minutes=1), tick=False):
        assert periods_close(now=end + timedelta(minutes=1)) == 2
        assert periods_close(now=end + timedelta(minutes=1)) == 0  # safe to run twice
    closed = Invoice.objects.get(subscription=sub, period_end=end)
    assert closed.invoice_status == "FINALIZED" and closed.invoice_number.startswith("INV-202612-")
    sub.refresh_from_db()
    assert sub.current_period_start == end
    assert sub.current_period_end == datetime(2027, 1, 3, 13, 27, 41, tzinfo=UTC)
    nxt = draft_of(sub)
    assert nxt.period_start == end and nxt.total == 0
    # A late event for the closed period stays out of its invoice.
    ingest(
        {
            "event_id": "late",
            "event_name": "tokens",
            "external_customer_id": "acme",
            "timestamp": (end - timedelta(hours=1)).isoformat(),
            "properties": {"model": "OpenAI O1", "prompt_type": "output", "tokens": 5},
        },
        now=end + timedelta(minutes=2),
    )
    closed.refresh_from_db()
    assert closed.total == Decimal("202.50")


def test_cancel_at_period_end_stops_after_close(o1):
    sub = subscription_cancel(subscription=o1["globex"], cancellation_type="end_of_period")
    assert sub.cancel_at_period_end and sub.status == "active"
    periods_close(now=sub.current_period_end)
    sub.refresh_from_db()
    assert sub.status == "cancelled"
    assert not Invoice.objects.filter(subscription=sub, invoice_status="DRAFT").exists()


def test_subscription_refuses_a_currency_the_plan_does_not_price(o1):
    from django.core.exceptions import ValidationError

    with pytest.raises(ValidationError, match="no prices in eur"):
        subscription_create(
            customer=Customer.objects.get(external_id="acme"),
            plan=Plan.objects.get(),
            currency="EUR",
        )
