"""An operator builds a second model's pricing from scratch in the admin, in Chromium."""

from decimal import Decimal

import pytest
from django.contrib.auth import get_user_model
from playwright.sync_api import expect

from catalog.models import Plan

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]
EXAMPLE = "[data-testid=worked-example]"


@pytest.fixture
def staff(db):
    return get_user_model().objects.create_superuser("operator", "op@example.com", "op-secret")


def sign_in(page, live_server):
    page.goto(f"{live_server.url}/admin/")
    page.fill("#id_username", "operator")
    page.fill("#id_password", "op-secret")
    page.get_by_role("button", name="Log in").click()
    expect(page).to_have_url(f"{live_server.url}/admin/")


def fill_feature(page, name, prompt_type):
    page.fill("#id_name", name)
    page.fill("#id_unit_singular", "token")
    page.fill("#id_unit_plural", "tokens")
    page.fill("#id_meter-0-event_name", "tokens")
    page.fill("#id_meter-0-field", "tokens")
    page.fill("#id_meter-0-filters", f"model: Claude Sonnet\nprompt_type: {prompt_type}")


def pick_meter(page, row, search, label):
    """The meter picker is an autocomplete: type, see the labels, pick one."""
    row.locator(".field-meter .select2-selection").click()
    page.locator(".select2-search__field").fill(search)
    option = page.locator(".select2-results__option", has_text=label)
    expect(option).to_have_count(1)
    option.click()


def test_operator_builds_a_two_price_plan_with_a_live_worked_example(page, live_server, staff):
    loads = []
    # Counted when a page commits, which is before any of its text can be seen; a "load"
    # event may still be on its way when the next assertion passes.
    page.on("framenavigated", lambda frame: frame == page.main_frame and loads.append(frame.url))
    sign_in(page, live_server)

    # Two metered features, each with its meter; the meter box only shows for metered ones.
    page.locator('a.addlink[href$="/catalog/feature/add/"]').click()
    meter_box = page.locator("#meter-group")
    page.select_option("#id_type", "boolean")
    expect(meter_box).to_be_hidden()
    page.select_option("#id_type", "metered")
    expect(meter_box).to_be_visible()
    fill_feature(page, "Sonnet Input Tokens", "input")
    expect(page.locator("#id_lookup_key")).to_have_value("sonnet-input-tokens")
    page.get_by_role("button", name="Save and add another").click()
    fill_feature(page, "Sonnet Output Tokens", "output")
    page.get_by_role("button", name="Save", exact=True).click()
    expect(page.get_by_text("Sonnet Output Tokens")).to_have_count(2)  # the message and the row

    # The plan, with both prices added inline.
    page.locator('a.addlink[href$="/catalog/plan/add/"]').click()
    page.fill("#id_name", "Claude Sonnet")
    page.fill("#id_lookup_key", "claude-sonnet")

    page.locator("#prices-group .add-row a").click()
    first = page.locator("#prices-0")
    # Both meters count "tokens"; their labels tell input from output.
    first.locator(".field-meter .select2-selection").click()
    page.locator(".select2-search__field").fill("tokens")
    options = page.locator(".select2-results__option")
    expect(options).to_have_text(
        [
            "Sonnet Input Tokens · SUM(tokens) where model=Claude Sonnet, prompt_type=input",
            "Sonnet Output Tokens · SUM(tokens) where model=Claude Sonnet, prompt_type=output",
        ]
    )
    page.keyboard.press("Escape")
    pick_meter(page, first, "sonnet input", "prompt_type=input")
    expect(first.locator(".form-row.field-divide_by")).to_be_visible()  # PACKAGE terms
    first.locator('[name$="-amount"]').fill("3")
    first.locator('[name$="-divide_by"]').fill("1000000")
    first.locator("[name=example_quantity]").fill("3700000")
    example = first.locator(EXAMPLE)
    expect(example).to_contain_text(
        "3,700,000 tokens → 4 packages × $3.00 = $12.00, rounded up from 3.7 packages"
    )
    first.locator("[name=example_quantity]").fill("2000000")
    expect(example).to_contain_text("2,000,000 tokens → 2 packages × $3.00 = $6.00")
    first.locator('[name$="-round"]').select_option("down")
    first.locator("[name=example_quantity]").fill("3700000")
    expect(example).to_contain_text("3 packages × $3.00 = $9.00, rounded down")
    first.locator('[name$="-round"]').select_option("up")
    expect(example).to_contain_text("4 packages × $3.00 = $12.00, rounded up")
    first.locator('[name$="-divide_by"]').fill("")
    expect(example).to_contain_text("A PACKAGE price needs transform_quantity.divide_by.")
    first.locator('[name$="-divide_by"]').fill("1000000")
    expect(example).to_contain_text("4 packages × $3.00 = $12.00")

    page.locator("#prices-group .add-row a").click()
    second = page.locator("#prices-1")
    pick_meter(page, second, "sonnet output", "prompt_type=output")
    second.locator('[name$="-amount"]').fill("15")
    second.locator('[name$="-divide_by"]').fill("1000000")
    # Left blank, the example quantity is 3.7 packages' worth.
    expect(second.locator(EXAMPLE)).to_contain_text(
        "3,700,000 tokens → 4 packages × $15.00 = $60.00, rounded up"
    )
    second.locator('[name$="-billing_model"]').select_option("FLAT_FEE")
    expect(second.locator(".form-row.field-divide_by")).to_be_hidden()
    second.locator('[name$="-billing_model"]').select_option("PACKAGE")
    page.get_by_role("button", name="Save", exact=True).click()
    expect(page.get_by_text("was added successfully")).to_be_visible()
    build_loads = len(loads)

    plan = Plan.objects.get(lookup_key="claude-sonnet")
    prices = {p.meter.feature.name: p for p in plan.prices.select_related("meter__feature")}
    assert {name: p.amount for name, p in prices.items()} == {
        "Sonnet Input Tokens": Decimal(3),
        "Sonnet Output Tokens": Decimal(15),
    }
    for price in prices.values():
        assert (price.billing_model, price.divide_by, price.round) == ("PACKAGE", 1_000_000, "up")

    # A PACKAGE price shows no tier rows; picking TIERED shows them.
    page.goto(f"{live_server.url}/admin/catalog/price/{prices['Sonnet Input Tokens'].pk}/change/")
    expect(page.locator("#tiers-group")).to_be_hidden()
    expect(page.locator("#tiers-group tr.form-row:not(.empty-form)")).to_have_count(0)
    expect(page.locator(EXAMPLE)).to_contain_text("4 packages × $3.00 = $12.00")
    page.select_option("#id_billing_model", "TIERED")
    expect(page.locator("#tiers-group")).to_be_visible()
    expect(page.locator("fieldset.tally-package")).to_be_hidden()

    print(f"\npage loads to build the plan: {build_loads}: {loads[:build_loads]}")
    # Sign-in 2; features 3 (add, add another, saved); plan 2 (add, saved).
    assert build_loads == 7


