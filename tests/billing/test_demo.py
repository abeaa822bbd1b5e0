from decimal import Decimal

import pytest
from django.core.management import call_command

from catalog.models import Feature, Meter, Plan, Price

pytestmark = pytest.mark.django_db
DEMO_CREDITS = {"acme": Decimal("110")}  # $100 bought + $10 promotional, 1 credit = $1


def test_seed_demo_loads_the_o1_catalog_once(o1_scenario):
    call_command("seed_demo")
    call_command("seed_demo")

    assert Feature.objects.count() == len(o1_scenario["features"])
    plan = Plan.objects.get(lookup_key="openai-o1")
    amounts = {
        p.meter.feature.lookup_key: p.amount for p in plan.prices.select_related("meter__feature")
    }
    assert amounts == {s["feature"]: Decimal(s["amount"]) for s in o1_scenario["plan"]["prices"]}
    assert Price.objects.count() == 3
    meter = Meter.objects.get(feature__lookup_key="o1-output")
    assert meter.filters == [
        {"key": "model", "values": ["OpenAI O1"]},
        {"key": "prompt_type", "values": ["output"]},
    ]


def test_seed_demo_proposes_the_scenario_totals(o1_scenario):
    from billing.models import Invoice

    call_command("seed_demo")
    call_command("seed_demo")
    for customer, expected in o1_scenario["expected"].items():
        draft = Invoice.objects.get(customer__external_id=customer, invoice_status="DRAFT")
        assert draft.subtotal == Decimal(expected["total"])
        # acme's $110 of demo credits pay part of its usage; globex has none.
        credits = DEMO_CREDITS.get(customer, Decimal(0))
        assert draft.total_prepaid_credits_applied == credits
        assert draft.total == Decimal(expected["total"]) - credits
        assert {li.display_name: li.amount for li in draft.line_items.all()} == {
            f["name"]: Decimal(expected["lines"][f["lookup_key"]]["amount"])
            for f in o1_scenario["features"]
        }


def test_the_demo_data_is_the_reference_scenario(o1_scenario):
    from billing.demo import scenario_load

    assert scenario_load() == o1_scenario


def test_seed_demo_names_the_issuer_and_bills_to_addresses_but_keeps_an_operators_issuer():
    from billing.demo import DEMO_ISSUER
    from billing.models import Issuer
    from metering.models import Customer

    call_command("seed_demo")
    assert Issuer.get_solo().details().name == DEMO_ISSUER["name"]
    assert Customer.objects.get(external_id="acme").address_city == "Austin"

    issuer = Issuer.get_solo()
    issuer.name = "Operator Co"
    issuer.save()
    call_command("seed_demo")
    assert Issuer.get_solo().name == "Operator Co"


def test_seed_demo_gives_acme_a_prepaid_wallet_once():
    from billing import ledger
    from billing.models import Subscription, Wallet
    from billing.wallets import wallet_balance

    call_command("seed_demo")
    call_command("seed_demo")
    wallet = Wallet.objects.get(customer__external_id="acme")
    subscription = Subscription.objects.get(customer__external_id="acme")
    assert (wallet.wallet_type, wallet.currency, wallet.wallet_status) == (
        "PRE_PAID",
        "usd",
        "active",
    )
    blocks = {b.transaction_reason: b for b in ledger.blocks(wallet)}
    assert {r: b.credit_amount for r, b in blocks.items()} == {
        "PURCHASED_CREDIT_DIRECT": Decimal("100"),
        "FREE_CREDIT_GRANT": Decimal("10"),
    }
    assert blocks["PURCHASED_CREDIT_DIRECT"].expiry_date is None
    assert blocks["FREE_CREDIT_GRANT"].expiry_date == subscription.current_period_end
    live = wallet_balance(wallet)
    assert (live.balance, live.current_period_usage) == (Decimal("110"), Decimal("202.50"))
    assert live.real_time_balance == Decimal("-92.50")
    assert not Wallet.objects.filter(customer__external_id="globex").exists()
