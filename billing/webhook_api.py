"""``/v1/webhooks/endpoints``: a Tally extension (Flexprice's SDK manages no endpoints), in
the same list, error and id shapes as the rest of the API."""

import django_filters
from drf_spectacular.utils import OpenApiExample, extend_schema, extend_schema_serializer
from rest_framework import serializers, status, viewsets
from rest_framework.decorators import action
from rest_framework.response import Response

from billing import webhooks
from billing.api import MessageSerializer
from billing.models import EventType, WebhookEndpoint
from billing.wallet_api import NoBody
from config.resources import Body, ListPagination

ENDPOINT_EXAMPLE = {
    "id": "whep_01JF3Z8YQ3H6M2T9W5K7N4B1CD",
    "url": "https://example.com/tally/webhooks",
    "secret": "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
    "event_types": ["invoice.finalized", "wallet.balance_low"],
    "enabled": True,
    "description": "Finance alerts",
    "created_at": "2026-12-08T01:00:00Z",
    "updated_at": "2026-12-08T01:00:00Z",
}


class EventTypes(serializers.ListField):
    child = serializers.ChoiceField(choices=EventType.choices)

    def to_internal_value(self, data):
        return list(dict.fromkeys(super().to_internal_value(data)))  # once each, in order


@extend_schema_serializer(
    examples=[OpenApiExample("An endpoint", value=ENDPOINT_EXAMPLE, response_only=True)]
)
class WebhookEndpointSerializer(serializers.ModelSerializer):
    """``secret`` verifies the ``webhook-signature`` header (Standard Webhooks)."""

    event_types = EventTypes(help_text="The event types sent; empty means all.")

    class Meta:
        model = WebhookEndpoint
        fields = [
            "id",
            "url",
            "secret",
            "event_types",
            "enabled",
            "description",
            "created_at",
            "updated_at",
        ]


class WebhookEndpointUpdateSerializer(Body):
    url = serializers.URLField(max_length=2000, required=False)
    event_types = EventTypes(required=False, help_text="The event types sent; empty means all.")
    enabled = serializers.BooleanField(required=False)
    description = serializers.CharField(max_length=500, allow_blank=True, required=False)


class WebhookEndpointCreateSerializer(WebhookEndpointUpdateSerializer):
    url = serializers.URLField(max_length=2000, help_text="http or https.")


class WebhookEndpointFilter(django_filters.FilterSet):
    enabled = django_filters.TypedChoiceFilter(  # anything but true or false is a 400
        choices=[("true", "true"), ("false", "false")], coerce=lambda value: value == "true"
    )

    class Meta:
        model = WebhookEndpoint
        fields = ["enabled"]


class WebhookEndpointViewSet(viewsets.GenericViewSet):
    queryset = WebhookEndpoint.objects.all()
    serializer_class = WebhookEndpointSerializer
    lookup_value_converter = "id"
    pagination_class = ListPagination
    filterset_class = WebhookEndpointFilter

    def output(self, endpoint):
        return WebhookEndpointSerializer(endpoint).data

    @extend_schema(description="The webhook endpoints, newest first.")
    def list(self, request):
        page = self.paginate_queryset(self.filter_queryset(self.get_queryset()))
        return self.get_paginated_response(WebhookEndpointSerializer(page, many=True).data)

    @extend_schema(
        description="Registers an endpoint; its secret is generated and answered here.",
        request=WebhookEndpointCreateSerializer,
        responses={201: WebhookEndpointSerializer},
    )
    def create(self, request):
        body = WebhookEndpointCreateSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        endpoint = webhooks.webhook_endpoint_create(**body.validated_data)
        return Response(self.output(endpoint), status=status.HTTP_201_CREATED)

    @extend_schema(description="One endpoint, by id.")
    def retrieve(self, request, pk):
        return Response(self.output(self.get_object()))

    @extend_schema(
        description="Changes the fields sent; the others stay.",
        request=WebhookEndpointUpdateSerializer,
        responses={200: WebhookEndpointSerializer},
    )
    def update(self, request, pk):
        endpoint = self.get_object()
        body = WebhookEndpointUpdateSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        webhooks.webhook_endpoint_update(endpoint=endpoint, **body.validated_data)
        return Response(self.output(endpoint))

    @extend_schema(
        description="Deletes the endpoint with its deliveries' log.",
        request=None,
        responses={200: MessageSerializer},
        examples=[OpenApiExample("Deleted", value={"message": "webhook endpoint deleted"})],
    )
    def destroy(self, request, pk):
        endpoint = self.get_object()
        NoBody(data=request.data or {}).is_valid(raise_exception=True)
        endpoint.delete()
        return Response({"message": "webhook endpoint deleted"})

    @extend_schema(
        description="A new secret, used for every delivery from now on; the old one stops "
        "verifying at once.",
        request=None,
        responses={200: WebhookEndpointSerializer},
    )
    @action(detail=True, methods=["post"], url_path="rotate_secret")
    def rotate_secret(self, request, pk):
        endpoint = self.get_object()
        NoBody(data=request.data or {}).is_valid(raise_exception=True)
        endpoint = webhooks.webhook_endpoint_rotate_secret(endpoint=endpoint)
        return Response(self.output(endpoint))
