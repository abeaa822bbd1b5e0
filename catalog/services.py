"""Catalog writes. Every rule they check lives in ``catalog.validation``."""

from decimal import Decimal

from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction
from django.utils.text import slugify

from catalog import pricing
from catalog.models import Entitlement, Feature, Meter, Plan, Price, PriceTier
from catalog.selectors import price_in_use
from catalog.validation import (
    validate_feature,
    validate_price_change,
    validate_price_delete,
    validate_price_tiers,
)


@transaction.atomic
def feature_create(
    *,
    name: str,
    lookup_key: str = "",
    type: str = Feature.Type.METERED,
    description: str = "",
    unit_singular: str = "",
    unit_plural: str = "",
    metadata: dict | None = None,
    meter: dict | None = None,
) -> Feature:
    """Create a feature; a metered one with its meter (``event_name``, ``aggregation``, ...).

    Without a ``lookup_key`` one is made from the name. Errors in ``meter`` are keyed
    ``meter.<field>``.
    """
    feature = Feature(
        name=name,
        lookup_key=lookup_key or _unused_lookup_key(name),
        type=type,
        description=description,
        unit_singular=unit_singular,
        unit_plural=unit_plural,
        metadata=metadata or {},
    )
    feature.full_clean()
    validate_feature(type=feature.type, has_meter=meter is not None)
    feature.save()
    if meter is not None:
        meter_obj = Meter(feature=feature, **meter)
        try:
            meter_obj.full_clean()
        except ValidationError as error:
            raise ValidationError(
                {f"meter.{key}": value for key, value in error.error_dict.items()}
            ) from error
        meter_obj.save()
    return feature


def _unused_lookup_key(name: str) -> str:
    base = slugify(name)[:240] or "feature"
    key, number = base, 1
    while Feature.objects.filter(lookup_key=key).exists():
        number += 1
        key = f"{base}-{number}"
    return key


def plan_create(
    *,
    name: str,
    lookup_key: str | None = None,
    description: str = "",
    active: bool = True,
    metadata: dict | None = None,
) -> Plan:
    plan = Plan(
        name=name,
        lookup_key=lookup_key or None,
        description=description,
        active=active,
        metadata=metadata or {},
    )
    plan.full_clean()
    plan.save()
    return plan


@transaction.atomic
def price_create(*, plan: Plan, tiers: list[pricing.Tier] | None = None, **fields) -> Price:
    """Create a price with its tiers. ``fields`` are Price's own fields."""
    fields["currency"] = fields.get("currency", "usd").lower()
    if fields.get("lookup_key") == "":
        fields["lookup_key"] = None
    price = Price(plan=plan, **fields)
    price.full_clean()
    tiers = list(tiers or [])
    validate_price_tiers(billing_model=price.billing_model, tiers=tiers)
    price.save()
    _tiers_save(price=price, tiers=tiers)
    return price


def _tiers_save(*, price: Price, tiers: list[pricing.Tier]) -> None:
    rows = [
        PriceTier(
            price=price,
            up_to=t.up_to,
            unit_amount=t.unit_amount,
            flat_amount=t.flat_amount or Decimal(0),
        )
        for t in tiers
    ]
    problems = []
    for number, row in enumerate(rows, start=1):
        try:
            row.full_clean(exclude=["price"])
        except ValidationError as error:
            for field, messages in error.message_dict.items():
                problems += [f"Tier {number}: {field}: {m}" for m in messages]
    if problems:
        raise ValidationError({"tiers": problems})
    PriceTier.objects.bulk_create(rows)


@transaction.atomic
def price_update(*, price: Price, tiers: list[pricing.Tier] | None = None, **fields) -> Price:
    """Change a price's own fields, and its tiers when given. A price in use keeps its money
    terms: only its names and metadata change."""
    price = Price.objects.select_for_update().get(pk=price.pk)
    if "currency" in fields:
        fields["currency"] = fields["currency"].lower()
    if fields.get("lookup_key") == "":
        fields["lookup_key"] = None
    before = price.money_terms()
    after = fields if tiers is None else {**fields, "tiers": tiers}
    validate_price_change(in_use=price_in_use(price=price), before=before, after=after)
    for name, value in fields.items():
        Price._meta.get_field(name)  # a misspelt field is an error, not a silent no-op
        setattr(price, name, value)
    price.full_clean()
    validate_price_tiers(
        billing_model=price.billing_model, tiers=before["tiers"] if tiers is None else tiers
    )
    price.save()
    if tiers is not None:
        price.tiers.all().delete()
        _tiers_save(price=price, tiers=list(tiers))
    return price


@transaction.atomic
def price_delete(*, price: Price) -> None:
    price = Price.objects.select_for_update().get(pk=price.pk)
    validate_price_delete(in_use=price_in_use(price=price))
    price.delete()


# What a new plan version does not copy from a price: who it is and when it was made.
_PRICE_NOT_COPIED = {"id", "plan", "lookup_key", "created_at", "updated_at"}


