"""Generic resource endpoints in Flexprice's shape: create, GET list, POST search, get.

A resource module declares serializers and a service; these classes do the HTTP part.
"""

import functools
import json
from decimal import Decimal

from django.urls import register_converter
from django.urls.converters import StringConverter
from drf_spectacular.utils import (
    extend_schema,
    extend_schema_field,
    extend_schema_view,
    inline_serializer,
)
from rest_framework import generics, serializers, status
from rest_framework.response import Response

from config.api import Pagination
from config.bounds import MAX_LIMIT, MAX_OFFSET, CanonicalDecimal


class PathId(StringConverter):
    """``<id:pk>``: one path segment without NUL, which PostgreSQL refuses in a query."""

    regex = "[^/\x00]+"


register_converter(PathId, "id")


class Amount(CanonicalDecimal):
    """A decimal of any size as a plain string: "15", never "15.000000000000" or "1.5E+1".

    Input may be a string or a JSON number; precision limits are the model's to check.
    """

    def __init__(self, **kwargs):
        super().__init__(max_digits=None, decimal_places=None, **kwargs)

    def to_representation(self, value):
        return format(Decimal(value).normalize(), "f")


@extend_schema_field({"type": "object", "additionalProperties": {"type": "string"}})
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


@extend_schema_field(str)
class Constant(serializers.ReadOnlyField):
    """A wire field Tally always answers the same way, such as ``"status": "published"``."""

    def __init__(self, value, **kwargs):
        self.value = value
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
        self.body = view.search.validated_data
        return super().paginate_queryset(queryset, request, view)

    def get_limit(self, request):
        return min(self.body.get("limit", self.default_limit), self.max_limit)

    def get_offset(self, request):
        return self.body.get("offset", 0)


class PageInfo(serializers.Serializer):
    total = serializers.IntegerField()
    limit = serializers.IntegerField()
    offset = serializers.IntegerField()


@functools.cache
def page_of(serializer_class) -> serializers.Serializer:
    """The schema of ``{"items": [...], "pagination": {...}}``, one component per class."""
    name = serializer_class.__name__.removesuffix("Serializer")
    return inline_serializer(
        name=f"{name}Page", fields={"items": serializer_class(many=True), "pagination": PageInfo()}
    )


class ListCreateView(generics.ListAPIView):
    """GET: a django-filter list. POST: parse with ``create_serializer_class``, whose
    validated data are the keyword arguments of ``create_service``; answer 201."""

    create_serializer_class: type[serializers.Serializer]
    create_service = None  # staticmethod(a_service)

    def post(self, request):
        body = self.create_serializer_class(data=request.data)
        body.is_valid(raise_exception=True)
        created = self.create_service(**body.validated_data)
        output = self.get_serializer(self.get_queryset().get(pk=created.pk))
        return Response(output.data, status=status.HTTP_201_CREATED)


class SearchView(generics.GenericAPIView):
    """POST: the SDK's list, filtered and paged by a JSON body (``search_class``)."""

    search_class: type[SearchRequest]
    pagination_class = BodyPagination
    filter_backends = []

    def post(self, request):
        self.search = self.search_class(data=request.data)
        self.search.is_valid(raise_exception=True)
        page = self.paginate_queryset(self.search.filter(self.get_queryset()))
        return self.get_paginated_response(self.get_serializer(page, many=True).data)


def resource_views(
    *,
    name: str,
    queryset,
    serializer_class,
    filterset_class,
    search_class: type[SearchRequest],
    create_serializer_class=None,
    create_service=None,
    error_names: dict | None = None,
):
    """The list (with create when there is a service), search and detail views of one
    resource, each in Flexprice's shape."""
    shared = {"queryset": queryset, "serializer_class": serializer_class}
    listing = {**shared, "filterset_class": filterset_class}
    if create_service is None:
        list_view = type(f"{name}ListView", (generics.ListAPIView,), listing)
    else:
        listing.update(
            create_serializer_class=create_serializer_class,
            create_service=staticmethod(create_service),
            error_names=error_names or {},
        )
        list_view = extend_schema_view(
            post=extend_schema(request=create_serializer_class, responses={201: serializer_class})
        )(type(f"{name}ListView", (ListCreateView,), listing))
    search_view = extend_schema_view(
        post=extend_schema(request=search_class, responses=page_of(serializer_class))
    )(type(f"{name}SearchView", (SearchView,), {**shared, "search_class": search_class}))
    detail_view = type(f"{name}DetailView", (generics.RetrieveAPIView,), shared)
    return list_view, search_view, detail_view
