"""The operator admin: every page loads, and the o1 plan can be built through the forms."""

from decimal import Decimal

import pytest
from django.contrib import admin
from django.urls import reverse

from catalog.models import Feature, Meter, Plan, Price, PriceTier
from tests.factories import MeterFactory, PlanFactory, PriceFactory

pytestmark = pytest.mark.django_db


def management(prefix: str, total: int, initial: int = 0, max_num: int = 1000) -> dict:
    return {
        f"{prefix}-TOTAL_FORMS": str(total),
        f"{prefix}-INITIAL_FORMS": str(initial),
        f"{prefix}-MIN_NUM_FORMS": "0",
        f"{prefix}-MAX_NUM_FORMS": str(max_num),
    }


def test_every_registered_admin_changelist_and_add_page_loads(admin_client):
    PriceFactory()  # something to list
    for model, model_admin in admin.site._registry.items():
        name = f"admin:{model._meta.app_label}_{model._meta.model_name}"
        assert admin_client.get(reverse(f"{name}_changelist")).status_code == 200, model
        add = admin_client.get(reverse(f"{name}_add"))
        expected = 200 if model_admin.has_add_permission(add.wsgi_request) else 403
        assert add.status_code == expected, model


def test_price_change_page_shows_worked_example(admin_client):
    price = PriceFactory(amount=Decimal("15"), divide_by=1_000_000)
    page = admin_client.get(reverse("admin:catalog_price_change", args=[price.pk]))
    assert "5,000,000 tokens → $75.00" in page.content.decode()


def feature_post(name, lookup_key, prompt_type) -> dict:
    return {
        "name": name,
        "lookup_key": lookup_key,
        "type": "metered",
        "unit_singular": "token",
        "unit_plural": "tokens",
        "description": "",
        "metadata": "{}",
        **management("meter", total=1, max_num=1),
        "meter-0-event_name": "tokens",
        "meter-0-aggregation": "SUM",
        "meter-0-field": "tokens",
        "meter-0-multiplier": "",
        "meter-0-filters": f"model: OpenAI O1\nprompt_type: {prompt_type}",
        "meter-0-reset_usage": "BILLING_PERIOD",
    }


def price_row(index: int, meter: Meter, amount: str) -> dict:
    p = f"prices-{index}-"
    return {
        p + "meter": meter.pk,
        p + "type": "USAGE",
        p + "billing_model": "PACKAGE",
        p + "amount": amount,
        p + "currency": "USD",
        p + "divide_by": "1000000",
        p + "round": "up",
        p + "free_units": "0",
        p + "billing_period": "MONTHLY",
        p + "billing_period_count": "1",
        p + "invoice_cadence": "ARREAR",
        p + "display_name": "",
        p + "lookup_key": "",
    }


def test_operator_builds_the_o1_plan_through_the_admin(admin_client, o1_scenario):
    for spec in o1_scenario["features"]:
        prompt_type = spec["meter"]["filters"][1]["values"][0]
        response = admin_client.post(
            reverse("admin:catalog_feature_add"),
            feature_post(spec["name"], spec["lookup_key"], prompt_type),
        )
        assert response.status_code == 302, response.context["adminform"].form.errors

    meters = {f.lookup_key: f.meter for f in Feature.objects.select_related("meter")}
    assert meters["o1-input"].filters == [
        {"key": "model", "values": ["OpenAI O1"]},
        {"key": "prompt_type", "values": ["input"]},
    ]

    prices = o1_scenario["plan"]["prices"]
    data = {
        "name": "OpenAI O1",
        "lookup_key": "openai-o1",
        "description": "",
        "active": "on",
        "metadata": "{}",
        **management("prices", total=len(prices)),
    }
    for index, spec in enumerate(prices):
        data.update(price_row(index, meters[spec["feature"]], spec["amount"]))
    response = admin_client.post(reverse("admin:catalog_plan_add"), data)
    assert response.status_code == 302

    plan = Plan.objects.get(lookup_key="openai-o1")
    saved = {p.meter.feature.lookup_key: p for p in plan.prices.select_related("meter__feature")}
    assert {k: p.amount for k, p in saved.items()} == {
        "o1-input": Decimal("15"),
        "o1-output": Decimal("60"),
        "o1-cached-input": Decimal("7.5"),
    }
    assert all(
        p.currency == "usd" and p.transform_quantity == {"divide_by": 1_000_000, "round": "up"}
        for p in saved.values()
    )