@transaction.atomic
def plan_version_create(*, plan: Plan) -> Plan:
    """Copy a plan, its prices and their tiers as its next version, ready to be changed.

    Names and lookup keys get `` v<N>`` and ``-v<N>``, with N bumped past any key in use.
    Subscribers stay on ``plan``.
    """
    plan = Plan.objects.select_for_update().get(pk=plan.pk)
    prices = list(plan.prices.prefetch_related("tiers"))
    version = plan.version + 1
    while _version_keys_taken(plan=plan, prices=prices, version=version):
        version += 1
    copy = Plan(
        name=_versioned(plan.name, separator=" v", old=plan.version, new=version),
        lookup_key=_versioned(plan.lookup_key, separator="-v", old=plan.version, new=version),
        description=plan.description,
        active=plan.active,
        metadata=dict(plan.metadata),
        version=version,
        previous_version=plan,
    )
    copy.full_clean()
    copy.save()
    for price in prices:
        price_copy = Price(
            plan=copy,
            lookup_key=_versioned(price.lookup_key, separator="-v", old=plan.version, new=version),
            **{
                field.attname: getattr(price, field.attname)
                for field in Price._meta.concrete_fields
                if field.name not in _PRICE_NOT_COPIED
            },
        )
        price_copy.save()
        PriceTier.objects.bulk_create(
            PriceTier(
                price=price_copy,
                up_to=t.up_to,
                unit_amount=t.unit_amount,
                flat_amount=t.flat_amount,
            )
            for t in price.tiers.all()
        )
    for entitlement in plan.entitlements.filter(status=Entitlement.Status.PUBLISHED):
        entitlement_create(
            plan=copy,
            feature=entitlement.feature,
            feature_type=entitlement.feature_type,
            **{name: getattr(entitlement, name) for name in ENTITLEMENT_TERMS},
        )
    return copy


def _versioned(value: str | None, *, separator: str, old: int, new: int) -> str | None:
    """``pro`` → ``pro-v2``; ``pro-v2`` → ``pro-v3``. Cut to fit 255 characters."""
    if not value:
        return value or None
    suffix = f"{separator}{old}"
    base = value.removesuffix(suffix) if old > 1 else value
    tail = f"{separator}{new}"
    return base[: 255 - len(tail)] + tail


def _version_keys_taken(*, plan: Plan, prices: list[Price], version: int) -> bool:
    plan_key = _versioned(plan.lookup_key, separator="-v", old=plan.version, new=version)
    price_keys = [
        _versioned(p.lookup_key, separator="-v", old=plan.version, new=version)
        for p in prices
        if p.lookup_key
    ]
    return (
        plan_key is not None and Plan.objects.filter(lookup_key=plan_key).exists()
    ) or Price.objects.filter(lookup_key__in=price_keys).exists()


# Entitlements

ENTITLEMENT_TERMS = (
    "is_enabled",
    "usage_limit",
    "usage_reset_period",
    "is_soft_limit",
    "static_value",
)


def entitlement_create(*, plan: Plan, feature: Feature, feature_type: str, **terms) -> Entitlement:
    """A plan's entitlement to a feature; ``terms`` are ENTITLEMENT_TERMS. One published
    entitlement per plan and feature (a second is refused as already existing)."""
    entitlement = Entitlement(plan=plan, feature=feature, feature_type=feature_type)
    _entitlement_set(entitlement, terms)
    try:
        with transaction.atomic():
            entitlement.save()
    except IntegrityError:  # a concurrent create took the plan and feature first
        raise ValidationError(
            Entitlement._meta.constraints[0].violation_error_message, code="unique"
        ) from None
    return entitlement


@transaction.atomic
def entitlements_create(*, items: list[dict]) -> list[Entitlement]:
    """Several entitlements, all or none: errors name the item (``items.2.usage_limit``)."""
    created = []
    for number, item in enumerate(items):
        try:
            created.append(entitlement_create(**item))
        except ValidationError as error:
            raise ValidationError(
                {f"items.{number}.{k}": v for k, v in error.message_dict.items()}
            ) from error
    return created


@transaction.atomic
def entitlement_update(*, entitlement: Entitlement, **terms) -> Entitlement:
    entitlement = Entitlement.objects.select_for_update().get(pk=entitlement.pk)
    _entitlement_set(entitlement, terms)
    entitlement.save()
    return entitlement


def entitlement_archive(*, entitlement: Entitlement) -> Entitlement:
    """Subscribers lose it at once; the row stays, so a new one may replace it."""
    entitlement.status = Entitlement.Status.ARCHIVED
    entitlement.save(update_fields=["status", "updated_at"])
    return entitlement


def _entitlement_set(entitlement: Entitlement, terms: dict) -> None:
    unknown = set(terms) - set(ENTITLEMENT_TERMS)
    if unknown:
        raise TypeError(f"not entitlement terms: {sorted(unknown)}")
    for name, value in terms.items():
        setattr(entitlement, name, value)
    entitlement.full_clean()
