from decimal import Decimal

from django.db import models

from catalog import names, pricing
from catalog.ids import id_factory
from catalog.labels import meter_text, terms_summary
from catalog.money import format_quantity
from catalog.validation import (
    PRICE_MONEY_TERMS,
    validate_entitlement,
    validate_meter,
    validate_price,
)

# Unit prices need sub-cent precision: $15 per million tokens is 0.000015 a token.
AMOUNT = {"max_digits": 28, "decimal_places": 12}


class Feature(models.Model):
    class Type(models.TextChoices):
        METERED = "metered"
        BOOLEAN = "boolean"
        STATIC = "static"

    id = models.CharField(
        primary_key=True, max_length=40, default=id_factory("feat"), editable=False
    )
    name = models.CharField(max_length=255)
    lookup_key = models.SlugField(max_length=255, unique=True)
    type = models.CharField(max_length=16, choices=Type.choices, default=Type.METERED)
    description = models.TextField(blank=True)
    unit_singular = models.CharField(max_length=64, blank=True)
    unit_plural = models.CharField(max_length=64, blank=True)
    metadata = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name"]

    def __str__(self):
        return self.name


class Meter(models.Model):
    """How events become a quantity: which events count, and how they aggregate."""

    class Aggregation(models.TextChoices):
        COUNT = names.COUNT
        SUM = names.SUM
        AVG = names.AVG
        MAX = names.MAX
        COUNT_UNIQUE = names.COUNT_UNIQUE
        LATEST = names.LATEST
        SUM_WITH_MULTIPLIER = names.SUM_WITH_MULTIPLIER
        WEIGHTED_SUM = names.WEIGHTED_SUM

    class ResetUsage(models.TextChoices):
        BILLING_PERIOD = "BILLING_PERIOD"
        NEVER = "NEVER"

    id = models.CharField(
        primary_key=True, max_length=40, default=id_factory("meter"), editable=False
    )
    feature = models.OneToOneField(Feature, on_delete=models.CASCADE, related_name="meter")
    name = models.CharField(max_length=255, blank=True, help_text="Defaults to the feature's.")
    event_name = models.CharField(max_length=255, db_index=True)
    aggregation = models.CharField(
        max_length=32, choices=Aggregation.choices, default=Aggregation.SUM
    )
    field = models.CharField(
        max_length=255, blank=True, help_text="The event property to aggregate."
    )
    multiplier = models.DecimalField(**AMOUNT, null=True, blank=True)
    # A list of {"key": str, "values": [str, ...]}: keys are ANDed, values within a key ORed.
    filters = models.JSONField(default=list, blank=True)
    reset_usage = models.CharField(
        max_length=16, choices=ResetUsage.choices, default=ResetUsage.BILLING_PERIOD
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    def __str__(self):
        lead = self.name or (self.feature.name if self.feature_id else self.event_name)
        return meter_text(
            lead=lead, aggregation=self.aggregation, field=self.field, filters=self.filters
        )

    DEFINITION = ("event_name", "aggregation", "field", "multiplier", "filters", "reset_usage")

    def definition(self) -> dict:
        """What decides which events count and how: kept on every invoice line it priced."""
        data = {name: getattr(self, name) for name in self.DEFINITION}
        data["multiplier"] = None if self.multiplier is None else str(self.multiplier)
        return data

    @classmethod
    def from_definition(cls, data: dict) -> "Meter":
        """An unsaved meter that reads usage as ``data`` defined it (from raw events)."""
        multiplier = data.get("multiplier")
        return cls(
            **{k: data[k] for k in cls.DEFINITION if k in data and k != "multiplier"},
            multiplier=None if multiplier is None else Decimal(multiplier),
        )

    def clean(self):
        validate_meter(
            aggregation=self.aggregation,
            field=self.field,
            multiplier=self.multiplier,
            filters=self.filters,
        )


class Plan(models.Model):
    id = models.CharField(
        primary_key=True, max_length=40, default=id_factory("plan"), editable=False
    )
    name = models.CharField(max_length=255)
    lookup_key = models.SlugField(max_length=255, unique=True, null=True, blank=True)
    description = models.TextField(blank=True)
    active = models.BooleanField(default=True)
    metadata = models.JSONField(default=dict, blank=True)
    version = models.PositiveIntegerField(default=1, editable=False)
    previous_version = models.ForeignKey(
        "self",
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        editable=False,
        related_name="next_versions",
        help_text="The plan this one was duplicated from.",
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name"]

    def __str__(self):
        return self.name


class BillingPeriod(models.TextChoices):
    DAILY = "DAILY"
    WEEKLY = "WEEKLY"
    MONTHLY = "MONTHLY"
    QUARTERLY = "QUARTERLY"
    HALF_YEARLY = "HALF_YEARLY"
    ANNUAL = "ANNUAL"


class Price(models.Model):
    class Type(models.TextChoices):
        USAGE = names.USAGE
        FIXED = names.FIXED

    class BillingModel(models.TextChoices):
        FLAT_FEE = pricing.FLAT_FEE
        PACKAGE = pricing.PACKAGE
        TIERED = pricing.TIERED

    class Cadence(models.TextChoices):
        ARREAR = names.ARREAR
        ADVANCE = names.ADVANCE

    class Round(models.TextChoices):
        UP = pricing.ROUND_UP
        DOWN = pricing.ROUND_DOWN
        NONE = pricing.ROUND_NONE, "none (pro rata)"

    class TierMode(models.TextChoices):
        VOLUME = pricing.VOLUME
        SLAB = pricing.SLAB

    id = models.CharField(
        primary_key=True, max_length=40, default=id_factory("price"), editable=False
    )
    plan = models.ForeignKey(Plan, on_delete=models.CASCADE, related_name="prices")
    meter = models.ForeignKey(
        Meter,
        on_delete=models.PROTECT,
        null=True,
        blank=True,
        related_name="prices",
        help_text="What a USAGE price charges for.",
    )
    type = models.CharField(max_length=8, choices=Type.choices, default=Type.USAGE)
    billing_model = models.CharField(
        max_length=16, choices=BillingModel.choices, default=BillingModel.PACKAGE
    )
    amount = models.DecimalField(
        **AMOUNT, default=Decimal(0), help_text="Per unit, or per package for PACKAGE prices."
    )
    currency = models.CharField(max_length=3, default="usd", help_text="ISO 4217, e.g. usd.")
    billing_period = models.CharField(
        max_length=16, choices=BillingPeriod.choices, default=BillingPeriod.MONTHLY
    )
    billing_period_count = models.PositiveIntegerField(default=1)
    invoice_cadence = models.CharField(
        max_length=8, choices=Cadence.choices, default=Cadence.ARREAR
    )
    divide_by = models.PositiveBigIntegerField(
        null=True, blank=True, help_text="PACKAGE: units per package, e.g. 1000000."
    )
    round = models.CharField(max_length=8, choices=Round.choices, default=Round.UP)
    free_units = models.DecimalField(
        **AMOUNT, default=Decimal(0), help_text="Units free each period, deducted before packing."
    )
    tier_mode = models.CharField(max_length=8, choices=TierMode.choices, default=TierMode.VOLUME)
    display_name = models.CharField(max_length=255, blank=True)
    lookup_key = models.SlugField(max_length=255, unique=True, null=True, blank=True)
    description = models.TextField(blank=True)
    metadata = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["created_at", "id"]

    def __str__(self):
        """``Input Tokens · $15.00 per 1,000,000 tokens``: the display name, else the feature's
        name, then the terms, so that two prices on one meter read apart."""
        feature = self.meter.feature if self.meter_id else None
        name = self.display_name or (feature.name if feature else "Fixed fee")
        if self.amount is None:  # an unsaved form's half-typed price
            return name
        # Naming a price needs no tiers: skip their query.
        terms = pricing.Terms(
            billing_model=self.billing_model,
            amount=self.amount,
            divide_by=self.divide_by,
            tier_mode=self.tier_mode,
        )
        summary = terms_summary(
            terms,
            currency=self.currency,
            fixed=self.type == self.Type.FIXED,
            unit_singular=feature.unit_singular if feature else "",
            unit_plural=feature.unit_plural if feature else "",
        )
        return f"{name} · {summary}"

    def clean(self):
        validate_price(
            type=self.type,
            billing_model=self.billing_model,
            amount=self.amount,
            currency=self.currency,
            has_meter=self.meter_id is not None,
            divide_by=self.divide_by,
            free_units=self.free_units,
            billing_period_count=self.billing_period_count,
            invoice_cadence=self.invoice_cadence,
            billing_period=self.billing_period,
        )

    @property
    def transform_quantity(self) -> dict | None:
        if self.divide_by is None:
            return None
        return {"divide_by": self.divide_by, "round": self.round}

    def terms(self) -> pricing.Terms:
        """This price as the pricing engine sees it. Prefetch ``tiers`` when pricing many."""
        return pricing.Terms(
            billing_model=self.billing_model,
            amount=self.amount,
            divide_by=self.divide_by,
            round=self.round,
            free_units=self.free_units,
            tier_mode=self.tier_mode,
            tiers=tuple(t.as_tier() for t in self.tiers.all()),
        )

    def money_terms(self) -> dict:
        """The stored values of what a price in use may not change; related objects as ids."""
        return {
            name: tuple(t.as_tier() for t in self.tiers.all())
            if name == "tiers"
            else self.serializable_value(name)
            for name in PRICE_MONEY_TERMS
        }


class PriceTier(models.Model):
    price = models.ForeignKey(Price, on_delete=models.CASCADE, related_name="tiers")
    up_to = models.DecimalField(
        **AMOUNT, null=True, blank=True, help_text="Inclusive. Leave empty on the last tier for ∞."
    )
    unit_amount = models.DecimalField(**AMOUNT, default=Decimal(0))
    flat_amount = models.DecimalField(**AMOUNT, default=Decimal(0))

    class Meta:
        # Open (null) tier last on every backend.
        ordering = [models.F("up_to").asc(nulls_last=True)]

    def __str__(self):
        return f"up to {'∞' if self.up_to is None else format_quantity(self.up_to)}"

    def as_tier(self) -> pricing.Tier:
        return pricing.Tier(
            up_to=self.up_to, unit_amount=self.unit_amount, flat_amount=self.flat_amount
        )


class Entitlement(models.Model):
    """What a plan's subscribers may use of a feature: access (boolean), a fixed value
    (static), or a usage limit per period (metered; null is unlimited)."""

    class ResetPeriod(models.TextChoices):
        DAILY = "DAILY"
        WEEKLY = "WEEKLY"
        MONTHLY = "MONTHLY"
        QUARTERLY = "QUARTERLY"
        HALF_YEARLY = "HALF_YEARLY"
        ANNUAL = "ANNUAL"
        NEVER = "NEVER"

    class Status(models.TextChoices):
        PUBLISHED = "published"
        ARCHIVED = "archived"

    id = models.CharField(
        primary_key=True, max_length=40, default=id_factory("ent"), editable=False
    )
    plan = models.ForeignKey(Plan, on_delete=models.CASCADE, related_name="entitlements")
    feature = models.ForeignKey(Feature, on_delete=models.PROTECT, related_name="entitlements")
    feature_type = models.CharField(
        max_length=16, choices=Feature.Type.choices, help_text="The feature's type."
    )
    is_enabled = models.BooleanField(default=True)
    usage_limit = models.PositiveBigIntegerField(
        null=True, blank=True, help_text="Per usage period; empty is unlimited."
    )
    usage_reset_period = models.CharField(
        max_length=16,
        choices=ResetPeriod.choices,
        blank=True,
        help_text="When usage counts from zero again; empty follows the billing period.",
    )
    is_soft_limit = models.BooleanField(
        default=False, help_text="Usage past a soft limit is still allowed (and reported)."
    )
    static_value = models.CharField(max_length=255, blank=True)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.PUBLISHED)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["created_at", "id"]
        constraints = [
            models.UniqueConstraint(
                fields=["plan", "feature"],
                condition=models.Q(status="published"),
                name="one_published_entitlement_per_plan_feature",
                violation_error_message="The plan already has an entitlement for this feature.",
                violation_error_code="unique",
            )
        ]

    def __str__(self):
        return (
            f"{self.feature} on {self.plan}" if self.feature_id and self.plan_id else "Entitlement"
        )

    def clean(self):
        validate_entitlement(
            feature_type=self.feature_type,
            actual_type=self.feature.type if self.feature_id else self.feature_type,
            usage_limit=self.usage_limit,
            usage_reset_period=self.usage_reset_period,
            is_soft_limit=self.is_soft_limit,
            static_value=self.static_value,
        )
