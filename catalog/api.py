"""Features (with their meter), plans and prices under /v1/, in Flexprice's wire format.

Serializers only parse shapes; every catalog rule is checked by the services.
"""

from decimal import Decimal

import django_filters
from django.shortcuts import get_object_or_404
from drf_spectacular.utils import (
    OpenApiExample,
    extend_schema,
    extend_schema_field,
    extend_schema_serializer,
    inline_serializer,
)
from rest_framework import serializers, status
from rest_framework.decorators import action
from rest_framework.response import Response
from rest_framework.views import APIView

from catalog import pricing
from catalog.models import BillingPeriod, Entitlement, Feature, Meter, Plan, Price
from catalog.services import (
    entitlement_archive,
    entitlement_create,
    entitlement_update,
    entitlements_create,
    feature_create,
    plan_create,
    price_create,
)
from config.resources import (
    DECIMAL_SCHEMA,
    Amount,
    Body,
    Constant,
    CreatableResourceViewSet,
    ExistingId,
    Ids,
    MessageSerializer,
    Metadata,
    NoBody,
    SearchRequest,
    one_page,
    page_examples,
    page_of,
    resource_schema,
)


def _text(**kwargs):
    return serializers.CharField(required=False, allow_blank=True, **kwargs)


# Features and meters


class AggregationSerializer(Body):
    type = serializers.ChoiceField(Meter.Aggregation.choices, source="aggregation")
    field = _text()
    multiplier = Amount(required=False, allow_null=True)


class FilterSerializer(Body):
    key = serializers.CharField(allow_blank=True)
    values = serializers.ListField(child=serializers.CharField(allow_blank=True))


class MeterSerializer(serializers.ModelSerializer):
    name = serializers.SerializerMethodField()
    aggregation = AggregationSerializer(source="*")
    filters = FilterSerializer(many=True)
    status = Constant("published")

    class Meta:
        model = Meter
        fields = ["id", "name", "event_name", "aggregation", "filters", "reset_usage", "status"]
        fields += ["created_at", "updated_at"]
        read_only_fields = fields

    def get_name(self, meter) -> str:
        return meter.name or meter.feature.name


class MeterCreateSerializer(Body):
    name = _text()
    event_name = serializers.CharField(allow_blank=True)
    aggregation = AggregationSerializer(source="*")
    filters = FilterSerializer(many=True, required=False)
    reset_usage = serializers.ChoiceField(Meter.ResetUsage.choices, required=False)


METER_EXAMPLE = {
    "id": "meter_01JD7X8Y9ZK2M3N4P5Q6R7S8T9",
    "name": "LLM tokens",
    "event_name": "llm.tokens",
    "aggregation": {"type": "SUM", "field": "tokens", "multiplier": None},
    "filters": [{"key": "model", "values": ["gpt-4o", "gpt-4o-mini"]}],
    "reset_usage": "BILLING_PERIOD",
    "status": "published",
    "created_at": "2026-11-27T10:00:00Z",
    "updated_at": "2026-11-27T10:00:00Z",
}
FEATURE_EXAMPLE = {
    "id": "feat_01JD7X8Y9ZK2M3N4P5Q6R7S8T9",
    "name": "LLM tokens",
    "lookup_key": "llm_tokens",
    "type": "metered",
    "description": "",
    "unit_singular": "token",
    "unit_plural": "tokens",
    "metadata": {},
    "status": "published",
    "meter_id": METER_EXAMPLE["id"],
    "meter": METER_EXAMPLE,
    "created_at": "2026-11-27T10:00:00Z",
    "updated_at": "2026-11-27T10:00:00Z",
}


@extend_schema_serializer(
    examples=[OpenApiExample("A metered feature", value=FEATURE_EXAMPLE, response_only=True)]
)
class FeatureSerializer(serializers.ModelSerializer):
    metadata = Metadata()
    status = Constant("published")
    meter_id = serializers.CharField(source="meter.id", allow_null=True)
    meter = MeterSerializer(allow_null=True)

    class Meta:
        model = Feature
        fields = ["id", "name", "lookup_key", "type", "description", "unit_singular"]
        fields += ["unit_plural", "metadata", "status", "meter_id", "meter"]
        fields += ["created_at", "updated_at"]
        read_only_fields = fields


