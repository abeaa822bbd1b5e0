"""The operator admin: every page loads, and the o1 plan can be built through the forms."""

import json
from decimal import Decimal

import pytest
from django.contrib import admin
from django.urls import reverse

from catalog.models import Feature, Meter, Plan, Price, PriceTier
from tests.factories import (
    MeterFactory,
    PlanFactory,
    PriceFactory,
    PriceTierFactory,
    subscribe,
)

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
    # 3.7 packages by default, so that the rounding shows.
    assert "3,700,000 tokens → 4 packages × $15.00 = $60.00, rounded up" in page.content.decode()


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
        **management("credit_grants", total=0),  # billing's inline on the plan form
        **management("entitlements", total=0),
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
        **management("credit_grants", total=0),  # billing's inline on the plan form
        **management("entitlements", total=0),
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
    expected = "40 tokens → 10 × $50.00 (tier 1) + 10 × $40.00 (tier 2) + 20 × $30.00 (tier 3)"
    assert f"{expected} = $1,500.00" in page.content.decode()


def test_usage_price_billed_in_advance_is_refused_on_its_field(admin_client):
    plan, meter = PlanFactory(), MeterFactory()
    data = tiered_price_post(plan, meter, [("", "30", "0")])
    response = admin_client.post(
        reverse("admin:catalog_price_add"), {**data, "invoice_cadence": "ADVANCE"}
    )
    assert response.status_code == 200
    errors = response.context["adminform"].form.errors
    assert "always billed in arrears" in " ".join(errors["invoice_cadence"])
    assert not Price.objects.exists()


def test_plan_inline_refuses_a_usage_price_billed_in_advance(admin_client):
    meter = MeterFactory()
    data = {
        "name": "Pro",
        "lookup_key": "pro",
        "description": "",
        "active": "on",
        "metadata": "{}",
        **management("prices", total=1),
        **management("credit_grants", total=0),  # billing's inline on the plan form
        **management("entitlements", total=0),
        **price_row(0, meter, "15"),
        "prices-0-invoice_cadence": "ADVANCE",
    }
    response = admin_client.post(reverse("admin:catalog_plan_add"), data)
    assert response.status_code == 200
    assert "always billed in arrears" in response.content.decode()
    assert not Plan.objects.exists() and not Price.objects.exists()


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


# Prices billed on invoices are frozen


def price_change_post(price: Price, **changes) -> dict:
    """The price's change form as the admin renders it, with ``changes`` typed in."""
    tiers = list(price.tiers.all())
    data = {
        "plan": price.plan_id,
        "meter": price.meter_id or "",
        "type": price.type,
        "billing_model": price.billing_model,
        "display_name": price.display_name,
        "lookup_key": price.lookup_key or "",
        "description": price.description,
        "amount": str(price.amount),
        "currency": price.currency,
        "divide_by": price.divide_by or "",
        "round": price.round,
        "free_units": str(price.free_units),
        "tier_mode": price.tier_mode,
        "billing_period": price.billing_period,
        "billing_period_count": str(price.billing_period_count),
        "invoice_cadence": price.invoice_cadence,
        "metadata": json.dumps(price.metadata),
        **management("tiers", total=len(tiers), initial=len(tiers)),
    }
    for index, tier in enumerate(tiers):
        p = f"tiers-{index}-"
        data[p + "id"] = tier.pk
        data[p + "price"] = price.pk
        data[p + "up_to"] = "" if tier.up_to is None else str(tier.up_to)
        data[p + "unit_amount"] = str(tier.unit_amount)
        data[p + "flat_amount"] = str(tier.flat_amount)
    return {**data, **changes}


def plan_change_post(plan: Plan, **changes) -> dict:
    prices = list(plan.prices.all())
    data = {
        "name": plan.name,
        "lookup_key": plan.lookup_key or "",
        "description": plan.description,
        "active": "on",
        "metadata": json.dumps(plan.metadata),
        **management("prices", total=len(prices), initial=len(prices)),
        **management("credit_grants", total=0),  # billing's inline on the plan form
        **management("entitlements", total=0),
    }
    for index, price in enumerate(prices):
        data.update(price_row(index, price.meter, str(price.amount)))
        data[f"prices-{index}-id"] = price.pk
        data[f"prices-{index}-plan"] = plan.pk
    return {**data, **changes}


