"""Generic resource endpoints in Flexprice's shape: create, GET list, POST search, get.

A resource module declares serializers and a service; a ViewSet here does the HTTP part.
"""

import functools
import json
from decimal import Decimal

from django.urls import register_converter
from django.urls.converters import StringConverter
from drf_spectacular.utils import (
    OpenApiExample,
    OpenApiResponse,
    extend_schema,
    extend_schema_field,
    extend_schema_view,
    inline_serializer,
)
from rest_framework import serializers, status, viewsets
from rest_framework.decorators import action
from rest_framework.response import Response

from config.api import Pagination
from config.bounds import MAX_LIMIT, MAX_OFFSET, CanonicalDecimal


class PathId(StringConverter):
    """``<id:pk>``: one path segment without NUL, which PostgreSQL refuses in a query."""

    regex = "[^/\x00]+"


register_converter(PathId, "id")


DECIMAL_PATTERN = r"^-?[0-9]+(\.[0-9]+)?$"
DECIMAL_SCHEMA = {"type": "string", "pattern": DECIMAL_PATTERN, "example": "12.50"}


@extend_schema_field(DECIMAL_SCHEMA)
class Amount(CanonicalDecimal):
    """A decimal of any size as a plain string: "15", never "15.000000000000" or "1.5E+1".

    Input may be a string or a JSON number; precision limits are the model's to check.
    """

    def __init__(self, **kwargs):
        super().__init__(max_digits=None, decimal_places=None, **kwargs)

    def to_representation(self, value):
        return format(Decimal(value).normalize(), "f")


METADATA_SCHEMA = {"type": "object", "additionalProperties": {"type": "string"}}


@extend_schema_field(METADATA_SCHEMA)
class Metadata(serializers.DictField):
    """``{str: str}``. The SDK refuses other values, so whatever is stored goes out as text."""

    child = serializers.CharField(allow_blank=True)

    def to_internal_value(self, data):
        data = super().to_internal_value(data)
        if any("\x00" in key for key in data):
            raise serializers.ValidationError("Keys must not contain null characters.")
        return data

    def to_representation(self, value):
        if not isinstance(value, dict):
            return {}
        return {str(k): v if isinstance(v, str) else json.dumps(v) for k, v in value.items()}


class Constant(serializers.ReadOnlyField):
    """A wire field Tally always answers the same way, such as ``"status": "published"``.

    The schema names the one value; ``schema`` overrides it, e.g. for ``{}``.
    """

    def __init__(self, value, schema=None, **kwargs):
        self.value = value
        self._spectacular_annotation = {"field": schema or {"type": "string", "enum": [value]}}
        super().__init__(source="*", **kwargs)

    def to_representation(self, instance):
        return self.value


class ExistingId(serializers.PrimaryKeyRelatedField):
    """The id of an existing ``model`` row; the field answers the row itself."""

    def __init__(self, model, **kwargs):
        name = model._meta.verbose_name
        kwargs.setdefault(
            "error_messages", {"does_not_exist": f"No {name} has the id {{pk_value}}."}
        )
        super().__init__(queryset=model.objects.all(), **kwargs)

    def to_internal_value(self, data):
        if isinstance(data, str) and "\x00" in data:
            self.fail("does_not_exist", pk_value=data)
        return super().to_internal_value(data)


class Ids(serializers.ListField):
    child = serializers.CharField()


class Body(serializers.Serializer):
    """A request body that refuses a field Tally does not implement, naming it: accepted
    and ignored, a field like ``filter_values`` would silently bill the wrong amount."""

    def to_internal_value(self, data):
        if isinstance(data, dict):
            unknown = sorted(set(data) - set(self.fields))
            if unknown:
                raise serializers.ValidationError(
                    {name: ["Tally does not implement this field."] for name in unknown}
                )
        return super().to_internal_value(data)


class NoBody(Body):
    """A DELETE takes no options."""


class MessageSerializer(serializers.Serializer):
    message = serializers.CharField()


class SearchRequest(serializers.Serializer):
    """A ``POST /<resource>/search`` body: paging, and filters that subclasses declare.

    ``lookups`` maps each filter to an ORM lookup; filters that are sent are ANDed.
    Flexprice's other keys (sort, order, status, expand...) are accepted and ignored.
    """

    limit = serializers.IntegerField(required=False, min_value=1, max_value=MAX_LIMIT)
    offset = serializers.IntegerField(required=False, min_value=0, max_value=MAX_OFFSET)

    lookups: dict[str, str] = {}

    def filter(self, queryset):
        for name, lookup in self.lookups.items():
            if name in self.validated_data:
                queryset = queryset.filter(**{lookup: self.validated_data[name]})
        return queryset