@extend_schema_serializer(
    examples=[
        OpenApiExample(
            "A metered feature",
            value={
                "name": "LLM tokens",
                "type": "metered",
                "lookup_key": "llm_tokens",
                "unit_singular": "token",
                "unit_plural": "tokens",
                "meter": {
                    "name": "LLM tokens",
                    "event_name": "llm.tokens",
                    "aggregation": {"type": "SUM", "field": "tokens"},
                    "filters": [{"key": "model", "values": ["gpt-4o", "gpt-4o-mini"]}],
                    "reset_usage": "BILLING_PERIOD",
                },
            },
            request_only=True,
        )
    ]
)
class FeatureCreateSerializer(Body):
    name = serializers.CharField(allow_blank=True)
    type = serializers.ChoiceField(Feature.Type.choices, required=False)
    lookup_key = _text()
    description = _text()
    unit_singular = _text()
    unit_plural = _text()
    metadata = Metadata(required=False)
    meter = MeterCreateSerializer(required=False, allow_null=True)


class FeatureSearchSerializer(SearchRequest):
    feature_ids = Ids(required=False)
    lookup_key = serializers.CharField(required=False)
    lookup_keys = Ids(required=False)
    meter_ids = Ids(required=False)
    name_contains = serializers.CharField(required=False)

    lookups = {
        "feature_ids": "id__in",
        "lookup_key": "lookup_key",
        "lookup_keys": "lookup_key__in",
        "meter_ids": "meter__id__in",
        "name_contains": "name__icontains",
    }


class FeatureFilter(django_filters.FilterSet):
    name = django_filters.CharFilter(lookup_expr="icontains")

    class Meta:
        model = Feature
        fields = ["lookup_key", "type", "name"]


@resource_schema
class FeatureViewSet(CreatableResourceViewSet):
    queryset = Feature.objects.select_related("meter")
    serializer_class = FeatureSerializer
    filterset_class = FeatureFilter
    search_class = FeatureSearchSerializer
    create_serializer_class = FeatureCreateSerializer
    create_service = staticmethod(feature_create)
    error_names = {
        "meter.aggregation": "meter.aggregation.type",
        "meter.field": "meter.aggregation.field",
        "meter.multiplier": "meter.aggregation.multiplier",
    }


# Prices


@extend_schema_field({"oneOf": [{"type": "integer"}, DECIMAL_SCHEMA], "nullable": True})
class UpTo(Amount):
    """A tier's inclusive bound. The SDK reads it as an int, so whole numbers go out as ints."""

    def to_representation(self, value):
        value = Decimal(value)
        return (
            int(value) if value == value.to_integral_value() else super().to_representation(value)
        )


class TierSerializer(Body):
    up_to = UpTo(required=False, allow_null=True)
    unit_amount = Amount()
    flat_amount = Amount(required=False)


class TransformQuantitySerializer(Body):
    divide_by = serializers.IntegerField(required=False)
    round = serializers.ChoiceField(Price.Round.choices, required=False)


PRICE_EXAMPLE = {
    "id": "price_01JD7X8Y9ZK2M3N4P5Q6R7S8T9",
    "entity_type": "PLAN",
    "entity_id": "plan_01JD7X8Y9ZK2M3N4P5Q6R7S8T9",
    "type": "USAGE",
    "billing_model": "PACKAGE",
    "billing_cadence": "RECURRING",
    "billing_period": "MONTHLY",
    "billing_period_count": 1,
    "invoice_cadence": "ARREAR",
    "price_unit_type": "FIAT",
    "currency": "usd",
    "amount": "2",
    "meter_id": METER_EXAMPLE["id"],
    "transform_quantity": {"divide_by": 1000, "round": "up"},
    "free_units": "0",
    "tier_mode": None,
    "tiers": [],
    "display_name": "Tokens",
    "lookup_key": None,
    "description": "",
    "metadata": {},
    "status": "published",
    "created_at": "2026-11-27T10:00:00Z",
    "updated_at": "2026-11-27T10:00:00Z",
}


@extend_schema_serializer(
    examples=[OpenApiExample("$2 per 1,000 tokens", value=PRICE_EXAMPLE, response_only=True)]
)
class PriceSerializer(serializers.ModelSerializer):
    entity_type = Constant("PLAN")
    entity_id = serializers.CharField(source="plan_id")
    billing_cadence = Constant("RECURRING")
    price_unit_type = Constant("FIAT")
    amount = Amount()
    free_units = Amount()
    transform_quantity = TransformQuantitySerializer(allow_null=True)
    tier_mode = serializers.SerializerMethodField()
    tiers = TierSerializer(many=True)
    metadata = Metadata()
    status = Constant("published")

    class Meta:
        model = Price
        fields = ["id", "entity_type", "entity_id", "type", "billing_model", "billing_cadence"]
        fields += ["billing_period", "billing_period_count", "invoice_cadence"]
        fields += ["price_unit_type", "currency", "amount", "meter_id", "transform_quantity"]
        fields += ["free_units", "tier_mode", "tiers", "display_name", "lookup_key"]
        fields += ["description", "metadata", "status", "created_at", "updated_at"]
        read_only_fields = fields

    def get_tier_mode(self, price) -> str | None:
        return price.tier_mode if price.billing_model == pricing.TIERED else None


