"""Alert settings and alert logs under /v1/alerts, in Flexprice's wire format.

Tally evaluates a subscription's spend (``entity_type: subscription``) and a feature's usage
on a subscription (``entity_type: feature`` with the subscription as parent); wallet alerts
are the wallet's own ``alert_settings``. Anything else is a 400 naming it.
"""

import django_filters
from django.db.models import Q
from drf_spectacular.utils import (
    OpenApiExample,
    OpenApiResponse,
    extend_schema,
    extend_schema_field,
    extend_schema_serializer,
)
from rest_framework import serializers, status
from rest_framework.response import Response
from rest_framework.views import APIView

from billing import alerts
from billing.models import AlertEntity, AlertLog, AlertSetting, AlertState, AlertType
from billing.wallet_api import AlertSettingsSerializer, AlertThresholdSerializer, NoBody
from config.bounds import Moment
from config.resources import (
    DECIMAL_SCHEMA,
    PAGE_INFO_EXAMPLE,
    Body,
    BodyPagination,
    Constant,
    CreatableResourceViewSet,
    Ids,
    SearchRequest,
    page_of,
    resource_schema,
)

RULE_ENTITIES = [AlertEntity.SUBSCRIPTION, AlertEntity.FEATURE]
NOT_EVALUATED = (
    'Tally evaluates "subscription" (its spend) and "feature" (its usage on a '
    'subscription) alerts; "{input}" is not one (wallet alerts are the wallet\'s '
    "alert_settings)."
)


class RuleThresholdSerializer(AlertThresholdSerializer):
    condition = serializers.ChoiceField(
        ["below", "above"], required=False, help_text="Default: above (spend and usage grow)."
    )


class RuleConfigSerializer(AlertSettingsSerializer):
    """Thresholds in the subscription's currency (spend) or the feature's units (usage)."""

    info = RuleThresholdSerializer(required=False, allow_null=True)
    warning = RuleThresholdSerializer(required=False, allow_null=True)
    critical = RuleThresholdSerializer(required=False, allow_null=True)


SETTING_EXAMPLE = {
    "id": "alert_01JD7X8Y9ZK2M3N4P5Q6R7S8T9",
    "entity_type": "subscription",
    "entity_id": "subs_01JD7X8Y9ZK2M3N4P5Q6R7S8T9",
    "parent_entity_type": "",
    "parent_entity_id": "",
    "config": {
        "alert_enabled": True,
        "alert_threshold_type": "absolute",
        "warning": {"threshold": "100", "condition": "above"},
        "critical": {"threshold": "250", "condition": "above"},
    },
    "enabled": True,
    "alert_state": "ok",
    "status": "published",
    "created_at": "2026-11-01T00:00:00Z",
    "updated_at": "2026-11-01T00:00:00Z",
}


@extend_schema_serializer(
    examples=[OpenApiExample("Spend alert", value=SETTING_EXAMPLE, response_only=True)]
)
class AlertSettingSerializer(serializers.ModelSerializer):
    entity_id = serializers.CharField()
    parent_entity_type = serializers.SerializerMethodField()
    parent_entity_id = serializers.CharField()
    config = RuleConfigSerializer()
    enabled = serializers.SerializerMethodField()
    status = Constant("published")

    class Meta:
        model = AlertSetting
        fields = [
            "id",
            "entity_type",
            "entity_id",
            "parent_entity_type",
            "parent_entity_id",
            "config",
            "enabled",
            "alert_state",
            "status",
            "created_at",
            "updated_at",
        ]
        read_only_fields = fields

    def get_parent_entity_type(self, setting) -> str:
        return AlertEntity.SUBSCRIPTION.value if setting.feature_id else ""

    def get_enabled(self, setting) -> bool:
        return bool(setting.config.get("alert_enabled"))


@extend_schema_serializer(
    examples=[
        OpenApiExample(
            "Warn above $100, critical above $250",
            value={
                "entity_type": "subscription",
                "entity_id": "subs_01JD7X8Y9ZK2M3N4P5Q6R7S8T9",
                "config": SETTING_EXAMPLE["config"],
            },
            request_only=True,
        )
    ]
)
class AlertSettingCreateSerializer(Body):
    entity_type = serializers.ChoiceField(
        RULE_ENTITIES, error_messages={"invalid_choice": NOT_EVALUATED}
    )
    entity_id = serializers.CharField(max_length=40)
    parent_entity_type = serializers.ChoiceField(
        [AlertEntity.SUBSCRIPTION],
        required=False,
        error_messages={"invalid_choice": 'A parent is a "subscription", not "{input}".'},
    )
    parent_entity_id = serializers.CharField(max_length=40, required=False)
    config = RuleConfigSerializer()

    def validate(self, data):
        data.pop("parent_entity_type", None)
        return data


class AlertSettingUpdateSerializer(Body):
    config = RuleConfigSerializer()


class AlertSettingFilter(django_filters.FilterSet):
    entity_type = django_filters.ChoiceFilter(choices=[(e, e) for e in RULE_ENTITIES])
    subscription_id = django_filters.CharFilter()

    class Meta:
        model = AlertSetting
        fields = ["entity_type", "subscription_id"]


def _entities(ids) -> Q:
    return Q(feature_id__in=ids) | Q(feature__isnull=True, subscription_id__in=ids)