def test_tiered_price_added_from_its_plan_with_a_live_tiered_example(page, live_server, staff):
    from tests.factories import MeterFactory, PlanFactory

    plan = PlanFactory(name="Claude Sonnet")
    MeterFactory(feature__name="Sonnet Input Tokens", rollups=False)
    sign_in(page, live_server)
    page.goto(f"{live_server.url}/admin/catalog/plan/{plan.pk}/change/")
    page.get_by_role("link", name="Add a price to this plan").click()
    expect(page.locator("#select2-id_plan-container")).to_have_text("Claude Sonnet")
    # PACKAGE by default: no tier rows, no tier mode.
    expect(page.locator("#tiers-group")).to_be_hidden()
    expect(page.locator("fieldset.tally-tiered")).to_be_hidden()

    page.locator(".field-meter .select2-selection").click()
    page.locator(".select2-search__field").fill("sonnet")
    page.locator(".select2-results__option", has_text="Sonnet Input Tokens").click()
    page.select_option("#id_billing_model", "TIERED")
    expect(page.locator("#tiers-group")).to_be_visible()
    expect(page.locator("fieldset.tally-package")).to_be_hidden()
    page.select_option("#id_tier_mode", "SLAB")
    page.fill("#id_tiers-0-up_to", "1000")
    page.fill("#id_tiers-0-unit_amount", "0.05")
    page.fill("#id_tiers-1-unit_amount", "0.04")
    example = page.locator(EXAMPLE)
    page.fill("[name=example_quantity]", "2500")
    expect(example).to_contain_text(
        "2,500 tokens → 1,000 × $0.05 (tier 1) + 1,500 × $0.04 (tier 2) = $110.00"
    )
    page.select_option("#id_tier_mode", "VOLUME")
    expect(example).to_contain_text("2,500 × $0.04 (all in tier 2, above 1,000) = $100.00")
    page.fill("#id_tiers-0-up_to", "")
    expect(example).to_contain_text("Tier 1: only the last tier may be open")
    page.fill("#id_tiers-0-up_to", "1000")
    expect(example).to_contain_text("= $100.00")

    page.get_by_role("button", name="Save", exact=True).click()
    expect(page).to_have_url(f"{live_server.url}/admin/catalog/plan/{plan.pk}/change/")
    price = plan.prices.get()
    assert [(t.up_to, t.unit_amount) for t in price.tiers.all()] == [
        (Decimal(1000), Decimal("0.05")),
        (None, Decimal("0.04")),
    ]
