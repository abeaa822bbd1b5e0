"""The "may I?" check (``GET /v1/customers/usage``) and a customer's entitlements, on
Flexprice's wire (CustomerUsageSummaryResponse, CustomerEntitlementsResponse).

The check sits in the customer's request path, so its answer is kept, rendered, for up to
``SUMMARY_SECONDS`` per process: an event is reflected within that (plus one compute), and
``UsageCheckFastPath`` serves kept answers in front of Django."""

import threading
import time
from types import SimpleNamespace

from django.http import HttpResponse, QueryDict
from django.shortcuts import get_object_or_404
from django.utils import timezone
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiExample, OpenApiParameter, extend_schema
from rest_framework import exceptions, serializers
from rest_framework.renderers import JSONRenderer
from rest_framework.response import Response
from rest_framework.views import APIView

from billing.api import SUBSCRIPTION_EXAMPLE, SubscriptionSerializer
from billing.entitlements import (
    customer_by_key,
    customer_entitlements,
    customer_usage_summary,
    features_by_keys,
)
from catalog.api import FEATURE_EXAMPLE, FeatureSerializer
from config.resources import Amount
from config.security import ApiKeyRateThrottle
from metering.auth import api_key_seen
from metering.models import Customer

SUMMARY_SECONDS = 1.0
MAX_KEYS = 100
MAX_KEY_LENGTH = 255
MAX_CACHED = 10_000  # distinct queries kept per process
QUERY = ("customer_id", "customer_lookup_key", "feature_ids", "feature_lookup_keys")


class SourceSerializer(serializers.Serializer):
    """Flexprice's EntitlementSource: one subscription's entitlement to the feature."""

    entitlement_id = serializers.CharField(source="entitlement.pk")
    entity_type = serializers.SerializerMethodField()
    entity_id = serializers.CharField(source="entitlement.plan_id")
    entity_name = serializers.CharField(source="subscription.plan.name")
    subscription_id = serializers.CharField(source="subscription.pk")
    is_enabled = serializers.BooleanField(source="entitlement.is_enabled")
    usage_limit = serializers.IntegerField(source="entitlement.usage_limit", allow_null=True)
    usage_reset_period = serializers.SerializerMethodField()
    static_value = serializers.CharField(source="entitlement.static_value")

    def get_entity_type(self, source) -> str:
        return "plan"

    def get_usage_reset_period(self, source) -> str:
        return source.entitlement.usage_reset_period or source.subscription.billing_period


class AggregatedEntitlementSerializer(serializers.Serializer):
    is_enabled = serializers.BooleanField()
    usage_limit = serializers.IntegerField(source="total_limit", allow_null=True)
    is_soft_limit = serializers.BooleanField()
    usage_reset_period = serializers.SerializerMethodField()
    static_values = serializers.ListField(child=serializers.CharField())

    def get_usage_reset_period(self, entitled) -> str | None:
        sources = entitled.enabled
        return SourceSerializer().get_usage_reset_period(sources[0]) if sources else None


class AggregatedFeatureSerializer(serializers.Serializer):
    feature = FeatureSerializer()
    entitlement = AggregatedEntitlementSerializer(source="*")
    sources = SourceSerializer(many=True)


class CustomerEntitlementsSerializer(serializers.Serializer):
    customer_id = serializers.CharField()
    features = AggregatedFeatureSerializer(many=True)
    subscriptions = SubscriptionSerializer(many=True)


class FeatureUsageSerializer(serializers.Serializer):
    """Flexprice's FeatureUsageSummary, with Tally's ``allowed``, ``reason``, ``remaining``
    and ``wallet_real_time_balance``."""

    feature = FeatureSerializer(source="entitlement.feature")
    current_usage = Amount()
    total_limit = serializers.IntegerField(source="entitlement.total_limit", allow_null=True)
    usage_percent = Amount()
    is_enabled = serializers.BooleanField(source="entitlement.is_enabled")
    is_soft_limit = serializers.BooleanField(source="entitlement.is_soft_limit")
    is_unlimited = serializers.SerializerMethodField()
    next_usage_reset_at = serializers.DateTimeField(
        source="entitlement.next_usage_reset_at", allow_null=True
    )
    sources = SourceSerializer(source="entitlement.sources", many=True)
    allowed = serializers.BooleanField(help_text="Whether one more use is allowed now.")
    reason = serializers.ChoiceField(
        ["feature_disabled", "usage_limit_reached", "budget_capped", "wallet_empty"],
        source="denied",
        allow_null=True,
        help_text="Why it is not allowed; null when it is.",
    )
    remaining = Amount(allow_null=True, help_text="Left before the limit; null if unlimited.")
    wallet_real_time_balance = Amount(
        source="wallet.real_time_balance",
        allow_null=True,
        help_text="The real-time balance of the customer's wallet in the currency, if any.",
    )

    def get_is_unlimited(self, usage) -> bool:
        return usage.entitlement.is_enabled and usage.entitlement.total_limit is None