def price_change(admin_client, price: Price, **changes):
    return admin_client.post(
        reverse("admin:catalog_price_change", args=[price.pk]), price_change_post(price, **changes)
    )


@pytest.fixture
def price_in_use():
    price = PriceFactory(amount=Decimal("15"))
    subscribe(price.plan)
    return price


def test_price_in_use_refuses_an_amount_change_and_says_what_to_do(admin_client, price_in_use):
    response = price_change(admin_client, price_in_use, amount="16", display_name="Renamed")
    assert response.status_code == 200
    page = response.content.decode()
    assert "Cannot change amount." in page
    assert "Duplicate the plan as a new version" in page
    price_in_use.refresh_from_db()
    assert (price_in_use.amount, price_in_use.display_name) == (Decimal("15"), "")


def test_price_in_use_says_what_is_frozen_and_keeps_names_and_metadata_editable(
    admin_client, price_in_use
):
    page = admin_client.get(reverse("admin:catalog_price_change", args=[price_in_use.pk]))
    notice = "Display name, description, lookup key and metadata stay editable."
    assert "its money terms are frozen" in page.content.decode()
    assert notice in page.content.decode()
    plan_page = admin_client.get(reverse("admin:catalog_plan_change", args=[price_in_use.plan_id]))
    assert "their money terms are frozen" in plan_page.content.decode()

    response = price_change(
        admin_client,
        price_in_use,
        display_name="Input tokens",
        description="Per million",
        lookup_key="input-tokens",
        metadata='{"sku": "in"}',
        currency="USD",  # the same currency, typed differently
    )
    assert response.status_code == 302
    price_in_use.refresh_from_db()
    assert (price_in_use.display_name, price_in_use.lookup_key) == ("Input tokens", "input-tokens")
    assert price_in_use.metadata == {"sku": "in"}


def test_only_prices_in_use_are_frozen(admin_client, price_in_use):
    price = PriceFactory(amount=Decimal("15"), meter=price_in_use.meter)
    page = admin_client.get(reverse("admin:catalog_price_change", args=[price.pk]))
    assert "frozen" not in page.content.decode()
    other = MeterFactory()
    changes = {"amount": "16", "currency": "eur", "meter": other.pk, "divide_by": "1000"}
    assert price_change(admin_client, price_in_use, **changes).status_code == 200
    assert price_change(admin_client, price, **changes).status_code == 302
    price.refresh_from_db()
    assert (price.amount, price.currency, price.meter, price.divide_by) == (
        Decimal("16"),
        "eur",
        other,
        1000,
    )
    price_in_use.refresh_from_db()
    assert (price_in_use.amount, price_in_use.currency) == (Decimal("15"), "usd")


def test_tier_changes_on_a_price_in_use_are_refused(admin_client):
    tier = PriceTierFactory(up_to=None, unit_amount=Decimal("2"))
    price = tier.price
    subscribe(price.plan)
    changed = price_change(admin_client, price, **{"tiers-0-unit_amount": "3"})
    added = price_change(
        admin_client,
        price,
        **management("tiers", total=2, initial=1),
        **{"tiers-0-up_to": "10", "tiers-1-unit_amount": "1", "tiers-1-flat_amount": "0"},
    )
    deleted = price_change(admin_client, price, **{"tiers-0-DELETE": "on"})
    for response in (changed, added, deleted):
        assert response.status_code == 200
        assert "Cannot change tiers." in response.content.decode()
    assert [(t.up_to, t.unit_amount) for t in price.tiers.all()] == [(None, Decimal("2"))]


