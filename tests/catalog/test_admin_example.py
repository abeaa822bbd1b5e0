"""The price form's live worked example: the admin endpoint that works it out from unsaved
form values, with the same pricing code that bills invoices."""

from decimal import Decimal

import pytest
from django.contrib.auth import get_user_model
from django.urls import reverse

from billing.models import Invoice
from catalog.forms import TIERED_FROM_PRICE_PAGE
from catalog.money import format_money
from tests.factories import MeterFactory, PriceFactory, PriceTierFactory

pytestmark = pytest.mark.django_db
URL = "admin:catalog_price_example"


def package(**changes) -> dict:
    """The Price page's fields for $3 per million tokens, rounded up."""
    return {
        "type": "USAGE",
        "billing_model": "PACKAGE",
        "amount": "3",
        "currency": "usd",
        "divide_by": "1000000",
        "round": "up",
        "free_units": "0",
        "tier_mode": "VOLUME",
        "meter": MeterFactory(rollups=False).pk,
        "example_quantity": "3700000",
        **changes,
    }


def tiered(mode: str, tiers: list[tuple[str, str, str]], **changes) -> dict:
    data = package(billing_model="TIERED", tier_mode=mode, amount="0", divide_by="", **changes)
    data.update({"tiers-TOTAL_FORMS": str(len(tiers)), "tiers-INITIAL_FORMS": "0"})
    for index, (up_to, unit, flat) in enumerate(tiers):
        data.update(
            {
                f"tiers-{index}-up_to": up_to,
                f"tiers-{index}-unit_amount": unit,
                f"tiers-{index}-flat_amount": flat,
            }
        )
    return data


def example(client, data) -> str:
    response = client.get(reverse(URL), data)
    assert response.status_code == 200
    return response.content.decode()


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        (
            {},
            "3,700,000 tokens → 4 packages × $3.00 = $12.00, "
            "rounded up from 3.7 packages of 1,000,000",
        ),
        (
            {"round": "down"},
            "3,700,000 tokens → 3 packages × $3.00 = $9.00, "
            "rounded down from 3.7 packages of 1,000,000",
        ),
        (
            {"example_quantity": "3000000"},
            "3,000,000 tokens → 3 packages × $3.00 = $9.00 (packages of 1,000,000)",
        ),
        (
            {"round": "none", "example_quantity": "1234567"},
            "1,234,567 tokens → 1.234567 packages × $3.00 = $3.703701, $3.70 on the invoice "
            "(pro rata: packages of 1,000,000, not rounded)",
        ),
        (
            {"free_units": "1000000", "example_quantity": "4700000"},
            "4,700,000 tokens − 1,000,000 free = 3,700,000 → 4 packages × $3.00 = $12.00, "
            "rounded up from 3.7 packages of 1,000,000",
        ),
        (
            {"free_units": "1000000", "example_quantity": "999999"},
            "999,999 tokens, all within the 1,000,000 free → $0.00",
        ),
        ({"example_quantity": "0"}, "0 tokens → $0.00 (no usage, no charge)"),
        ({"example_quantity": "1", "round": "down"}, "1 token → 0 packages × $3.00 = $0.00"),
        ({"billing_model": "FLAT_FEE", "amount": "0.002"}, "3,700,000 tokens × $0.002 = $7,400.00"),
        (
            {"type": "FIXED", "billing_model": "FLAT_FEE", "amount": "20", "meter": ""},
            "$20.00 each billing period",
        ),
    ],
)
def test_package_and_flat_examples_spell_out_the_arithmetic(admin_client, changes, expected):
    assert expected in example(admin_client, package(**changes))


def test_example_quantity_left_blank_is_three_point_seven_packages(admin_client):
    page = example(admin_client, package(example_quantity="", free_units="500"))
    assert "3,700,500 tokens − 500 free = 3,700,000 → 4 packages × $3.00 = $12.00" in page


TIERS = [("1000", "0.05", "0"), ("5000", "0.04", "10"), ("", "0.03", "0")]


def test_graduated_example_fills_each_tier_in_order(admin_client):
    page = example(admin_client, tiered("SLAB", TIERS, example_quantity="2500"))
    # 1,000 × 0.05 + (1,500 × 0.04 + 10 flat) = 50 + 70
    assert (
        "2,500 tokens → 1,000 × $0.05 (tier 1) + 1,500 × $0.04 + $10.00 flat (tier 2) = $120.00"
        in page
    )


def test_volume_example_prices_everything_at_the_tier_it_lands_in(admin_client):
    page = example(admin_client, tiered("VOLUME", TIERS, example_quantity="2500"))
    assert (
        "2,500 tokens → 2,500 × $0.04 + $10.00 flat "
        "(all in tier 2, above 1,000 up to 5,000) = $110.00" in page
    )
    page = example(admin_client, tiered("VOLUME", TIERS, example_quantity=""))
    assert "10,000 tokens → 10,000 × $0.03 (all in tier 3, above 5,000) = $300.00" in page


def test_deleted_and_untouched_extra_tier_rows_are_left_out(admin_client):
    data = tiered("VOLUME", [*TIERS, ("", "0", "0")], example_quantity="500")
    data.update({"tiers-INITIAL_FORMS": "3", "tiers-1-DELETE": "on"})
    # Tier 2 deleted, the empty extra row ignored: 500 lands in tier 1.
    assert "500 tokens → 500 × $0.05 (all in tier 1, up to 1,000) = $25.00" in example(
        admin_client, data
    )


