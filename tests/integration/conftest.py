"""Real PostgreSQL, Redis and a real ``celery -A config worker`` process."""

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from datetime import timedelta
from decimal import Decimal
from pathlib import Path

import pytest
from django.conf import settings
from django.db import connection
from django.utils import timezone
from rest_framework.test import APIClient

from tests.factories import CustomerFactory, SubscriptionFactory

ROOT = Path(__file__).resolve().parents[2]


def require_services():
    if connection.vendor == "postgresql" and settings.CELERY_BROKER_URL.startswith("redis"):
        return
    reason = (
        "integration tests need DATABASE_URL=postgres://… and CELERY_BROKER_URL=redis://… "
        "(.ci/run sets both)"
    )
    if os.environ.get("CI"):
        pytest.fail(reason)
    pytest.skip(reason)


def _database_url() -> str:
    db = connection.settings_dict
    auth = db["USER"] + (f":{db['PASSWORD']}" if db["PASSWORD"] else "")
    return f"postgres://{auth}@{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 5432}/{db['NAME']}"


class Worker:
    """A Celery worker in its own process, on the test database."""

    def __init__(self):
        self.process = None
        self.name = f"itest-{uuid.uuid4().hex[:8]}@localhost"

    def start(self, *, visibility_timeout: int = 5):
        """``visibility_timeout``: seconds before a task held by a killed worker is
        delivered again (production's default is 60)."""
        env = {
            **os.environ,
            "DATABASE_URL": _database_url(),
            "CELERY_BROKER_URL": settings.CELERY_BROKER_URL,
            "CELERY_VISIBILITY_TIMEOUT": str(visibility_timeout),
            "DJANGO_CONN_MAX_AGE": "0",
        }
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "celery",
                "-A",
                "config",
                "worker",
                "--pool",
                "solo",
                "--loglevel",
                "WARNING",
                "--without-gossip",
                "--without-mingle",
                "-n",
                self.name,
            ],
            cwd=ROOT,
            env=env,
        )
        from config.celery import app

        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if app.control.ping(destination=[self.name], timeout=0.5):
                return self
            if self.process.poll() is not None:
                raise RuntimeError("the Celery worker exited while starting")
        raise RuntimeError("the Celery worker did not answer within 60 s")

    def kill(self):
        if self.process and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(timeout=30)

    def stop(self):
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.kill()


@pytest.fixture
def worker(transactional_db):
    require_services()
    from config.celery import app

    app.control.purge()
    from django.core.cache import cache

    cache.clear()
    started = Worker().start()
    yield started
    started.stop()
    app.control.purge()


def wait_for(check, *, timeout: float, interval: float = 0.1):
    """Poll ``check`` until it returns a truthy value; return it, or fail after ``timeout``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(interval)
    pytest.fail(f"gave up after {timeout} s waiting for {check.__name__}")


@pytest.fixture
def setup(worker):
    """The o1 plan, acme subscribed since an hour ago, and an API client."""
    from billing.demo import demo_catalog_load, scenario_load
    from metering.services import api_key_create
    from metering.tasks import rollups_refresh

    plan = demo_catalog_load(scenario=scenario_load())
    rollups_refresh(settle_seconds=0)
    customer = CustomerFactory(external_id="acme", name="Acme AI")
    subscription = SubscriptionFactory(
        customer=customer, plan=plan, start_date=timezone.now() - timedelta(hours=1)
    )
    _, raw = api_key_create(name="integration")
    client = APIClient()
    client.credentials(HTTP_X_API_KEY=raw)
    return client, subscription


def draft_total(subscription) -> Decimal:
    from billing.models import Invoice

    return Invoice.objects.get(subscription=subscription, invoice_status="DRAFT").total


def tokens(event_id: str, amount: int, prompt_type="input") -> dict:
    return {
        "event_id": event_id,
        "event_name": "tokens",
        "external_customer_id": "acme",
        "timestamp": (timezone.now() - timedelta(minutes=1)).isoformat(),
        "properties": {"model": "OpenAI O1", "prompt_type": prompt_type, "tokens": str(amount)},
    }


def post(client, path, body):
    return client.post(f"/v1/{path}", json.dumps(body), content_type="application/json")