def test_plan_inline_refuses_a_change_to_a_price_in_use_but_adds_new_prices(
    admin_client, price_in_use
):
    plan = price_in_use.plan
    url = reverse("admin:catalog_plan_change", args=[plan.pk])
    response = admin_client.post(
        url, plan_change_post(plan, **{"prices-0-amount": "16", "prices-0-display_name": "Input"})
    )
    assert response.status_code == 200
    assert "Cannot change amount." in response.content.decode()
    price_in_use.refresh_from_db()
    assert (price_in_use.amount, price_in_use.display_name) == (Decimal("15"), "")

    data = plan_change_post(plan, **management("prices", total=2, initial=1))
    data.update(price_row(1, MeterFactory(), "60"))
    assert admin_client.post(url, data).status_code == 302
    assert sorted(p.amount for p in plan.prices.all()) == [Decimal("15"), Decimal("60")]


def test_deleting_a_price_in_use_is_refused_without_a_500(admin_client, price_in_use):
    delete_url = reverse("admin:catalog_price_delete", args=[price_in_use.pk])
    plan_url = reverse("admin:catalog_plan_change", args=[price_in_use.plan_id])
    responses = [
        admin_client.get(delete_url),
        admin_client.post(delete_url, {"post": "yes"}),
        admin_client.post(
            reverse("admin:catalog_price_changelist"),
            {"action": "delete_selected", "_selected_action": [price_in_use.pk], "post": "yes"},
        ),
        admin_client.post(
            plan_url, plan_change_post(price_in_use.plan, **{"prices-0-DELETE": "on"})
        ),
    ]
    for response in responses:
        assert response.status_code == 200
        assert "it cannot be deleted" in response.content.decode()
    plan_delete = reverse("admin:catalog_plan_delete", args=[price_in_use.plan_id])
    assert admin_client.post(plan_delete, {"post": "yes"}).status_code == 200  # Django's own list
    assert Price.objects.filter(pk=price_in_use.pk).exists()


def test_duplicate_as_new_version_copies_prices_and_tiers(admin_client):
    plan = PlanFactory(name="Pro", lookup_key="pro")
    package = PriceFactory(plan=plan, lookup_key="pro-input", free_units=Decimal("100"))
    tiered = PriceTierFactory(
        price__plan=plan, price__tier_mode="SLAB", up_to=Decimal(10), unit_amount=Decimal("2")
    ).price
    PriceTierFactory(price=tiered, up_to=None, unit_amount=Decimal("1.5"), flat_amount=Decimal(5))
    subscribe(plan)

    response = admin_client.post(
        reverse("admin:catalog_plan_changelist"),
        {"action": "duplicate_as_new_version", "_selected_action": [plan.pk]},
        follow=True,
    )
    copy = Plan.objects.get(previous_version=plan)
    link = reverse("admin:catalog_plan_change", args=[copy.pk])
    assert f'Created <a href="{link}">Pro v2</a> from Pro.' in response.content.decode()
    assert (copy.name, copy.lookup_key, copy.version) == ("Pro v2", "pro-v2", 2)

    def priced(p: Plan) -> list:
        return [(pr.meter_id, pr.type, pr.currency, pr.terms()) for pr in p.prices.all()]

    assert priced(copy) == priced(plan)
    assert not {p.pk for p in copy.prices.all()} & {package.pk, tiered.pk}
    assert copy.prices.get(meter=package.meter).lookup_key == "pro-input-v2"

    copied = copy.prices.get(meter=tiered.meter)
    response = price_change(
        admin_client, copied, tier_mode="VOLUME", **{"tiers-1-flat_amount": "7"}
    )
    assert response.status_code == 302
    assert copied.terms().tiers[1].flat_amount == Decimal(7)
    assert tiered.terms().tiers[1].flat_amount == Decimal(5)


def test_duplicating_a_plan_another_copy_races_is_a_message_not_an_error_page(
    admin_client, monkeypatch
):
    from django.db import IntegrityError

    from catalog import admin as catalog_admin

    plan = PlanFactory(name="Pro", lookup_key="pro")

    def raced(*, plan):
        raise IntegrityError("duplicate key value violates unique constraint")

    monkeypatch.setattr(catalog_admin, "plan_version_create", raced)
    response = admin_client.post(
        reverse("admin:catalog_plan_changelist"),
        {"action": "duplicate_as_new_version", "_selected_action": [plan.pk]},
        follow=True,
    )
    assert response.status_code == 200
    assert "Pro was being copied at the same time; try again." in response.content.decode()


# Labels: meters and prices read apart


