"""Catalog writes: a price billed on invoices keeps its money terms."""

from decimal import Decimal

import pytest
from django.core.exceptions import NON_FIELD_ERRORS, ValidationError

from catalog.models import Price, PriceTier
from catalog.pricing import Tier
from catalog.services import plan_version_create, price_delete, price_update
from tests.factories import (
    MeterFactory,
    PlanFactory,
    PriceFactory,
    PriceTierFactory,
    subscribe,
)

pytestmark = pytest.mark.django_db


def refusal(call, **kwargs) -> str:
    with pytest.raises(ValidationError) as info:
        call(**kwargs)
    return " ".join(info.value.message_dict[NON_FIELD_ERRORS])


def test_price_update_refuses_money_terms_of_a_price_in_use():
    price = PriceFactory(amount=Decimal("15"))
    subscribe(price.plan)
    message = refusal(price_update, price=price, amount=Decimal("16"), meter=MeterFactory())
    assert message.startswith("Cannot change meter, amount.")
    assert "Duplicate the plan as a new version" in message
    price.refresh_from_db()
    assert price.amount == Decimal("15")


def test_price_update_refuses_new_tiers_on_a_price_in_use():
    tier = PriceTierFactory(up_to=None, unit_amount=Decimal("2"))
    subscribe(tier.price.plan)
    message = refusal(
        price_update, price=tier.price, tiers=[Tier(up_to=None, unit_amount=Decimal("3"))]
    )
    assert message.startswith("Cannot change tiers.")
    assert [t.unit_amount for t in tier.price.tiers.all()] == [Decimal("2")]


def test_price_update_keeps_names_and_metadata_editable_on_a_price_in_use():
    price = PriceFactory()
    subscribe(price.plan)
    price_update(
        price=price,
        amount=Decimal("15"),  # unchanged terms may be sent back as they are
        display_name="Input tokens",
        description="Per million",
        lookup_key="input-tokens",
        metadata={"sku": "in"},
    )
    price.refresh_from_db()
    assert (price.display_name, price.lookup_key, price.metadata) == (
        "Input tokens",
        "input-tokens",
        {"sku": "in"},
    )


def test_price_update_changes_anything_on_a_price_not_in_use():
    price = PriceFactory(billing_model=Price.BillingModel.TIERED, divide_by=None)
    price_update(
        price=price,
        amount=Decimal(0),
        currency="EUR",
        tiers=[Tier(up_to=Decimal(10), unit_amount=Decimal(1)), Tier(None, Decimal("0.5"))],
    )
    price.refresh_from_db()
    assert price.currency == "eur"
    assert [(t.up_to, t.unit_amount) for t in price.tiers.all()] == [
        (Decimal(10), Decimal(1)),
        (None, Decimal("0.5")),
    ]


def test_price_delete_refuses_a_price_in_use_and_deletes_one_that_is_not():
    used, unused = PriceFactory(), PriceFactory()
    subscribe(used.plan)
    assert "cannot be deleted" in refusal(price_delete, price=used)
    price_delete(price=unused)
    assert list(Price.objects.all()) == [used]


def test_plan_version_create_copies_every_price_and_tier_under_new_ids():
    tier = PriceTierFactory(up_to=None, unit_amount=Decimal("2"), flat_amount=Decimal("1"))
    plan = tier.price.plan
    package = PriceFactory(plan=plan, display_name="Input", metadata={"sku": "in"})
    copy = plan_version_create(plan=plan)
    assert (copy.version, copy.previous_version, copy.lookup_key) == (
        2,
        plan,
        f"{plan.lookup_key}-v2",
    )
    assert [p.money_terms() | {"plan": None} for p in copy.prices.all()] == [
        p.money_terms() | {"plan": None} for p in plan.prices.all()
    ]
    assert copy.prices.get(meter=package.meter).metadata == {"sku": "in"}
    assert PriceTier.objects.filter(price__plan=copy).get().pk != tier.pk


def test_plan_version_create_numbers_from_the_base_name_and_skips_keys_in_use():
    plan = PlanFactory(name="Pro", lookup_key="pro")
    PriceFactory(plan=plan, lookup_key="pro-input")
    PlanFactory(lookup_key="pro-v2")  # someone took it
    second = plan_version_create(plan=plan)
    third = plan_version_create(plan=second)
    assert [(p.name, p.lookup_key, p.version) for p in (second, third)] == [
        ("Pro v3", "pro-v3", 3),
        ("Pro v4", "pro-v4", 4),
    ]
    assert third.prices.get().lookup_key == "pro-input-v4"
    assert second.next_versions.get() == third