@extend_schema_serializer(
    examples=[
        OpenApiExample(
            "$2 per 1,000 tokens",
            value={
                "entity_type": "PLAN",
                "entity_id": PRICE_EXAMPLE["entity_id"],
                "type": "USAGE",
                "billing_model": "PACKAGE",
                "billing_period": "MONTHLY",
                "invoice_cadence": "ARREAR",
                "price_unit_type": "FIAT",
                "currency": "usd",
                "amount": "2",
                "meter_id": METER_EXAMPLE["id"],
                "transform_quantity": {"divide_by": 1000, "round": "up"},
            },
            request_only=True,
        )
    ]
)
class PriceCreateSerializer(Body):
    """Flexprice's CreatePriceRequest; ``plan_id`` is accepted for ``entity_id``."""

    entity_type = serializers.ChoiceField(["PLAN"], required=False)
    entity_id = ExistingId(Plan, required=False)
    plan_id = ExistingId(Plan, required=False)
    type = serializers.ChoiceField(Price.Type.choices)
    billing_model = serializers.ChoiceField(Price.BillingModel.choices)
    amount = Amount(required=False)
    currency = serializers.CharField(required=False)
    billing_period = serializers.ChoiceField(BillingPeriod.choices, required=False)
    billing_period_count = serializers.IntegerField(required=False)
    invoice_cadence = serializers.ChoiceField(Price.Cadence.choices, required=False)
    price_unit_type = serializers.ChoiceField(["FIAT"], required=False)
    meter_id = ExistingId(Meter, required=False)
    transform_quantity = TransformQuantitySerializer(required=False, allow_null=True)
    free_units = Amount(required=False)
    tier_mode = serializers.ChoiceField(Price.TierMode.choices, required=False)
    tiers = TierSerializer(many=True, required=False)
    display_name = _text()
    lookup_key = _text()
    description = _text()
    metadata = Metadata(required=False)

    def validate(self, attrs):
        """The keyword arguments of ``price_create``."""
        plan = attrs.pop("entity_id", None) or attrs.pop("plan_id", None)
        attrs.pop("plan_id", None)
        if plan is None:
            raise serializers.ValidationError({"entity_id": ["This field is required."]})
        attrs.pop("entity_type", None)
        attrs.pop("price_unit_type", None)
        if "meter_id" in attrs:
            attrs["meter"] = attrs.pop("meter_id")
        attrs.update(attrs.pop("transform_quantity", None) or {})
        tiers = [
            pricing.Tier(t.get("up_to"), t["unit_amount"], t.get("flat_amount", pricing.ZERO))
            for t in attrs.pop("tiers", [])
        ]
        return {**attrs, "plan": plan, "tiers": tiers}


class PriceSearchSerializer(SearchRequest):
    price_ids = Ids(required=False)
    plan_ids = Ids(required=False)
    entity_ids = Ids(required=False)
    meter_ids = Ids(required=False)
    billing_periods = Ids(required=False)

    lookups = {
        "price_ids": "id__in",
        "plan_ids": "plan_id__in",
        "entity_ids": "plan_id__in",
        "meter_ids": "meter_id__in",
        "billing_periods": "billing_period__in",
    }


class PriceFilter(django_filters.FilterSet):
    plan_id = django_filters.CharFilter()
    meter_id = django_filters.CharFilter()

    class Meta:
        model = Price
        fields = ["plan_id", "meter_id", "type", "billing_model", "currency", "lookup_key"]


@resource_schema
class PriceViewSet(CreatableResourceViewSet):
    queryset = Price.objects.prefetch_related("tiers")
    serializer_class = PriceSerializer
    filterset_class = PriceFilter
    search_class = PriceSearchSerializer
    create_serializer_class = PriceCreateSerializer
    create_service = staticmethod(price_create)
    error_names = {
        "plan": "entity_id",
        "meter": "meter_id",
        "divide_by": "transform_quantity.divide_by",
        "round": "transform_quantity.round",
    }


# Plans