def o1_meter(prompt_type: str, **kwargs) -> Meter:
    return MeterFactory(
        feature__name=f"{prompt_type.title()} Tokens",
        filters=[
            {"key": "model", "values": ["OpenAI O1"]},
            {"key": "prompt_type", "values": [prompt_type]},
        ],
        rollups=False,
        **kwargs,
    )


def test_meter_reads_as_its_feature_aggregation_and_filters():
    assert str(o1_meter("input")) == (
        "Input Tokens · SUM(tokens) where model=OpenAI O1, prompt_type=input"
    )
    several = MeterFactory(
        name="Chat",
        aggregation="COUNT",
        field="",
        filters=[{"key": "model", "values": ["a", "b"]}],
        rollups=False,
    )
    assert str(several) == "Chat · COUNT where model=a or b"


def test_price_reads_as_its_name_and_terms():
    meter = o1_meter("input")
    price = PriceFactory(meter=meter, amount=Decimal("15.000000000000"))
    assert str(price) == "Input Tokens · $15.00 per 1,000,000 tokens"
    named = PriceFactory(meter=meter, amount=Decimal("7.5"), display_name="Cached input")
    assert str(named) == "Cached input · $7.50 per 1,000,000 tokens"
    fixed = PriceFactory(
        meter=None, type="FIXED", billing_model="FLAT_FEE", amount=Decimal(20), divide_by=None
    )
    assert str(fixed) == "Fixed fee · $20.00 per period"
    tier = PriceTierFactory(up_to=Decimal("1000000.000000000000"))
    assert str(tier) == "up to 1,000,000"


def test_feature_list_and_meter_picker_tell_meters_apart(admin_client):
    for prompt_type in ("input", "output", "cached_input"):
        o1_meter(prompt_type)
    features = admin_client.get(reverse("admin:catalog_feature_changelist")).content.decode()
    assert "tokens · SUM(tokens) where model=OpenAI O1, prompt_type=cached_input" in features

    def picker(term: str) -> list[str]:
        response = admin_client.get(
            reverse("admin:autocomplete"),
            {"app_label": "catalog", "model_name": "price", "field_name": "meter", "term": term},
        )
        assert response.status_code == 200
        return [r["text"] for r in response.json()["results"]]

    listed = picker("tokens")
    assert len(set(listed)) == 3
    # By filter value, by feature name, and both at once.
    assert picker("cached_input") == [
        "Cached_Input Tokens · SUM(tokens) where model=OpenAI O1, prompt_type=cached_input"
    ]
    assert picker("output tokens") == [
        "Output Tokens · SUM(tokens) where model=OpenAI O1, prompt_type=output"
    ]
    assert len(picker("OpenAI O1")) == 3


def test_price_list_shows_labels_amounts_and_transforms_as_written(admin_client):
    PriceFactory(meter=o1_meter("input"), amount=Decimal("3"), free_units=Decimal(1000))
    page = admin_client.get(reverse("admin:catalog_price_changelist")).content.decode()
    assert "Input Tokens · $3.00 per 1,000,000 tokens" in page
    assert "÷ 1,000,000 (up), 1,000 free" in page
    assert ">$3.00<" in page
    assert "3.000000000000" not in page and "E-12" not in page


# Decimals as people write them, on every catalog page


