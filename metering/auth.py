import time
from datetime import timedelta

from django.contrib.auth.models import AnonymousUser
from django.utils import timezone
from drf_spectacular.extensions import OpenApiAuthenticationExtension
from rest_framework import exceptions
from rest_framework.authentication import BaseAuthentication
from rest_framework.permissions import BasePermission

from metering.models import ApiKey
from metering.selectors import api_key_by_hash

TOUCH_EVERY = timedelta(minutes=1)
# A key revoked in another process stops working here within this long.
KEY_RECHECK_SECONDS = 5.0
_keys: dict[str, tuple[float, ApiKey]] = {}


def api_key_seen(raw: str) -> ApiKey | None:
    """The active key with this secret if this process checked it lately; no query."""
    seen = _keys.get(ApiKey.hash(raw))
    if seen is not None and time.monotonic() - seen[0] < KEY_RECHECK_SECONDS:
        return seen[1]
    return None


def api_key_active(raw: str) -> ApiKey | None:
    """The active key with this secret, from a per-process cache of keys seen lately."""
    seen = api_key_seen(raw)
    if seen is not None:
        return seen
    hashed = ApiKey.hash(raw)
    key = api_key_by_hash(hashed)
    if key is None or not key.is_active:
        _keys.pop(hashed, None)
        return None
    _keys[hashed] = (time.monotonic(), key)
    return key


def api_keys_forget(**kwargs) -> None:
    _keys.clear()


class ApiKeyAuthentication(BaseAuthentication):
    """``x-api-key: <key>``. A missing, unknown or revoked key is a 401."""

    def authenticate(self, request):
        raw = request.headers.get("x-api-key")
        if not raw:
            raise exceptions.NotAuthenticated("Send your API key in the x-api-key header.")
        key = api_key_active(raw)
        if key is None:
            raise exceptions.AuthenticationFailed("The API key is not valid or has been revoked.")
        now = timezone.now()
        if key.last_used_at is None or now - key.last_used_at > TOUCH_EVERY:
            # Throttled, so ingestion does not write a row per request.
            ApiKey.objects.filter(pk=key.pk).update(last_used_at=now)
            key.last_used_at = now
        return AnonymousUser(), key

    def authenticate_header(self, request):
        return "x-api-key"


class HasApiKey(BasePermission):
    def has_permission(self, request, view):
        return request.auth is not None


class ApiKeyScheme(OpenApiAuthenticationExtension):
    """The x-api-key header in the OpenAPI schema."""

    target_class = ApiKeyAuthentication
    name = "ApiKeyAuth"

    def get_security_definition(self, auto_schema):
        return {"type": "apiKey", "in": "header", "name": "x-api-key"}
