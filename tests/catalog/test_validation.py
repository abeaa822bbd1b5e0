from decimal import Decimal
from types import SimpleNamespace

import pytest
from django.core.exceptions import NON_FIELD_ERRORS, ValidationError

from catalog import pricing
from catalog.pricing import Tier
from catalog.validation import (
    price_changes_refused,
    validate_meter,
    validate_price,
    validate_price_change,
    validate_price_delete,
    validate_tiers,
)

GOOD_PRICE = {
    "type": "USAGE",
    "billing_model": "PACKAGE",
    "amount": Decimal("15"),
    "currency": "usd",
    "has_meter": True,
    "divide_by": 1_000_000,
    "free_units": Decimal(0),
}


def _errors(call, **kwargs) -> dict:
    with pytest.raises(ValidationError) as info:
        call(**kwargs)
    return info.value.message_dict


def test_a_good_package_price_passes():
    validate_price(**GOOD_PRICE)


@pytest.mark.parametrize(
    ("change", "field", "reason"),
    [
        ({"amount": Decimal("-0.01")}, "amount", "0 or more"),
        ({"free_units": Decimal(-1)}, "free_units", "0 or more"),
        ({"divide_by": 0}, "divide_by", "1 or more"),
        ({"divide_by": None}, "divide_by", "needs transform_quantity"),
        ({"has_meter": False}, "meter", "needs a meter"),
        ({"currency": "dollars"}, "currency", "ISO 4217"),
        ({"type": "FIXED", "has_meter": False}, "billing_model", "FLAT_FEE"),
        ({"type": "FIXED", "billing_model": "FLAT_FEE"}, "meter", "has no meter"),
        ({"billing_period_count": 0}, "billing_period_count", "1 or more"),
        ({"invoice_cadence": "ADVANCE"}, "invoice_cadence", "always billed in arrears"),
    ],
)
def test_price_rejection_names_field_and_reason(change, field, reason):
    errors = _errors(validate_price, **{**GOOD_PRICE, **change})
    assert reason in " ".join(errors[field])


def test_only_a_fixed_price_may_be_billed_in_advance():
    fixed = {**GOOD_PRICE, "type": "FIXED", "billing_model": "FLAT_FEE", "has_meter": False}
    validate_price(**fixed, invoice_cadence="ADVANCE")
    validate_price(**GOOD_PRICE, invoice_cadence="ARREAR")


def test_meter_aggregations_other_than_count_need_a_field():
    for aggregation in ["SUM", "AVG", "MAX", "COUNT_UNIQUE", "LATEST", "WEIGHTED_SUM"]:
        errors = _errors(
            validate_meter, aggregation=aggregation, field="", multiplier=None, filters=[]
        )
        assert "needs the event property" in errors["field"][0]
    validate_meter(aggregation="COUNT", field="", multiplier=None, filters=[])


def test_sum_with_multiplier_needs_a_positive_multiplier():
    errors = _errors(
        validate_meter, aggregation="SUM_WITH_MULTIPLIER", field="x", multiplier=None, filters=[]
    )
    assert "multiplier" in errors
    validate_meter(
        aggregation="SUM_WITH_MULTIPLIER", field="x", multiplier=Decimal("0.5"), filters=[]
    )


@pytest.mark.parametrize(
    ("filters", "reason"),
    [
        ([{"key": "", "values": ["a"]}], "key must not be empty"),
        ([{"key": "  ", "values": ["a"]}], "key must not be empty"),
        ([{"key": "model", "values": []}], "at least one value"),
        ([{"key": "m", "values": ["a"]}, {"key": "m", "values": ["b"]}], "given twice"),
        ("model=o1", "must be a list"),
    ],
)
def test_meter_filters_are_checked(filters, reason):
    errors = _errors(
        validate_meter, aggregation="COUNT", field="", multiplier=None, filters=filters
    )
    assert reason in " ".join(errors["filters"])


def _tier(up_to, unit="1", flat="0"):
    return Tier(
        up_to=None if up_to is None else Decimal(up_to),
        unit_amount=Decimal(unit),
        flat_amount=Decimal(flat),
    )


