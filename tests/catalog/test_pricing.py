"""The pricing engine against every case in shared/scenarios/pricing_cases.json, plus properties."""

from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from catalog import pricing
from catalog.money import round_money, total_of_lines
from catalog.pricing import Terms, Tier, amount_for
from tests.conftest import load_scenario, scenario_or_none

# Collected from the reference file when it is here; test_the_reference_cases_are_here says
# when it is not, and the property tests below run either way.
CASES = scenario_or_none("pricing_cases.json") or {
    "package": [],
    "package_exact_proration": {"amount": "0", "divide_by": 1, "cases": []},
    "tiered": [],
    "currency_rounding": {"cases": []},
}


def test_the_reference_cases_are_here():
    assert load_scenario("pricing_cases.json")["package"]


def _package_cases():
    for group in CASES["package"]:
        terms = Terms(
            billing_model=pricing.PACKAGE,
            amount=Decimal(group["amount"]),
            divide_by=group["divide_by"],
            round=group["round"],
            free_units=Decimal(group.get("free_units", 0)),
        )
        for quantity, expected in group["cases"]:
            yield pytest.param(
                terms, Decimal(quantity), Decimal(expected), id=f"{terms}-{quantity}"
            )


def _proration_cases():
    group = CASES["package_exact_proration"]
    terms = Terms(
        billing_model=pricing.PACKAGE,
        amount=Decimal(group["amount"]),
        divide_by=group["divide_by"],
        round=pricing.ROUND_NONE,
    )
    for quantity, expected in group["cases"]:
        yield pytest.param(terms, Decimal(quantity), Decimal(expected), id=f"none-{quantity}")


def _tiers(group) -> tuple[Tier, ...]:
    return tuple(
        Tier(
            up_to=None if t["up_to"] is None else Decimal(t["up_to"]),
            unit_amount=Decimal(t["unit_amount"]),
            flat_amount=Decimal(t.get("flat_amount", "0")),
        )
        for t in group["tiers"]
    )


def _tiered_cases():
    for number, group in enumerate(CASES["tiered"]):
        for mode in (pricing.VOLUME, pricing.SLAB):
            terms = Terms(billing_model=pricing.TIERED, tier_mode=mode, tiers=_tiers(group))
            for quantity, expected in group.get(mode, []):
                yield pytest.param(
                    terms,
                    Decimal(quantity),
                    Decimal(expected),
                    id=f"tiers{number}-{mode}-{quantity}",
                )


@pytest.mark.parametrize(("terms", "quantity", "expected"), list(_package_cases()))
def test_package_price_matches_documented_cases(terms, quantity, expected):
    assert amount_for(terms, quantity) == expected


@pytest.mark.parametrize(("terms", "quantity", "expected"), list(_proration_cases()))
def test_package_price_with_round_none_charges_pro_rata(terms, quantity, expected):
    assert amount_for(terms, quantity) == expected


@pytest.mark.parametrize(("terms", "quantity", "expected"), list(_tiered_cases()))
def test_tiered_price_matches_documented_cases(terms, quantity, expected):
    assert amount_for(terms, quantity) == expected


def test_tier_up_to_is_inclusive():
    tiers = (
        Tier(up_to=Decimal(1000), unit_amount=Decimal(1)),
        Tier(up_to=None, unit_amount=Decimal(2)),
    )
    volume = Terms(billing_model=pricing.TIERED, tier_mode=pricing.VOLUME, tiers=tiers)
    assert amount_for(volume, Decimal(1000)) == Decimal(1000)
    assert amount_for(volume, Decimal("1000.001")) == Decimal("2000.002")
    slab = Terms(billing_model=pricing.TIERED, tier_mode=pricing.SLAB, tiers=tiers)
    assert amount_for(slab, Decimal("1000.001")) == Decimal("1000.002")


@pytest.mark.parametrize(
    ("case"), CASES["currency_rounding"]["cases"], ids=lambda c: f"{c['currency']}-{c['total']}"
)
def test_invoice_total_is_sum_of_lines_rounded_per_currency(case):
    lines = [Decimal(line) for line in case["lines"]]
    assert total_of_lines(lines, case["currency"]) == Decimal(case["total"])