@pytest.mark.parametrize(
    ("changes", "reason"),
    [
        ({"amount": "three"}, "Amount: Enter a number."),
        ({"amount": ""}, "Amount: This field is required."),
        ({"amount": "-1"}, "The amount must be 0 or more."),
        ({"divide_by": ""}, "A PACKAGE price needs transform_quantity.divide_by."),
        ({"divide_by": "0"}, "divide_by must be 1 or more."),
        ({"currency": "d$"}, "Use a three-letter ISO 4217 code, such as usd."),
        ({"free_units": "-5"}, "Free units must be 0 or more."),
        ({"example_quantity": "lots"}, "Example quantity: Enter a number."),
        ({"example_quantity": "-1"}, "Example quantity: Ensure this value is greater than"),
        ({"example_quantity": "1e400"}, "Example quantity: Ensure that there are no more than"),
        ({"billing_model": "MAGIC"}, "Billing model: Select a valid choice."),
        ({"meter": "nope"}, "Meter: Select a valid choice."),
        (
            {"billing_model": "FLAT_FEE", "amount": "9" * 16, "example_quantity": "9" * 16},
            "too large to work out",
        ),
    ],
)
def test_bad_input_shows_the_reason_instead_of_an_example(admin_client, changes, reason):
    page = example(admin_client, package(**changes))
    assert reason in page
    assert "errornote" in page and "→" not in page


@pytest.mark.parametrize(
    ("tiers", "reason"),
    [
        ([("10", "1", "0"), ("5", "1", "0"), ("", "1", "0")], "must be greater than 10"),
        ([("10", "1", "0")], "the last tier must be open"),
        ([("ten", "1", "0"), ("", "1", "0")], "Up to: Enter a number."),
        ([], "needs at least one tier"),
    ],
)
def test_bad_tiers_show_the_reason(admin_client, tiers, reason):
    page = example(admin_client, tiered("SLAB", tiers))
    assert reason in page and "→" not in page


def test_tier_rows_on_a_package_price_are_refused_as_on_save(admin_client):
    data = {**tiered("VOLUME", TIERS), "billing_model": "PACKAGE", "divide_by": "1000000"}
    assert "Only a TIERED price has tiers." in example(admin_client, data)


def plan_row(prefix: str, data: dict) -> dict:
    return {f"{prefix}-{k}" if k != "example_quantity" else k: v for k, v in data.items()}


def test_plan_inline_row_is_read_by_its_prefix(admin_client):
    data = plan_row("prices-1", package(amount="15"))
    page = example(admin_client, {**data, "prefix": "prices-1"})
    assert "4 packages × $15.00 = $60.00" in page


def test_plan_inline_uses_a_saved_tiered_prices_stored_tiers(admin_client):
    tier = PriceTierFactory(up_to=None, unit_amount=Decimal("2"))
    price = tier.price
    price.billing_model, price.divide_by = "TIERED", None
    price.save()
    data = plan_row("prices-0", package(billing_model="TIERED", id=price.pk, example_quantity="7"))
    page = example(admin_client, {**data, "prefix": "prices-0"})
    assert "7 tokens → 7 × $2.00 (all in tier 1, every unit) = $14.00" in page


def test_plan_inline_new_tiered_row_says_where_tiers_are_added(admin_client):
    data = plan_row("prices-0", package(billing_model="TIERED"))
    page = example(admin_client, {**data, "prefix": "prices-0"})
    assert TIERED_FROM_PRICE_PAGE.replace('"', "&quot;").replace("'", "&#x27;") in page


def test_example_names_the_amount_the_invoice_bills(admin_client, o1_subscriptions):
    """The example and the invoice share the pricing engine: for the quantity on acme's
    input-token line, the example arrives at that line's amount."""
    invoice = Invoice.objects.get(subscription=o1_subscriptions["acme"])
    line = invoice.line_items.select_related("price__meter").get(display_name="Input Tokens")
    price = line.price
    data = package(
        amount=str(price.amount),
        divide_by=str(price.divide_by),
        round=price.round,
        meter=price.meter_id,
        example_quantity=str(line.quantity),
    )
    assert f"= {format_money(line.amount, line.currency)}" in example(admin_client, data)


def test_only_staff_with_price_permissions_get_an_example(client):
    user_model = get_user_model()
    response = client.get(reverse(URL), package())
    assert response.status_code == 302 and "/admin/login/" in response["Location"]
    client.force_login(user_model.objects.create_user("clerk", password="x", is_staff=True))
    assert client.get(reverse(URL), package()).status_code == 403


def test_example_endpoint_answers_get_only(admin_client):
    assert admin_client.post(reverse(URL), package()).status_code == 405


def test_saved_price_page_renders_the_live_example_box(admin_client):
    price = PriceFactory(amount=Decimal("3"))
    page = admin_client.get(reverse("admin:catalog_price_change", args=[price.pk]))
    html = page.content.decode()
    assert f'hx-get="{reverse(URL)}"' in html and 'name="example_quantity"' in html
    assert "htmx-2.min.js" in html and "catalog/admin.js" in html
    assert "3,700,000 tokens → 4 packages × $3.00 = $12.00" in html


def test_unsaved_price_asks_for_terms_instead_of_a_zero_example(admin_client):
    html = admin_client.get(reverse("admin:catalog_price_add")).content.decode()
    assert "Type the amount and terms to see a worked example." in html
    assert "→ $0.00" not in html