def test_good_tiers_pass():
    validate_tiers([_tier(10), _tier(20), _tier(None)])
    validate_tiers([_tier(None)])


@pytest.mark.parametrize(
    ("tiers", "reason"),
    [
        ([], "at least one tier"),
        ([_tier(10), _tier(10), _tier(None)], "must be greater than 10"),
        ([_tier(20), _tier(10), _tier(None)], "must be greater than 20"),
        ([_tier(None), _tier(10)], "only the last tier may be open"),
        ([_tier(10), _tier(20)], "last tier must be open"),
        ([_tier(0), _tier(None)], "must be greater than 0"),
        ([_tier(10, unit="-1"), _tier(None)], "unit amount must be 0 or more"),
        ([_tier(10, flat="-1"), _tier(None)], "flat amount must be 0 or more"),
    ],
)
def test_bad_tiers_are_refused_with_a_reason(tiers, reason):
    errors = _errors(validate_tiers, tiers=tiers)
    assert reason in " ".join(errors["tiers"])


@pytest.mark.django_db
def test_price_create_refuses_tiered_price_without_valid_tiers():
    from catalog.models import Price
    from catalog.services import price_create
    from tests.factories import MeterFactory, PlanFactory

    meter, plan = MeterFactory(), PlanFactory()
    with pytest.raises(ValidationError) as info:
        price_create(
            plan=plan,
            meter=meter,
            type="USAGE",
            billing_model=pricing.TIERED,
            amount=Decimal(0),
            tiers=[_tier(10), _tier(5), _tier(None)],
        )
    assert "tiers" in info.value.message_dict
    assert not Price.objects.exists()


FROZEN_BEFORE = {
    "plan": "plan_1",
    "meter": "meter_1",
    "type": "USAGE",
    "billing_model": "PACKAGE",
    "amount": Decimal("15"),
    "currency": "usd",
    "divide_by": 1_000_000,
    "round": "up",
    "free_units": Decimal(0),
    "tier_mode": "VOLUME",
    "tiers": (),
    "billing_period": "MONTHLY",
    "billing_period_count": 1,
    "invoice_cadence": "ARREAR",
}


def test_a_price_in_use_refuses_each_money_term_change_by_name():
    refused = price_changes_refused(
        in_use=True,
        before=FROZEN_BEFORE,
        after={"amount": Decimal("16"), "currency": "eur", "tiers": [_tier(None)]},
    )
    assert refused == ["amount", "currency", "tiers"]
    errors = _errors(
        validate_price_change,
        in_use=True,
        before=FROZEN_BEFORE,
        after={"amount": Decimal("16"), "meter": "meter_2"},
    )
    message = " ".join(errors[NON_FIELD_ERRORS])
    assert message.startswith("Cannot change meter, amount.")
    assert "Duplicate the plan as a new version" in message


def test_equal_values_are_no_change_and_unused_prices_change_freely():
    same = {
        "amount": Decimal("15.000000000000"),
        "currency": "USD",
        "plan": SimpleNamespace(pk="plan_1"),
        "display_name": "Input tokens",
    }
    validate_price_change(in_use=True, before=FROZEN_BEFORE, after=same)
    validate_price_change(
        in_use=False, before=FROZEN_BEFORE, after={"amount": Decimal("16"), "tiers": []}
    )


def test_a_price_in_use_cannot_be_deleted():
    errors = _errors(validate_price_delete, in_use=True)
    assert "cannot be deleted" in errors[NON_FIELD_ERRORS][0]
    validate_price_delete(in_use=False)


@pytest.mark.django_db
def test_price_create_refuses_a_usage_price_billed_in_advance():
    from catalog.models import Price
    from catalog.services import price_create
    from tests.factories import MeterFactory, PlanFactory

    with pytest.raises(ValidationError) as info:
        price_create(
            plan=PlanFactory(),
            meter=MeterFactory(),
            type="USAGE",
            billing_model=pricing.PACKAGE,
            amount=Decimal(15),
            divide_by=1_000_000,
            invoice_cadence="ADVANCE",
        )
    assert "always billed in arrears" in " ".join(info.value.message_dict["invoice_cadence"])
    assert not Price.objects.exists()
