"""The OpenAI o1 demo: the catalog from ``billing/data/openai_o1.json``, loaded idempotently."""

import json
from datetime import timedelta
from decimal import Decimal
from pathlib import Path

from django.db import transaction
from django.utils import timezone

from billing.credits import open_wallet
from billing.models import Issuer, Subscription, Wallet, WalletTransaction
from billing.services import invoice_propose, subscription_create
from billing.wallets import wallet_create, wallet_top_up
from catalog.models import Feature, Plan, Price
from catalog.services import feature_create, plan_create, price_create
from metering.ingestion import event_parse, events_ingest, meters_by_event_name
from metering.models import Customer
from metering.services import portal_user_create
from metering.tasks import rollups_refresh

SCENARIO = Path(__file__).resolve().parent / "data" / "openai_o1.json"


# Invoice paper for the demo; the reference scenario itself carries only pricing and usage.
DEMO_ISSUER = {
    "name": "Tally Demo Models, Inc.",
    "address": "1 Market Street\nSan Francisco, CA 94105\nUnited States",
    "email": "billing@example.com",
    "tax_id": "US 00-0000000",
}
DEMO_ADDRESSES = {
    "acme": {
        "address_line1": "500 Acme Way",
        "address_city": "Austin",
        "address_state": "TX",
        "address_postal_code": "78701",
        "address_country": "US",
    },
    "globex": {
        "address_line1": "42 Globex Plaza",
        "address_city": "Springfield",
        "address_postal_code": "12345",
        "address_country": "US",
    },
}


def scenario_load(path: Path = SCENARIO) -> dict:
    return json.loads(path.read_text())


def _meter_fields(meter: dict) -> dict:
    aggregation = meter["aggregation"]
    multiplier = aggregation.get("multiplier")
    return {
        "event_name": meter["event_name"],
        "aggregation": aggregation["type"],
        "field": aggregation.get("field", ""),
        "multiplier": Decimal(str(multiplier)) if multiplier is not None else None,
        "filters": meter.get("filters", []),
    }


@transaction.atomic
def demo_catalog_load(*, scenario: dict) -> Plan:
    """Create the scenario's features, plan and prices unless they already exist."""
    features = {}
    for spec in scenario["features"]:
        feature = Feature.objects.filter(lookup_key=spec["lookup_key"]).first()
        if feature is None:
            feature = feature_create(
                name=spec["name"],
                lookup_key=spec["lookup_key"],
                type=spec["type"],
                unit_singular="token",
                unit_plural="tokens",
                meter=_meter_fields(spec["meter"]),
            )
        features[spec["lookup_key"]] = feature

    plan_spec = scenario["plan"]
    plan = Plan.objects.filter(lookup_key=plan_spec["lookup_key"]).first()
    if plan is None:
        plan = plan_create(name=plan_spec["name"], lookup_key=plan_spec["lookup_key"])
    for spec in plan_spec["prices"]:
        meter = features[spec["feature"]].meter
        if Price.objects.filter(plan=plan, meter=meter).exists():
            continue
        transform = spec.get("transform_quantity") or {}
        price_create(
            plan=plan,
            meter=meter,
            type=spec["type"],
            billing_model=spec["billing_model"],
            amount=Decimal(spec["amount"]),
            currency=plan_spec["currency"],
            billing_period=plan_spec["billing_period"],
            divide_by=transform.get("divide_by"),
            round=transform.get("round", "up"),
            display_name=features[spec["feature"]].name,
        )
    return plan


@transaction.atomic
def demo_customers_load(*, scenario: dict, plan: Plan) -> list[Subscription]:
    """Subscribe the scenario's customers from an hour ago and send its events."""
    rollups_refresh(settle_seconds=0)
    now = timezone.now()
    period_start = now - timedelta(hours=1)
    subscriptions = {}
    for spec in scenario["customers"]:
        customer, _ = Customer.objects.get_or_create(
            external_id=spec["external_id"],
            defaults={
                "name": spec["name"],
                "email": f"{spec['external_id']}@example.com",
                **DEMO_ADDRESSES.get(spec["external_id"], {}),
            },
        )
        subscription = Subscription.objects.filter(
            customer=customer, plan=plan, status=Subscription.Status.ACTIVE
        ).first() or subscription_create(customer=customer, plan=plan, start_date=period_start)
        subscriptions[spec["external_id"]] = subscription
    meters = meters_by_event_name()
    events = []
    for spec in scenario["events"]:
        subscription = subscriptions[spec["customer"]]
        at = subscription.current_period_start + timedelta(seconds=spec["period_offset_s"])
        raw = {
            "event_id": f"demo-{spec['event_id']}",
            "event_name": "tokens",
            "external_customer_id": spec["customer"],
            "timestamp": at.isoformat(),
            "properties": spec["properties"],
        }
        events.append(event_parse(raw, meters=meters, now=now))
    events_ingest(events=events)
    demo_wallet_load(subscription=subscriptions["acme"])
    for subscription in subscriptions.values():
        invoice_propose(subscription=subscription)
        _demo_portal_user(subscription.customer)
    return list(subscriptions.values())


# acme's prepaid credits: bought, and a promotion that lapses with the period.
DEMO_PURCHASED = Decimal(100)
DEMO_PROMOTIONAL = Decimal(10)


def demo_wallet_load(*, subscription: Subscription) -> Wallet:
    """A PRE_PAID wallet with $100 bought and $10 of promotional credits expiring at the end of
    the current period; the keys make a second run add nothing."""
    wallet = open_wallet(customer_id=subscription.customer_id, currency=subscription.currency)
    if wallet is None:
        wallet = wallet_create(
            customer=subscription.customer,
            currency=subscription.currency,
            wallet_type=Wallet.Type.PRE_PAID,
            name="Prepaid credits",
        )
    Reason = WalletTransaction.Reason
    wallet_top_up(
        wallet=wallet,
        reason=Reason.PURCHASED_CREDIT_DIRECT,
        credits=DEMO_PURCHASED,
        idempotency_key="demo-purchase",
        description="Demo: credits bought",
    )
    wallet_top_up(
        wallet=wallet,
        reason=Reason.FREE_CREDIT_GRANT,
        credits=DEMO_PROMOTIONAL,
        expiry_date=subscription.current_period_end,
        idempotency_key="demo-promotion",
        description="Demo: promotional credits",
    )
    return wallet


def demo_issuer_load() -> None:
    """The demo's company on invoices, unless the operator already named theirs."""
    issuer = Issuer.get_solo()
    if not issuer.name:
        for field, value in DEMO_ISSUER.items():
            setattr(issuer, field, value)
        issuer.save()


def demo_password(customer: Customer) -> str:
    return f"{customer.external_id}-demo"


def _demo_portal_user(customer: Customer) -> None:
    """``acme@example.com`` / ``acme-demo``: demo data only."""
    if not customer.users.exists():
        portal_user_create(
            customer=customer,
            email=f"{customer.external_id}@example.com",
            password=demo_password(customer),
            check_password=False,
        )