class PeriodSerializer(serializers.Serializer):
    start_time = serializers.DateTimeField(source="current_period_start")
    end_time = serializers.DateTimeField(source="current_period_end")
    period = serializers.CharField(source="billing_period")


class CustomerUsageSummarySerializer(serializers.Serializer):
    customer_id = serializers.CharField()
    features = FeatureUsageSerializer(many=True)
    period = PeriodSerializer(allow_null=True, help_text="The first subscription's period.")


USAGE_EXAMPLE = {
    "customer_id": "cust_01JD7X8Y9ZK2M3N4P5Q6R7S8T9",
    "features": [
        {
            "feature": FEATURE_EXAMPLE,
            "current_usage": "250000",
            "total_limit": 1000000,
            "usage_percent": "25",
            "is_enabled": True,
            "is_soft_limit": False,
            "is_unlimited": False,
            "next_usage_reset_at": "2026-12-01T00:00:00Z",
            "sources": [
                {
                    "entitlement_id": "ent_01JD7X8Y9ZK2M3N4P5Q6R7S8T9",
                    "entity_type": "plan",
                    "entity_id": SUBSCRIPTION_EXAMPLE["plan_id"],
                    "entity_name": "Pro",
                    "subscription_id": SUBSCRIPTION_EXAMPLE["id"],
                    "is_enabled": True,
                    "usage_limit": 1000000,
                    "usage_reset_period": "MONTHLY",
                    "static_value": "",
                }
            ],
            "allowed": True,
            "reason": None,
            "remaining": "750000",
            "wallet_real_time_balance": "42.50",
        }
    ],
    "period": {
        "start_time": "2026-11-01T00:00:00Z",
        "end_time": "2026-12-01T00:00:00Z",
        "period": "MONTHLY",
    },
}


ENTITLEMENTS_EXAMPLE = {
    "customer_id": USAGE_EXAMPLE["customer_id"],
    "features": [
        {
            "feature": FEATURE_EXAMPLE,
            "entitlement": {
                "is_enabled": True,
                "usage_limit": 1000000,
                "is_soft_limit": False,
                "usage_reset_period": "MONTHLY",
                "static_values": [],
            },
            "sources": USAGE_EXAMPLE["features"][0]["sources"],
        }
    ],
    "subscriptions": [SUBSCRIPTION_EXAMPLE],
}


def _keys(query, name: str) -> list[str]:
    """A list parameter, comma-joined (as the SDK sends it) or repeated; bounded."""
    values = [v for raw in query.getlist(name) for v in raw.split(",") if v]
    if len(values) > MAX_KEYS or any(len(v) > MAX_KEY_LENGTH or "\x00" in v for v in values):
        raise exceptions.ValidationError(
            {name: [f"At most {MAX_KEYS} keys of at most {MAX_KEY_LENGTH} characters."]}
        )
    return values


def usage_summary_body(query) -> bytes:
    """The rendered answer to one query string, computed afresh."""
    unknown = sorted(set(query) - set(QUERY))
    if unknown:
        raise exceptions.ValidationError(
            {name: ["Tally does not implement this parameter."] for name in unknown}
        )
    customer_id = query.get("customer_id", "")
    lookup_key = query.get("customer_lookup_key", "")
    if len(customer_id) > MAX_KEY_LENGTH or len(lookup_key) > MAX_KEY_LENGTH:
        raise exceptions.ValidationError({"customer_id": ["Too long."]})
    ids, lookup_keys = _keys(query, "feature_ids"), _keys(query, "feature_lookup_keys")
    customer = customer_by_key(customer_id=customer_id, lookup_key=lookup_key)
    features = None
    if ids or lookup_keys:
        features = features_by_keys(ids=ids, lookup_keys=lookup_keys)
    subscriptions, summary = customer_usage_summary(
        customer=customer, features=features, now=timezone.now()
    )
    data = CustomerUsageSummarySerializer(
        {
            "customer_id": customer.pk,
            "features": summary,
            "period": subscriptions[0] if subscriptions else None,
        }
    ).data
    return JSONRenderer().render(data)


class _Answer:
    __slots__ = ("at", "body", "refresh")

    def __init__(self, body: bytes):
        self.at, self.body, self.refresh = time.monotonic(), body, threading.Lock()


_answers: dict[tuple, _Answer] = {}


def _query_key(query) -> tuple:
    return tuple(sorted((k, tuple(query.getlist(k))) for k in query))


