"""Brute-force limits: sign-in lockout (django-axes) and a request rate per API key."""

import time

from axes.backends import AxesStandaloneBackend
from django.conf import settings
from django.core.cache import cache
from rest_framework.throttling import BaseThrottle


class LoginLockoutBackend(AxesStandaloneBackend):
    """Axes' check on every sign-in form (admin and portal: both pass the request).

    A call without a request (``Client.login`` in tests, a shell) is not a sign-in form, so
    it is left to the next backend rather than refused."""

    def authenticate(self, request, username=None, password=None, **kwargs):
        if request is None:
            return None
        return super().authenticate(request, username=username, password=password, **kwargs)


def login_username(request, credentials) -> str:
    """The portal signs in by email, whatever its case; count failures the same way."""
    username = (credentials or {}).get("username")
    if username is None and request is not None:
        username = request.POST.get("username")
    return (username or "").strip().lower()


def parse_rate(rate: str) -> tuple[int, int] | None:
    """``"100000/min"`` → (100000, 60); ``"off"`` or empty → None (no limit)."""
    rate = (rate or "").strip().lower()
    if rate in ("", "off", "none"):
        return None
    count, _, period = rate.partition("/")
    seconds = {"s": 1, "m": 60, "h": 3600, "d": 86400}.get(period[:1])
    if not count.isdigit() or int(count) < 1 or seconds is None:
        raise ValueError(f"TALLY_API_RATE {rate!r} is not like 100000/min, 50/s or off")
    return int(count), seconds


class ApiKeyRateThrottle(BaseThrottle):
    """At most ``TALLY_API_RATE`` requests per API key per window (second, minute, hour or
    day), counted in the shared cache; beyond it a 429 with Retry-After.

    A fixed window costs one cache increment per request, whatever the rate; DRF's sliding
    window keeps every request's time and would grow to the rate itself."""

    def allow_request(self, request, view):
        rate = parse_rate(settings.TALLY_API_RATE)
        key = getattr(request, "auth", None)
        if rate is None or key is None:
            return True
        count, seconds = rate
        now = time.time()
        window = int(now // seconds)
        cache_key = f"tally:rate:{key.pk}:{seconds}:{window}"
        if cache.add(cache_key, 1, timeout=seconds + 1):
            used = 1
        else:
            try:
                used = cache.incr(cache_key)
            except ValueError:  # expired between the two calls
                cache.set(cache_key, 1, timeout=seconds + 1)
                used = 1
        self.retry_after = (window + 1) * seconds - now
        return used <= count

    def wait(self):
        return self.retry_after
