"""Catalog rules, in one place for the admin and the API alike.

Each function takes plain values and raises a ``ValidationError`` keyed by field name.
"""

import re
from collections.abc import Mapping, Sequence
from decimal import Decimal

from django.core.exceptions import NON_FIELD_ERRORS, ValidationError

from catalog import pricing
from catalog.names import ADVANCE, COUNT, FIXED, SUM_WITH_MULTIPLIER, USAGE

METERED = "metered"
STATIC = "static"
_CURRENCY = re.compile(r"^[A-Za-z]{3}$")

# Bounds (README.md, "Bounds").
MAX_FILTER_KEYS = 20
MAX_FILTER_VALUES = 100
MAX_FILTER_TEXT = 255
MAX_TIERS = 100
# A billing period lasts at most a year: count × period ≤ 1 year.
MAX_PERIOD_COUNT = {
    "DAILY": 365,
    "WEEKLY": 52,
    "MONTHLY": 12,
    "QUARTERLY": 4,
    "HALF_YEARLY": 2,
    "ANNUAL": 1,
}


def billing_period_problems(*, billing_period: str | None, count) -> list[str]:
    """Why ``count`` × ``billing_period`` is not a period Tally bills, if it is not."""
    if count is None:
        return []
    high = MAX_PERIOD_COUNT.get(billing_period or "", max(MAX_PERIOD_COUNT.values()))
    if isinstance(count, bool) or not isinstance(count, int) or not 1 <= count <= high:
        per = f" for {billing_period} periods" if billing_period in MAX_PERIOD_COUNT else ""
        return [
            f"The billing period count must be 1 or more, and at most {high}{per} "
            "(a billing period lasts at most a year)."
        ]
    return []


def validate_billing_period(*, billing_period: str | None, count) -> None:
    problems = billing_period_problems(billing_period=billing_period, count=count)
    _raise({"billing_period_count": problems} if problems else {})


def _raise(errors: dict[str, list[str]]) -> None:
    if errors:
        raise ValidationError(errors)


def validate_feature(*, type: str, has_meter: bool) -> None:
    if type == METERED and not has_meter:
        _raise({"meter": ["A metered feature needs a meter."]})
    if type != METERED and has_meter:
        _raise({"meter": ["Only a metered feature has a meter."]})


def validate_meter(*, aggregation: str, field: str, multiplier: Decimal | None, filters) -> None:
    errors: dict[str, list[str]] = {}
    if aggregation != COUNT and not (field or "").strip():
        errors["field"] = [f"{aggregation} needs the event property to aggregate."]
    if aggregation == SUM_WITH_MULTIPLIER and (multiplier is None or multiplier <= 0):
        errors["multiplier"] = ["SUM_WITH_MULTIPLIER needs a multiplier greater than 0."]
    filter_errors = filter_problems(filters)
    if filter_errors:
        errors["filters"] = filter_errors
    _raise(errors)


def filter_problems(filters) -> list[str]:
    if not isinstance(filters, list):
        return ["Filters must be a list of {key, values}."]
    if len(filters) > MAX_FILTER_KEYS:
        return [f"At most {MAX_FILTER_KEYS} filter keys; this meter has {len(filters)}."]
    problems = []
    seen = set()
    for number, item in enumerate(filters, start=1):
        key = item.get("key") if isinstance(item, dict) else None
        values = item.get("values") if isinstance(item, dict) else None
        if not isinstance(key, str) or not key.strip():
            problems.append(f"Filter {number}: the key must not be empty.")
        elif key in seen:
            problems.append(f"Filter {number}: the key {key!r} is given twice.")
        else:
            seen.add(key)
        if (
            not isinstance(values, list)
            or not values
            or not all(isinstance(v, str) and v != "" for v in values)
        ):
            problems.append(f"Filter {number}: give at least one value, each a non-empty string.")
        elif len(values) > MAX_FILTER_VALUES:
            problems.append(f"Filter {number}: at most {MAX_FILTER_VALUES} values.")
        elif any(len(v) > MAX_FILTER_TEXT for v in values):
            problems.append(f"Filter {number}: each value is at most {MAX_FILTER_TEXT} characters.")
        if isinstance(key, str) and len(key) > MAX_FILTER_TEXT:
            problems.append(f"Filter {number}: the key is at most {MAX_FILTER_TEXT} characters.")
    return problems


def validate_price(
    *,
    type: str,
    billing_model: str,
    amount: Decimal | None,
    currency: str,
    has_meter: bool,
    divide_by: int | None,
    free_units: Decimal | None,
    billing_period_count: int | None = 1,
    invoice_cadence: str = "ARREAR",
    billing_period: str | None = None,
) -> None:
    errors: dict[str, list[str]] = {}
    if amount is not None and amount < 0:
        errors["amount"] = ["The amount must be 0 or more."]
    if free_units is not None and free_units < 0:
        errors["free_units"] = ["Free units must be 0 or more."]
    if not _CURRENCY.match(currency or ""):
        errors["currency"] = ["Use a three-letter ISO 4217 code, such as usd."]
    period_problems = billing_period_problems(
        billing_period=billing_period, count=billing_period_count
    )
    if period_problems:
        errors["billing_period_count"] = period_problems
    if type == USAGE and not has_meter:
        errors["meter"] = ["A USAGE price needs a meter."]
    if type == FIXED and has_meter:
        errors["meter"] = ["A FIXED price has no meter."]
    if type == USAGE and invoice_cadence == ADVANCE:
        errors["invoice_cadence"] = [
            "Usage is always billed in arrears: a USAGE price's invoice_cadence must be ARREAR."
        ]
    if type == FIXED and billing_model != pricing.FLAT_FEE:
        errors["billing_model"] = ["A FIXED price is a FLAT_FEE."]
    if divide_by is not None and divide_by < 1:
        errors["divide_by"] = ["divide_by must be 1 or more."]
    elif billing_model == pricing.PACKAGE and divide_by is None:
        errors["divide_by"] = ["A PACKAGE price needs transform_quantity.divide_by."]
    _raise(errors)


