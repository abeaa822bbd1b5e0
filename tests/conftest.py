import json
import os
from pathlib import Path

import pytest

# The reference cases live in the steering repository's shared/ folder, beside the checkout
# (CI lays a copy there); tests load them from there rather than keep copies.
SCENARIOS = Path(
    os.environ.get("TALLY_SCENARIOS", Path(__file__).resolve().parents[2] / "shared" / "scenarios")
)


def scenario_or_none(name: str) -> dict | None:
    path = SCENARIOS / name
    return json.loads(path.read_text()) if path.exists() else None


def load_scenario(name: str) -> dict:
    """The reference scenario; a test that needs it skips (fails under CI) without it."""
    path = SCENARIOS / name
    if not path.exists():
        reason = f"the reference scenario {path} is not here (set TALLY_SCENARIOS)"
        if os.environ.get("CI"):
            pytest.fail(reason)
        pytest.skip(reason)
    return json.loads(path.read_text())


@pytest.fixture
def o1_scenario() -> dict:
    return load_scenario("openai_o1.json")


@pytest.fixture(autouse=True)
def eager_celery(request):
    """Unit tests run tasks in-process; integration tests use a real worker instead."""
    if request.node.get_closest_marker("integration"):
        yield
        return
    from config.celery import app

    previous = app.conf.task_always_eager
    app.conf.task_always_eager = True
    yield
    app.conf.task_always_eager = previous


@pytest.fixture(autouse=True)
def fresh_process_caches():
    """Each test starts as a fresh process would: no meters or API keys remembered from
    another test's (rolled back) data."""
    from metering.auth import api_keys_forget
    from metering.ingestion import meters_forget

    meters_forget()
    api_keys_forget()


@pytest.fixture
def o1_plan(db):
    """The o1 catalog of the demo data, its meters' rollups built."""
    from billing.demo import demo_catalog_load, scenario_load
    from metering.tasks import rollups_refresh

    plan = demo_catalog_load(scenario=scenario_load())
    rollups_refresh(settle_seconds=0)
    return plan


@pytest.fixture
def o1_subscriptions(o1_plan):
    """The demo data's customers on the o1 plan from an hour ago, each with a portal user
    (``acme@example.com`` / ``acme-demo``) and the scenario's events: acme's draft is
    $202.50, globex's $15.00. Built from factories, not the demo loader."""
    from datetime import timedelta

    from django.utils import timezone

    from billing.demo import scenario_load
    from billing.services import invoice_propose
    from tests.factories import CustomerFactory, CustomerUserFactory, SubscriptionFactory, ingest

    scenario = scenario_load()
    start = timezone.now() - timedelta(hours=1)
    subscriptions = {}
    for spec in scenario["customers"]:
        customer = CustomerFactory(external_id=spec["external_id"], name=spec["name"])
        CustomerUserFactory(customer=customer)
        subscriptions[customer.external_id] = SubscriptionFactory(
            customer=customer, plan=o1_plan, start_date=start
        )
    ingest(
        *(
            {
                "event_id": f"demo-{spec['event_id']}",
                "event_name": "tokens",
                "external_customer_id": spec["customer"],
                "timestamp": (start + timedelta(seconds=spec["period_offset_s"])).isoformat(),
                "properties": spec["properties"],
            }
            for spec in scenario["events"]
        )
    )
    for subscription in subscriptions.values():
        invoice_propose(subscription=subscription)
    return subscriptions


@pytest.fixture
def receiver():
    """A real HTTP receiver on 127.0.0.1 for webhooks (``tests/webhook_receiver.py``)."""
    from tests.webhook_receiver import Receiver

    started = Receiver().start()
    yield started
    started.stop()