def test_flat_fee_charges_amount_per_unit():
    terms = Terms(billing_model=pricing.FLAT_FEE, amount=Decimal("0.25"))
    assert amount_for(terms, Decimal(3)) == Decimal("0.75")
    assert amount_for(terms, Decimal(0)) == Decimal(0)


def test_zero_usage_costs_nothing_in_every_model():
    tiers = (
        Tier(up_to=Decimal(5), unit_amount=Decimal(1), flat_amount=Decimal(100)),
        Tier(up_to=None, unit_amount=Decimal(1)),
    )
    for terms in [
        Terms(billing_model=pricing.PACKAGE, amount=Decimal(15), divide_by=10),
        Terms(billing_model=pricing.TIERED, tier_mode=pricing.VOLUME, tiers=tiers),
        Terms(billing_model=pricing.TIERED, tier_mode=pricing.SLAB, tiers=tiers),
    ]:
        assert amount_for(terms, Decimal(0)) == 0


def test_packages_for_reports_whole_packages_after_free_units():
    terms = Terms(
        billing_model=pricing.PACKAGE, amount=Decimal(100), divide_by=10, free_units=Decimal(5)
    )
    assert pricing.packages_for(terms, Decimal(16)) == 2


# Properties -----------------------------------------------------------------------------

quantities = st.decimals(min_value=0, max_value=10**12, places=3, allow_nan=False)
money = st.decimals(min_value=0, max_value=10**4, places=6, allow_nan=False)


@st.composite
def package_terms(draw):
    return Terms(
        billing_model=pricing.PACKAGE,
        amount=draw(money),
        divide_by=draw(st.integers(min_value=1, max_value=10**7)),
        round=draw(st.sampled_from([pricing.ROUND_UP, pricing.ROUND_DOWN, pricing.ROUND_NONE])),
        free_units=draw(st.decimals(min_value=0, max_value=10**6, places=0)),
    )


@st.composite
def tier_sets(draw):
    bounds = sorted(draw(st.sets(st.integers(min_value=1, max_value=10**6), max_size=4)))
    tiers = [
        Tier(up_to=Decimal(b), unit_amount=draw(money), flat_amount=draw(money)) for b in bounds
    ]
    tiers.append(Tier(up_to=None, unit_amount=draw(money), flat_amount=draw(money)))
    return tuple(tiers)


@given(terms=package_terms(), a=quantities, b=quantities)
def test_package_amount_never_decreases_as_usage_grows(terms, a, b):
    low, high = sorted([a, b])
    assert amount_for(terms, low) <= amount_for(terms, high)


@given(tiers=tier_sets(), a=quantities, b=quantities)
def test_slab_amount_never_decreases_as_usage_grows(tiers, a, b):
    terms = Terms(billing_model=pricing.TIERED, tier_mode=pricing.SLAB, tiers=tiers)
    low, high = sorted([a, b])
    assert amount_for(terms, low) <= amount_for(terms, high)


@given(
    terms=st.one_of(
        package_terms(),
        tier_sets().map(
            lambda t: Terms(billing_model=pricing.TIERED, tier_mode=pricing.SLAB, tiers=t)
        ),
        tier_sets().map(
            lambda t: Terms(billing_model=pricing.TIERED, tier_mode=pricing.VOLUME, tiers=t)
        ),
        money.map(lambda a: Terms(billing_model=pricing.FLAT_FEE, amount=a)),
    ),
    quantity=quantities,
)
def test_a_line_is_never_negative(terms, quantity):
    assert amount_for(terms, quantity) >= 0


@given(
    lines=st.lists(st.decimals(min_value=0, max_value=10**9, places=9), max_size=20),
    currency=st.sampled_from(["usd", "jpy", "kwd", "eur"]),
)
def test_rounded_total_equals_sum_of_rounded_lines(lines, currency):
    total = total_of_lines(lines, currency)
    assert total == sum(round_money(line, currency) for line in lines)
    assert total == round_money(total, currency)