@extend_schema_serializer(
    examples=[
        OpenApiExample(
            "A plan with a usage price",
            value={
                "id": PRICE_EXAMPLE["entity_id"],
                "name": "Pro",
                "description": "",
                "lookup_key": "pro",
                "status": "published",
                "metadata": {},
                "prices": [PRICE_EXAMPLE],
                "version": 1,
                "created_at": "2026-11-27T10:00:00Z",
                "updated_at": "2026-11-27T10:00:00Z",
            },
            response_only=True,
        )
    ]
)
class PlanSerializer(serializers.ModelSerializer):
    status = serializers.SerializerMethodField()
    metadata = Metadata()
    prices = PriceSerializer(many=True)

    class Meta:
        model = Plan
        fields = ["id", "name", "description", "lookup_key", "status", "metadata", "prices"]
        fields += ["version", "created_at", "updated_at"]
        read_only_fields = fields

    def get_status(self, plan) -> str:
        return "published" if plan.active else "archived"


@extend_schema_serializer(
    examples=[
        OpenApiExample("A plan", value={"name": "Pro", "lookup_key": "pro"}, request_only=True)
    ]
)
class PlanCreateSerializer(Body):
    name = serializers.CharField(allow_blank=True)
    description = _text()
    lookup_key = _text(allow_null=True)
    metadata = Metadata(required=False)


class PlanSearchSerializer(SearchRequest):
    plan_ids = Ids(required=False)
    lookup_key = serializers.CharField(required=False)

    lookups = {"plan_ids": "id__in", "lookup_key": "lookup_key"}


class PlanFilter(django_filters.FilterSet):
    name = django_filters.CharFilter(lookup_expr="icontains")

    class Meta:
        model = Plan
        fields = ["lookup_key", "name", "active"]


@resource_schema
class PlanViewSet(CreatableResourceViewSet):
    queryset = Plan.objects.prefetch_related("prices__tiers")
    serializer_class = PlanSerializer
    filterset_class = PlanFilter
    search_class = PlanSearchSerializer
    create_serializer_class = PlanCreateSerializer
    create_service = staticmethod(plan_create)


# Entitlements

MAX_USAGE_LIMIT = 2**63 - 1

ENTITLEMENT_EXAMPLE = {
    "id": "ent_01JD7X8Y9ZK2M3N4P5Q6R7S8T9",
    "entity_type": "PLAN",
    "entity_id": PRICE_EXAMPLE["entity_id"],
    "plan_id": PRICE_EXAMPLE["entity_id"],
    "feature_id": FEATURE_EXAMPLE["id"],
    "feature_type": "metered",
    "is_enabled": True,
    "usage_limit": 1000000,
    "usage_reset_period": "MONTHLY",
    "is_soft_limit": False,
    "static_value": "",
    "status": "published",
    "created_at": "2026-11-27T10:00:00Z",
    "updated_at": "2026-11-27T10:00:00Z",
}


@extend_schema_serializer(
    examples=[OpenApiExample("1M tokens a month", value=ENTITLEMENT_EXAMPLE, response_only=True)]
)
class EntitlementSerializer(serializers.ModelSerializer):
    entity_type = Constant("PLAN")
    entity_id = serializers.CharField(source="plan_id")
    usage_reset_period = serializers.SerializerMethodField()

    class Meta:
        model = Entitlement
        fields = ["id", "entity_type", "entity_id", "plan_id", "feature_id", "feature_type"]
        fields += ["is_enabled", "usage_limit", "usage_reset_period", "is_soft_limit"]
        fields += ["static_value", "status", "created_at", "updated_at"]
        read_only_fields = fields

    def get_usage_reset_period(self, entitlement) -> str | None:
        """Empty (null on the wire) follows the subscription's billing period."""
        return entitlement.usage_reset_period or None


class EntitlementTermsSerializer(Body):
    """Flexprice's UpdateEntitlementRequest: the terms Tally implements."""

    is_enabled = serializers.BooleanField(required=False)
    usage_limit = serializers.IntegerField(
        required=False, allow_null=True, min_value=0, max_value=MAX_USAGE_LIMIT
    )
    usage_reset_period = serializers.ChoiceField(
        Entitlement.ResetPeriod.choices, required=False, allow_null=True
    )
    is_soft_limit = serializers.BooleanField(required=False)
    static_value = _text(max_length=255)

    def validate_usage_reset_period(self, value):
        return value or ""