def answer_kept(key: tuple, *, refresh: bool = True) -> bytes | None:
    """The kept answer to serve as it is, or None when this caller must compute it: it is
    a second old, or half that and no other caller is refreshing it (so a busy key is
    refreshed by one request at a time, never by every thread at once). Without
    ``refresh`` the caller only looks: None where it would have refreshed."""
    kept = _answers.get(key)
    if kept is None:
        return None
    age = time.monotonic() - kept.at
    if age >= SUMMARY_SECONDS:
        return None
    if age >= SUMMARY_SECONDS / 2:
        if not refresh:
            return kept.body if kept.refresh.locked() else None
        if kept.refresh.acquire(blocking=False):
            return None
    return kept.body


def usage_summary_cached(query) -> bytes:
    """``usage_summary_body``, kept for at most ``SUMMARY_SECONDS`` in this process."""
    key = _query_key(query)
    body = answer_kept(key)
    if body is not None:
        return body
    try:
        body = usage_summary_body(query)
    except Exception:
        _answers.pop(key, None)
        raise
    if len(_answers) >= MAX_CACHED:
        _answers.clear()
    _answers[key] = _Answer(body)
    return body


def usage_summaries_forget(**kwargs) -> None:
    _answers.clear()


class UsageCheckFastPath:
    """WSGI middleware in front of Django: a check whose answer is kept, asked with a key
    this process checked lately and within its rate, is answered here, without Django's
    middleware, URL resolution or DRF (most of a kept answer's cost, by cProfile). Every
    other request, this path's misses and refusals included, goes to Django; the headers of
    Django's own answer to this path are reused, and only a Host it accepted is served here."""

    PATH = "/v1/customers/usage"
    SKIPPED = frozenset({"content-length", "set-cookie"})

    def __init__(self, app):
        self.app = app
        self.headers: list[tuple[str, str]] | None = None
        self.hosts: set[str] = set()  # that Django answered this path for (ALLOWED_HOSTS)

    def __call__(self, environ, start_response):
        if environ.get("PATH_INFO") != self.PATH or environ.get("REQUEST_METHOD") != "GET":
            return self.app(environ, start_response)
        host = environ.get("HTTP_HOST", "")
        if self.headers is not None and host in self.hosts:
            body = self._kept(environ)
            if body is not None:
                start_response("200 OK", [*self.headers, ("Content-Length", str(len(body)))])
                return [body]

        def learn(status, headers, exc_info=None):
            if status.startswith("200 "):
                self.headers = [(k, v) for k, v in headers if k.lower() not in self.SKIPPED]
                self.hosts.add(host)
            return start_response(status, headers, exc_info)

        return self.app(environ, learn)

    @staticmethod
    def _kept(environ) -> bytes | None:
        key = api_key_seen(environ.get("HTTP_X_API_KEY", ""))
        if key is None:
            return None
        query = QueryDict(environ.get("QUERY_STRING", ""))
        body = answer_kept(_query_key(query), refresh=False)
        # Counted once when served here; a refused one is counted again by Django's 429.
        if body is None or not ApiKeyRateThrottle().allow_request(SimpleNamespace(auth=key), None):
            return None
        return body


class CustomerUsageView(APIView):
    """``GET /v1/customers/usage``: may the customer use these features now, and how much
    have they used? Answers reflect usage and terms at most a second old."""

    @extend_schema(
        parameters=[
            OpenApiParameter("customer_id", OpenApiTypes.STR, description="Tally's id."),
            OpenApiParameter(
                "customer_lookup_key", OpenApiTypes.STR, description="The external id."
            ),
            OpenApiParameter(
                "feature_ids",
                OpenApiTypes.STR,
                description="Comma-separated; default every entitled feature.",
            ),
            OpenApiParameter(
                "feature_lookup_keys", OpenApiTypes.STR, description="Comma-separated."
            ),
        ],
        responses={200: CustomerUsageSummarySerializer},
        examples=[OpenApiExample("Within the limit", value=USAGE_EXAMPLE, response_only=True)],
    )
    def get(self, request):
        body = usage_summary_cached(request.query_params)
        return HttpResponse(body, content_type="application/json")


class CustomerEntitlementsView(APIView):
    """``GET /v1/customers/external/{external_id}/entitlements``."""

    @extend_schema(
        responses={200: CustomerEntitlementsSerializer},
        examples=[OpenApiExample("One plan", value=ENTITLEMENTS_EXAMPLE, response_only=True)],
    )
    def get(self, request, external_id):
        customer = get_object_or_404(Customer, external_id=external_id)
        subscriptions, features = customer_entitlements(customer=customer)
        data = {"customer_id": customer.pk, "features": features, "subscriptions": subscriptions}
        return Response(CustomerEntitlementsSerializer(data).data)
