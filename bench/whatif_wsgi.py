"""What-if experiments, for profiling only: ``BENCH_APP=bench.whatif_wsgi``.

Each change is made in memory at import, so its gain can be measured before anyone changes
the app; none of them is a fix as written. Pick them with BENCH_WHATIF (comma-separated):

- ``no_usage_hook``: no ``usage_recorded`` receivers, so ingest runs no billing query on
  commit (stands for doing that lookup at most once a minute per customer, or in a task);
- ``lean_middleware``: only SecurityMiddleware and CommonMiddleware (the API needs no
  sessions, CSRF, messages, auth middleware or static files);
- ``server_binding``: DATABASES OPTIONS server_side_binding=True (psycopg sends parameters
  apart from the SQL, arrays in binary, instead of quoting them into the statement).
"""

import os

import django

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
django.setup()

from django.conf import settings  # noqa: E402
from django.core.handlers.wsgi import WSGIHandler  # noqa: E402

CHANGES = set(filter(None, os.environ.get("BENCH_WHATIF", "").split(",")))


def _no_usage_hook():
    from metering.signals import usage_recorded

    usage_recorded.receivers.clear()
    usage_recorded.sender_receivers_cache.clear()


if "no_usage_hook" in CHANGES:
    _no_usage_hook()
if "server_binding" in CHANGES:
    settings.DATABASES["default"].setdefault("OPTIONS", {})["server_side_binding"] = True
if "lean_middleware" in CHANGES:
    settings.MIDDLEWARE = [
        "django.middleware.security.SecurityMiddleware",
        "django.middleware.common.CommonMiddleware",
    ]
unknown = CHANGES - {"no_usage_hook", "lean_middleware", "server_binding"}
if unknown:
    raise SystemExit(f"BENCH_WHATIF: unknown change(s) {sorted(unknown)}")

application = WSGIHandler()