def test_feature_form_shows_filter_error_and_saves_nothing(admin_client):
    data = feature_post("Input", "input", "input")
    data["meter-0-filters"] = "model OpenAI O1"
    response = admin_client.post(reverse("admin:catalog_feature_add"), data)
    assert response.status_code == 200
    assert "Line 1: write it as key: value, value." in response.content.decode()
    assert not Feature.objects.exists()


def test_metered_feature_without_meter_is_refused(admin_client):
    data = feature_post("Input", "input", "input")
    data.update(management("meter", total=0, max_num=1))
    response = admin_client.post(reverse("admin:catalog_feature_add"), data)
    assert "A metered feature needs a meter" in response.content.decode()
    assert not Feature.objects.exists()


def test_sum_meter_without_field_is_refused_on_the_form(admin_client):
    data = feature_post("Input", "input", "input")
    data["meter-0-field"] = ""
    response = admin_client.post(reverse("admin:catalog_feature_add"), data)
    assert "SUM needs the event property to aggregate." in response.content.decode()
    assert not Feature.objects.exists()


def test_package_price_without_divide_by_is_refused_on_the_plan_form(admin_client):
    meter = MeterFactory()
    data = {
        "name": "P",
        "lookup_key": "p",
        "description": "",
        "active": "on",
        "metadata": "{}",
        **management("prices", total=1),
        **price_row(0, meter, "15"),
    }
    data["prices-0-divide_by"] = ""
    response = admin_client.post(reverse("admin:catalog_plan_add"), data)
    assert response.status_code == 200
    assert "needs transform_quantity.divide_by" in response.content.decode()
    assert not Plan.objects.exists()


def tiered_price_post(plan: Plan, meter: Meter, tiers: list[tuple[str, str, str]]) -> dict:
    data = {
        "plan": plan.pk,
        "meter": meter.pk,
        "type": "USAGE",
        "billing_model": "TIERED",
        "display_name": "",
        "lookup_key": "",
        "description": "",
        "amount": "0",
        "currency": "usd",
        "divide_by": "",
        "round": "up",
        "free_units": "0",
        "tier_mode": "SLAB",
        "billing_period": "MONTHLY",
        "billing_period_count": "1",
        "invoice_cadence": "ARREAR",
        "metadata": "{}",
        **management("tiers", total=len(tiers)),
    }
    for index, (up_to, unit, flat) in enumerate(tiers):
        data.update(
            {
                f"tiers-{index}-up_to": up_to,
                f"tiers-{index}-unit_amount": unit,
                f"tiers-{index}-flat_amount": flat,
            }
        )
    return data


def test_tiered_price_with_its_tiers_is_saved_from_the_price_form(admin_client):
    plan, meter = PlanFactory(), MeterFactory()
    data = tiered_price_post(plan, meter, [("10", "50", "0"), ("20", "40", "0"), ("", "30", "0")])
    response = admin_client.post(reverse("admin:catalog_price_add"), data)
    assert response.status_code == 302
    price = Price.objects.get()
    assert [t.up_to for t in price.tiers.all()] == [Decimal(10), Decimal(20), None]
    page = admin_client.get(reverse("admin:catalog_price_change", args=[price.pk]))
    # SLAB at 40 units: 10×50 + 10×40 + 20×30 = 1,500
    assert "40 tokens → $1,500.00" in page.content.decode()


@pytest.mark.parametrize(
    ("tiers", "reason"),
    [
        ([("10", "50", "0"), ("5", "40", "0"), ("", "30", "0")], "must be greater than 10"),
        ([("", "50", "0"), ("", "40", "0")], "only the last tier may be open"),
        ([("10", "50", "0"), ("20", "40", "0")], "the last tier must be open"),
        ([], "needs at least one tier"),
    ],
)
def test_invalid_tier_set_is_refused_and_nothing_saved(admin_client, tiers, reason):
    plan, meter = PlanFactory(), MeterFactory()
    response = admin_client.post(
        reverse("admin:catalog_price_add"), tiered_price_post(plan, meter, tiers)
    )
    assert response.status_code == 200
    assert reason in response.content.decode()
    assert not Price.objects.exists()
    assert not PriceTier.objects.exists()