def test_no_raw_decimals_on_catalog_pages(admin_client):
    meter = o1_meter("input", aggregation="SUM_WITH_MULTIPLIER", multiplier=Decimal("1.5"))
    price = PriceFactory(meter=meter, amount=Decimal("3"), free_units=Decimal(0))
    tiered = PriceFactory(meter=meter, billing_model="TIERED", divide_by=None)
    PriceTierFactory(price=tiered, up_to=Decimal(1_000_000), unit_amount=Decimal("0.000015"))
    PriceTierFactory(price=tiered, up_to=None, unit_amount=Decimal("0.00001"))
    pages = {
        "feature list": reverse("admin:catalog_feature_changelist"),
        "feature": reverse("admin:catalog_feature_change", args=[meter.feature_id]),
        "meter list": reverse("admin:catalog_meter_changelist"),
        "meter": reverse("admin:catalog_meter_change", args=[meter.pk]),
        "plan list": reverse("admin:catalog_plan_changelist"),
        "plan": reverse("admin:catalog_plan_change", args=[price.plan_id]),
        "price list": reverse("admin:catalog_price_changelist"),
        "price": reverse("admin:catalog_price_change", args=[price.pk]),
        "tiered price": reverse("admin:catalog_price_change", args=[tiered.pk]),
    }
    for name, url in pages.items():
        html = admin_client.get(url).content.decode()
        assert ".000000000000" not in html and "E-12" not in html, name
    meter_page = admin_client.get(pages["meter"]).content.decode()
    assert "1.5" in meter_page and "model=OpenAI O1, prompt_type=input" in meter_page
    tiers = admin_client.get(pages["tiered price"]).content.decode()
    assert 'value="1000000"' in tiers and 'value="0.000015"' in tiers


# Help texts


@pytest.mark.parametrize(
    ("url", "texts"),
    [
        (
            "admin:catalog_feature_add",
            [
                "stable name your code can use for this feature",
                "multiplied by this before it is added up",
                "usage starts again from zero every billing period",
                "keeps adding up from the start of the subscription",
            ],
        ),
        ("admin:catalog_plan_add", ["stable name your code can use for this plan"]),
        ("admin:catalog_price_add", ["stable name your code can use for this price"]),
        ("admin:metering_customer_add", ["sends it with every usage event"]),
    ],
)
def test_operator_fields_explain_themselves(admin_client, url, texts):
    html = admin_client.get(reverse(url)).content.decode()
    for text in texts:
        assert text in html


# Parts shown only where they apply


def tier_forms(admin_client, url) -> int:
    form = admin_client.get(url).context["inline_admin_formsets"][0].formset
    assert form.prefix == "tiers"
    return form.total_form_count()


def test_package_prices_get_no_empty_tier_rows(admin_client):
    package = PriceFactory()
    tiered = PriceTierFactory(up_to=None).price
    tiered.billing_model, tiered.divide_by = "TIERED", None
    tiered.save()
    change = "admin:catalog_price_change"
    assert tier_forms(admin_client, reverse(change, args=[package.pk])) == 0
    assert tier_forms(admin_client, reverse(change, args=[tiered.pk])) == 2  # its tier + 1
    # The add page keeps two rows, hidden by the script until TIERED is picked.
    assert tier_forms(admin_client, reverse("admin:catalog_price_add")) == 2
    html = admin_client.get(reverse(change, args=[package.pk])).content.decode()
    assert "tally-package" in html and "tally-tiered" in html


def test_plan_page_links_to_a_price_add_page_for_it_that_returns_to_the_plan(admin_client):
    plan, meter = PlanFactory(), MeterFactory()
    add_url = f"{reverse('admin:catalog_price_add')}?plan={plan.pk}"
    plan_page = admin_client.get(reverse("admin:catalog_plan_change", args=[plan.pk]))
    assert f'href="{add_url}"' in plan_page.content.decode().replace("&amp;", "&")
    form = admin_client.get(add_url).context["adminform"].form
    assert form.initial["plan"] == plan.pk

    data = tiered_price_post(plan, meter, [("10", "50", "0"), ("", "30", "0")])
    response = admin_client.post(add_url, data)
    assert response.status_code == 302
    assert response["Location"] == reverse("admin:catalog_plan_change", args=[plan.pk])
    assert plan.prices.get().tiers.count() == 2


def test_plan_inline_refusal_of_a_new_tiered_price_says_where_to_add_it(admin_client):
    meter = MeterFactory()
    data = {
        "name": "P",
        "lookup_key": "p",
        "description": "",
        "active": "on",
        "metadata": "{}",
        **management("prices", total=1),
        **management("credit_grants", total=0),  # billing's inline on the plan form
        **management("entitlements", total=0),
        **price_row(0, meter, "15"),
        "prices-0-billing_model": "TIERED",
    }
    response = admin_client.post(reverse("admin:catalog_plan_add"), data)
    assert response.status_code == 200
    assert "Add a price to this plan" in response.content.decode()
    assert not Plan.objects.exists()