class AlertSettingSearchSerializer(Body, SearchRequest):
    entity_type = serializers.ChoiceField(
        RULE_ENTITIES, required=False, error_messages={"invalid_choice": NOT_EVALUATED}
    )
    entity_id = serializers.CharField(required=False, max_length=40)
    entity_ids = Ids(required=False, max_length=1000)
    parent_entity_id = serializers.CharField(required=False, max_length=40)
    parent_entity_ids = Ids(required=False, max_length=1000)

    def filter(self, queryset):
        data = self.validated_data
        if "entity_type" in data:
            queryset = queryset.filter(entity_type=data["entity_type"])
        for ids in (data.get("entity_ids"), [data["entity_id"]] if "entity_id" in data else None):
            if ids is not None:
                queryset = queryset.filter(_entities(ids))
        for ids in (
            data.get("parent_entity_ids"),
            [data["parent_entity_id"]] if "parent_entity_id" in data else None,
        ):
            if ids is not None:
                queryset = queryset.filter(feature__isnull=False, subscription_id__in=ids)
        return queryset


@resource_schema
class AlertSettingViewSet(CreatableResourceViewSet):
    """``/v1/alerts/setting``: rules on a subscription's spend or a feature's usage."""

    queryset = AlertSetting.objects.all()
    serializer_class = AlertSettingSerializer
    filterset_class = AlertSettingFilter
    search_class = AlertSettingSearchSerializer
    create_serializer_class = AlertSettingCreateSerializer
    create_service = staticmethod(alerts.alert_setting_create)
    error_names = {"subscription": "entity_id", "feature": "entity_id"}

    @extend_schema(
        description="Replaces the rule's thresholds; it is evaluated again at once.",
        request=AlertSettingUpdateSerializer,
        responses={200: AlertSettingSerializer},
    )
    def update(self, request, pk):
        setting = self.get_object()
        body = AlertSettingUpdateSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        alerts.alert_setting_update(setting=setting, **body.validated_data)
        return Response(self.output(self.get_object()))

    @extend_schema(
        description="Deletes the rule; its log stays.", request=None, responses={204: None}
    )
    def destroy(self, request, pk):
        setting = self.get_object()
        NoBody(data=request.data or {}).is_valid(raise_exception=True)
        alerts.alert_setting_delete(setting=setting)
        return Response(status=status.HTTP_204_NO_CONTENT)


# The log.


class AlertInfoSerializer(serializers.Serializer):
    alert_settings = RuleConfigSerializer()
    value_at_time = serializers.SerializerMethodField(
        help_text="The watched value when the state changed: credits, currency or units."
    )
    timestamp = serializers.DateTimeField(source="created_at")

    @extend_schema_field(DECIMAL_SCHEMA)
    def get_value_at_time(self, log) -> str:
        return format(log.value.normalize(), "f")


LOG_EXAMPLE = {
    "id": "alog_01JD7X8Y9ZK2M3N4P5Q6R7S8T9",
    "customer_id": "cust_01JD7X8Y9ZK2M3N4P5Q6R7S8T9",
    "entity_type": "subscription",
    "entity_id": "subs_01JD7X8Y9ZK2M3N4P5Q6R7S8T9",
    "parent_entity_type": "",
    "parent_entity_id": "",
    "alert_type": "subscription_spend",
    "alert_status": "warning",
    "previous_status": "ok",
    "alert_info": {
        "alert_settings": SETTING_EXAMPLE["config"],
        "value_at_time": "112.5",
        "timestamp": "2026-11-27T10:00:00Z",
    },
    "status": "published",
    "created_at": "2026-11-27T10:00:00Z",
    "updated_at": "2026-11-27T10:00:00Z",
}


@extend_schema_serializer(
    examples=[OpenApiExample("Spend passed its warning", value=LOG_EXAMPLE, response_only=True)]
)
class AlertLogSerializer(serializers.ModelSerializer):
    alert_info = AlertInfoSerializer(source="*")
    status = Constant("published")
    updated_at = serializers.DateTimeField(source="created_at")

    class Meta:
        model = AlertLog
        fields = [
            "id",
            "customer_id",
            "entity_type",
            "entity_id",
            "parent_entity_type",
            "parent_entity_id",
            "alert_type",
            "alert_status",
            "previous_status",
            "alert_info",
            "status",
            "created_at",
            "updated_at",
        ]
        read_only_fields = fields


class AlertLogSearchSerializer(Body, SearchRequest):
    alert_status = serializers.ChoiceField(AlertState.choices, required=False)
    alert_type = serializers.ChoiceField(AlertType.choices, required=False)
    customer_id = serializers.CharField(required=False, max_length=40)
    entity_type = serializers.ChoiceField(AlertEntity.choices, required=False)
    entity_id = serializers.CharField(required=False, max_length=40)
    start_time = Moment(required=False, help_text="Changes at or after it.")
    end_time = Moment(required=False, help_text="Changes before it.")

    lookups = {
        "alert_status": "alert_status",
        "alert_type": "alert_type",
        "customer_id": "customer_id",
        "entity_type": "entity_type",
        "entity_id": "entity_id",
        "start_time": "created_at__gte",
        "end_time": "created_at__lt",
    }


class AlertLogSearchView(APIView):
    """``POST /v1/alerts/search``: the changes of alert state, newest first."""

    @extend_schema(
        request=AlertLogSearchSerializer,
        responses=OpenApiResponse(
            page_of(AlertLogSerializer),
            examples=[
                OpenApiExample(
                    "One change", value={"items": [LOG_EXAMPLE], "pagination": PAGE_INFO_EXAMPLE}
                )
            ],
        ),
    )
    def post(self, request):
        self.search_body = AlertLogSearchSerializer(data=request.data)
        self.search_body.is_valid(raise_exception=True)
        paginator = BodyPagination()
        rows = self.search_body.filter(AlertLog.objects.all())
        page = paginator.paginate_queryset(rows, request, view=self)
        return paginator.get_paginated_response(AlertLogSerializer(page, many=True).data)
