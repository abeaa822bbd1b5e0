"""The snapshot and fence backfill on a database that already holds invoices and events."""

from datetime import UTC, datetime
from decimal import Decimal

import pytest
from django.db import connection
from django.db.migrations.executor import MigrationExecutor

BEFORE = [("billing", "0001_initial"), ("catalog", "0002_meter_name")]
AFTER = [("billing", "0003_backfill_snapshots_and_fences")]


def migrate(targets):
    executor = MigrationExecutor(connection)
    executor.loader.build_graph()
    executor.migrate(targets)
    return executor.loader.project_state(targets).apps


@pytest.fixture
def back_to_latest():
    """Other tests need every migration applied, whatever this one left."""
    yield
    migrate(MigrationExecutor(connection).loader.graph.leaf_nodes())


@pytest.mark.django_db(transaction=True)
def test_existing_lines_get_snapshots_and_closed_invoices_fences(back_to_latest):
    old = migrate(BEFORE)
    t, t2 = datetime(2026, 1, 1, tzinfo=UTC), datetime(2026, 2, 1, tzinfo=UTC)
    feature = old.get_model("catalog", "Feature").objects.create(
        id="feat_1", name="Tokens", lookup_key="tokens", unit_singular="token", unit_plural="tokens"
    )
    meter = old.get_model("catalog", "Meter").objects.create(
        id="meter_1", feature=feature, event_name="tok", aggregation="SUM", field="n"
    )
    plan = old.get_model("catalog", "Plan").objects.create(id="plan_1", name="P")
    price = old.get_model("catalog", "Price").objects.create(
        id="price_1", plan=plan, meter=meter, amount=Decimal(15), divide_by=1_000_000
    )
    customer = old.get_model("metering", "Customer").objects.create(
        id="cust_1", external_id="c1", name="C"
    )
    subscription = old.get_model("billing", "Subscription").objects.create(
        id="sub_1",
        customer=customer,
        plan=plan,
        billing_anchor=t,
        start_date=t,
        current_period_start=t,
        current_period_end=t2,
    )
    invoice = old.get_model("billing", "Invoice").objects.create(
        id="inv_1",
        customer=customer,
        subscription=subscription,
        currency="usd",
        period_start=t,
        period_end=t2,
        invoice_status="FINALIZED",
        finalized_at=t2,
    )
    old.get_model("billing", "InvoiceLineItem").objects.create(
        invoice=invoice,
        price=price,
        meter=meter,
        price_type="USAGE",
        display_name="Tokens",
        quantity=Decimal(2_500_000),
        amount=Decimal(45),
        currency="usd",
        period_start=t,
        period_end=t2,
    )
    Event = old.get_model("metering", "Event")
    for day in (5, 10, 31):  # stored before the invoice closed
        Event.objects.create(
            event_id=f"jan-{day}",
            event_name="tok",
            external_customer_id="c1",
            timestamp=t,
            ingested_at=datetime(2026, 1, day, tzinfo=UTC),
        )
    late = Event.objects.create(
        event_id="march",
        event_name="tok",
        external_customer_id="c1",
        timestamp=t,
        ingested_at=datetime(2026, 3, 1, tzinfo=UTC),
    )

    new = migrate(AFTER)
    line = new.get_model("billing", "InvoiceLineItem").objects.get()
    assert line.terms["amount"] == "15.000000000000" and line.terms["divide_by"] == 1_000_000
    assert line.meter_definition["event_name"] == "tok"
    assert line.meter_definition["reset_usage"] == "BILLING_PERIOD"
    assert (line.packages, line.unit_plural) == (3, "tokens")
    fence = new.get_model("billing", "Invoice").objects.get().usage_fence
    assert fence == late.id - 1