class BodyPagination(Pagination):
    """Limit and offset from the view's validated search body, not the query string."""

    def paginate_queryset(self, queryset, request, view=None):
        self.body = view.search_body.validated_data
        return super().paginate_queryset(queryset, request, view)

    def get_limit(self, request):
        return min(self.body.get("limit", self.default_limit), self.max_limit)

    def get_offset(self, request):
        return self.body.get("offset", 0)


class PageInfo(serializers.Serializer):
    total = serializers.IntegerField()
    limit = serializers.IntegerField()
    offset = serializers.IntegerField()


PAGE_INFO_EXAMPLE = {"total": 1, "limit": 50, "offset": 0}


def one_page(items: list) -> dict:
    """Every row in one page, as Flexprice answers its unpaged lists."""
    return {"items": items, "pagination": {"total": len(items), "limit": len(items), "offset": 0}}


def page_examples(name: str, example: dict) -> list[OpenApiExample]:
    return [OpenApiExample(name, value={"items": [example], "pagination": PAGE_INFO_EXAMPLE})]


class ListPagination(Pagination):
    """The query-string list's paging, with its schema complete enough to carry examples."""

    def get_paginated_response_schema(self, schema):
        page = super().get_paginated_response_schema(schema)
        info = page["properties"]["pagination"]
        for name, value in PAGE_INFO_EXAMPLE.items():
            info["properties"][name]["example"] = value
        info["required"] = list(PAGE_INFO_EXAMPLE)
        page["required"] = ["items", "pagination"]
        return page


@functools.cache
def page_of(serializer_class) -> serializers.Serializer:
    """The schema of ``{"items": [...], "pagination": {...}}``, one component per class."""
    name = serializer_class.__name__.removesuffix("Serializer")
    return inline_serializer(
        name=f"{name}Page", fields={"items": serializer_class(many=True), "pagination": PageInfo()}
    )


class ResourceViewSet(viewsets.ReadOnlyModelViewSet):
    """``GET /<resource>`` (a django-filter list), ``GET /<resource>/{id}`` and
    ``POST /<resource>/search`` (the SDK's list, filtered and paged by a JSON body).

    A subclass declares ``queryset``, ``serializer_class``, ``filterset_class`` and
    ``search_class``, and is decorated with ``resource_schema``.
    """

    lookup_value_converter = "id"
    pagination_class = ListPagination
    search_class: type[SearchRequest]

    def get_serializer_class(self):
        if self.action == "search":
            return self.search_class
        if self.action == "create":
            return self.create_serializer_class
        return self.serializer_class

    def output(self, rows, **kwargs):
        return self.serializer_class(rows, context=self.get_serializer_context(), **kwargs).data

    @action(detail=False, methods=["post"], url_path="search", filter_backends=[])
    def search(self, request):
        self.search_body = self.search_class(data=request.data)
        self.search_body.is_valid(raise_exception=True)
        paginator = BodyPagination()
        queryset = self.search_body.filter(self.get_queryset())
        page = paginator.paginate_queryset(queryset, request, view=self)
        return paginator.get_paginated_response(self.output(page, many=True))


class CreatableResourceViewSet(ResourceViewSet):
    """A resource that also answers ``POST /<resource>``: the body is parsed with
    ``create_serializer_class``, whose validated data are the keyword arguments of
    ``create_service``; the answer is 201 and the created row. ``error_names`` maps the
    service's field names to the body's."""

    create_serializer_class: type[serializers.Serializer]
    create_service = None  # staticmethod(a_service)
    error_names: dict[str, str] = {}

    def create(self, request):
        body = self.create_serializer_class(data=request.data)
        body.is_valid(raise_exception=True)
        created = self.create_service(**body.validated_data)
        return Response(
            self.output(self.get_queryset().get(pk=created.pk)), status=status.HTTP_201_CREATED
        )


def resource_schema(viewset):
    """Documents a ``ResourceViewSet`` subclass: its bodies come from its serializers."""
    serializer = viewset.serializer_class
    name = viewset.queryset.model._meta.verbose_name
    page_examples = [
        OpenApiExample(
            example.name, value={"items": [example.value], "pagination": PAGE_INFO_EXAMPLE}
        )
        for example in getattr(serializer, "_spectacular_annotation", {}).get("examples", [])
    ]
    schemas = {
        "list": extend_schema(description=f"The {name}s, filtered by the query string."),
        "retrieve": extend_schema(description=f"One {name}, by id."),
        "search": extend_schema(
            description=f"The {name}s, filtered and paged by a JSON body.",
            request=viewset.search_class,
            responses=OpenApiResponse(page_of(serializer), examples=page_examples),
        ),
    }
    if hasattr(viewset, "create"):
        schemas["create"] = extend_schema(
            description=f"Creates a {name}.",
            request=viewset.create_serializer_class,
            responses={201: serializer},
        )
    return extend_schema_view(**schemas)(viewset)