def validate_price_tiers(*, billing_model: str, tiers: Sequence[pricing.Tier]) -> None:
    if billing_model == pricing.TIERED:
        validate_tiers(tiers)
    elif tiers:
        _raise({"tiers": ["Only a TIERED price has tiers."]})


def validate_tiers(tiers: Sequence[pricing.Tier]) -> None:
    """Tiers in order: up_to strictly increasing, only the last one open."""
    problems = []
    if not tiers:
        problems.append("A TIERED price needs at least one tier.")
    if len(tiers) > MAX_TIERS:
        raise ValidationError(
            {"tiers": [f"At most {MAX_TIERS} tiers; this price has {len(tiers)}."]}
        )
    previous = Decimal(0)
    for number, tier in enumerate(tiers, start=1):
        last = number == len(tiers)
        if tier.unit_amount is None or tier.unit_amount < 0:
            problems.append(f"Tier {number}: the unit amount must be 0 or more.")
        if tier.flat_amount is None or tier.flat_amount < 0:
            problems.append(f"Tier {number}: the flat amount must be 0 or more.")
        if tier.up_to is None:
            if not last:
                problems.append(f"Tier {number}: only the last tier may be open (no up_to).")
            continue
        if last:
            problems.append(f"Tier {number}: the last tier must be open (leave up_to empty).")
        if tier.up_to <= previous:
            problems.append(
                f"Tier {number}: up_to must be greater than {previous} (tiers strictly increase)."
            )
        previous = tier.up_to
    if problems:
        raise ValidationError({"tiers": problems})


# A price billed on invoices keeps these; change comes as a new plan version.
PRICE_MONEY_TERMS = (
    "plan",
    "meter",
    "type",
    "billing_model",
    "amount",
    "currency",
    "divide_by",
    "round",
    "free_units",
    "tier_mode",
    "tiers",
    "billing_period",
    "billing_period_count",
    "invoice_cadence",
)
PRICE_FROZEN = (
    "This price is billed on invoices; its money terms are frozen. Duplicate the plan as a "
    'new version (Plans → select → "Duplicate as new version") and change the copy.'
)
PRICE_UNDELETABLE = (
    "This price is billed on invoices, so it cannot be deleted. Duplicate the plan as a "
    'new version (Plans → select → "Duplicate as new version") and leave it out of the copy.'
)


def _comparable(name: str, value):
    if name == "tiers":
        return tuple((t.up_to, t.unit_amount, t.flat_amount or Decimal(0)) for t in value)
    if name == "currency":
        return (value or "").lower()
    return getattr(value, "pk", value)  # a related object compares by its id


def price_changes_refused(*, in_use: bool, before: Mapping, after: Mapping) -> list[str]:
    """The money terms that ``after`` would change on a price in use.

    ``before`` holds every money term; ``after`` only those being set.
    """
    if not in_use:
        return []
    return [
        name
        for name in PRICE_MONEY_TERMS
        if name in after and _comparable(name, after[name]) != _comparable(name, before[name])
    ]


def validate_price_change(*, in_use: bool, before: Mapping, after: Mapping) -> None:
    refused = price_changes_refused(in_use=in_use, before=before, after=after)
    if refused:
        _raise({NON_FIELD_ERRORS: [f"Cannot change {', '.join(refused)}. {PRICE_FROZEN}"]})


def validate_price_delete(*, in_use: bool) -> None:
    if in_use:
        _raise({NON_FIELD_ERRORS: [PRICE_UNDELETABLE]})


def validate_entitlement(
    *,
    feature_type: str,
    actual_type: str,
    usage_limit: int | None,
    usage_reset_period: str,
    is_soft_limit: bool,
    static_value: str,
) -> None:
    """A limit and its period are a metered feature's; a value is a static one's."""
    errors: dict[str, list[str]] = {}
    if feature_type != actual_type:
        errors["feature_type"] = [f"The feature is {actual_type}, not {feature_type}."]
    if feature_type != METERED:
        for name, value in (
            ("usage_limit", usage_limit is not None),
            ("usage_reset_period", bool(usage_reset_period)),
            ("is_soft_limit", is_soft_limit),
        ):
            if value:
                errors[name] = ["Only a metered feature's entitlement has a usage limit."]
    if static_value and feature_type != STATIC:
        errors["static_value"] = ["Only a static feature's entitlement has a value."]
    _raise(errors)