@extend_schema_serializer(
    examples=[
        OpenApiExample(
            "1M tokens a month",
            value={
                "entity_type": "PLAN",
                "entity_id": PRICE_EXAMPLE["entity_id"],
                "feature_id": FEATURE_EXAMPLE["id"],
                "feature_type": "metered",
                "usage_limit": 1000000,
                "usage_reset_period": "MONTHLY",
            },
            request_only=True,
        )
    ]
)
class EntitlementCreateSerializer(EntitlementTermsSerializer):
    """Flexprice's CreateEntitlementRequest; ``plan_id`` is accepted for ``entity_id``."""

    entity_type = serializers.ChoiceField(["PLAN"], required=False)
    entity_id = ExistingId(Plan, required=False)
    plan_id = ExistingId(Plan, required=False)
    feature_id = ExistingId(Feature)
    feature_type = serializers.ChoiceField(Feature.Type.choices)

    def validate(self, attrs):
        """The keyword arguments of ``entitlement_create``."""
        plan = attrs.pop("entity_id", None) or attrs.pop("plan_id", None)
        attrs.pop("plan_id", None)
        attrs.pop("entity_type", None)
        if plan is None:
            raise serializers.ValidationError({"entity_id": ["This field is required."]})
        feature = attrs.pop("feature_id")
        return {**attrs, "plan": plan, "feature": feature}


class EntitlementBulkSerializer(Body):
    items = EntitlementCreateSerializer(many=True, allow_empty=False, max_length=100)


class EntitlementSearchSerializer(SearchRequest):
    feature_ids = Ids(required=False)
    plan_ids = Ids(required=False)
    entity_ids = Ids(required=False)
    feature_type = serializers.ChoiceField(Feature.Type.choices, required=False)
    is_enabled = serializers.BooleanField(required=False)
    status = serializers.ChoiceField(Entitlement.Status.choices, required=False)

    lookups = {
        "feature_ids": "feature_id__in",
        "plan_ids": "plan_id__in",
        "entity_ids": "plan_id__in",
        "feature_type": "feature_type",
        "is_enabled": "is_enabled",
        "status": "status",
    }


class EntitlementFilter(django_filters.FilterSet):
    plan_id = django_filters.CharFilter()
    feature_id = django_filters.CharFilter()

    class Meta:
        model = Entitlement
        fields = ["plan_id", "feature_id", "feature_type", "is_enabled", "status"]


ENTITLEMENT_ERROR_NAMES = {"plan": "entity_id", "feature": "feature_id"}


@resource_schema
class EntitlementViewSet(CreatableResourceViewSet):
    """``/v1/entitlements``. DELETE archives: subscribers lose the entitlement at once."""

    queryset = Entitlement.objects.all()
    serializer_class = EntitlementSerializer
    filterset_class = EntitlementFilter
    search_class = EntitlementSearchSerializer
    create_serializer_class = EntitlementCreateSerializer
    create_service = staticmethod(entitlement_create)
    error_names = ENTITLEMENT_ERROR_NAMES

    @extend_schema(
        description="Creates up to 100 entitlements, all or none.",
        request=EntitlementBulkSerializer,
        examples=[
            OpenApiExample(
                "Created",
                value={"items": [ENTITLEMENT_EXAMPLE]},
                response_only=True,
                status_codes=["201"],
            )
        ],
        responses={
            201: inline_serializer(
                name="EntitlementBulkResult", fields={"items": EntitlementSerializer(many=True)}
            )
        },
    )
    @action(detail=False, methods=["post"], url_path="bulk", filter_backends=[])
    def bulk(self, request):
        body = EntitlementBulkSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        created = entitlements_create(items=body.validated_data["items"])
        rows = Entitlement.objects.filter(pk__in=[e.pk for e in created])
        return Response({"items": self.output(rows, many=True)}, status=status.HTTP_201_CREATED)

    @extend_schema(
        description="Changes an entitlement's terms; subscribers see them within a second.",
        request=EntitlementTermsSerializer,
        responses={200: EntitlementSerializer},
    )
    def update(self, request, pk):
        entitlement = self.get_object()
        body = EntitlementTermsSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        entitlement_update(entitlement=entitlement, **body.validated_data)
        return Response(self.output(self.get_object()))

    @extend_schema(
        description="Archives the entitlement: subscribers lose it at once.",
        request=None,
        responses={200: MessageSerializer},
        examples=[OpenApiExample("Archived", value={"message": "entitlement archived"})],
    )
    def destroy(self, request, pk):
        entitlement = self.get_object()
        NoBody(data=request.data or {}).is_valid(raise_exception=True)
        entitlement_archive(entitlement=entitlement)
        return Response({"message": "entitlement archived"})


class PlanEntitlementsView(APIView):
    """A plan's published entitlements."""

    @extend_schema(
        responses=page_of(EntitlementSerializer),
        examples=page_examples("1M tokens a month", ENTITLEMENT_EXAMPLE),
    )
    def get(self, request, pk):
        plan = get_object_or_404(Plan, pk=pk)
        rows = plan.entitlements.filter(status=Entitlement.Status.PUBLISHED)
        items = EntitlementSerializer(rows, many=True).data
        return Response(one_page(items))
