"""Customers under /v1/customers, in Flexprice's wire format."""

import django_filters
from django_countries import countries
from drf_spectacular.utils import OpenApiExample, extend_schema_serializer
from rest_framework import generics, serializers

from config.resources import (
    Body,
    Constant,
    CreatableResourceViewSet,
    Ids,
    Metadata,
    SearchRequest,
    resource_schema,
)
from metering.models import Customer
from metering.services import customer_create

CUSTOMER_EXAMPLE = {
    "id": "cust_01JD7X8Y9ZK2M3N4P5Q6R7S8T9",
    "external_id": "user_42",
    "name": "Acme Inc",
    "email": "billing@acme.test",
    "address_line1": "1 Market St",
    "address_line2": "Suite 300",
    "address_city": "San Francisco",
    "address_state": "CA",
    "address_postal_code": "94105",
    "address_country": "US",
    "metadata": {"segment": "startup"},
    "status": "published",
    "created_at": "2026-11-27T10:00:00Z",
    "updated_at": "2026-11-27T10:00:00Z",
}


ADDRESS = [
    "address_line1",
    "address_line2",
    "address_city",
    "address_state",
    "address_postal_code",
    "address_country",
]


@extend_schema_serializer(
    examples=[OpenApiExample("A customer", value=CUSTOMER_EXAMPLE, response_only=True)]
)
class CustomerSerializer(serializers.ModelSerializer):
    email = serializers.CharField(help_text="An email address, or empty when none was given.")
    address_country = serializers.CharField(help_text="ISO 3166-1 alpha-2, or empty.")
    metadata = Metadata()
    status = Constant("published")

    class Meta:
        model = Customer
        fields = ["id", "external_id", "name", "email", *ADDRESS, "metadata", "status"]
        fields += ["created_at", "updated_at"]
        read_only_fields = fields


@extend_schema_serializer(
    examples=[
        OpenApiExample(
            "A customer",
            value={"external_id": "user_42", "name": "Acme Inc", "email": "billing@acme.test"},
            request_only=True,
        )
    ]
)
class CustomerCreateSerializer(Body):
    external_id = serializers.CharField(allow_blank=True)
    name = serializers.CharField(allow_blank=True)
    email = serializers.CharField(required=False, allow_blank=True)
    # Flexprice's bounds; the model checks them again.
    address_line1 = serializers.CharField(required=False, allow_blank=True, max_length=255)
    address_line2 = serializers.CharField(required=False, allow_blank=True, max_length=255)
    address_city = serializers.CharField(required=False, allow_blank=True, max_length=100)
    address_state = serializers.CharField(required=False, allow_blank=True, max_length=100)
    address_postal_code = serializers.CharField(required=False, allow_blank=True, max_length=20)
    address_country = serializers.ChoiceField(
        [code for code, _ in countries],
        required=False,
        allow_blank=True,
        help_text="ISO 3166-1 alpha-2, in capitals: US, DE, IN.",
        error_messages={
            "invalid_choice": '"{input}" is not an ISO 3166-1 alpha-2 country code, e.g. US.'
        },
    )
    metadata = Metadata(required=False)


class CustomerSearchSerializer(SearchRequest):
    customer_ids = Ids(required=False)
    external_id = serializers.CharField(required=False)
    external_ids = Ids(required=False)
    email = serializers.CharField(required=False)

    lookups = {
        "customer_ids": "id__in",
        "external_id": "external_id",
        "external_ids": "external_id__in",
        "email": "email__iexact",
    }


class CustomerFilter(django_filters.FilterSet):
    external_id = django_filters.CharFilter()
    email = django_filters.CharFilter(lookup_expr="iexact")
    name = django_filters.CharFilter(lookup_expr="icontains")

    class Meta:
        model = Customer
        fields = ["external_id", "email", "name"]


@resource_schema
class CustomerViewSet(CreatableResourceViewSet):
    queryset = Customer.objects.all()
    serializer_class = CustomerSerializer
    filterset_class = CustomerFilter
    search_class = CustomerSearchSerializer
    create_serializer_class = CustomerCreateSerializer
    create_service = staticmethod(customer_create)


class CustomerByExternalIdView(generics.RetrieveAPIView):
    queryset = Customer.objects.all()
    serializer_class = CustomerSerializer
    lookup_field = "external_id"
