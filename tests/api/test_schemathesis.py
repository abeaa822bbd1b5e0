"""The schema tells the truth: schemathesis calls every operation of ``/v1/schema/`` on a
live server and checks each answer against it.

Bounded so it fits in ``make test``: a fixed seed, ``EXAMPLES`` valid and invalid cases per
operation, more valid ones with ids that exist, and a time budget shared by all of them.
Every finding is collected and printed, then the test fails.
"""

import logging
import time
from decimal import Decimal

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, Phase, given, seed, settings
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.errors import FailureGroup
from schemathesis.specs.openapi.checks import (
    response_schema_conformance,
    status_code_conformance,
)

from billing.alerts import alert_setting_create
from billing.credits import credit_grant_create
from billing.models import CreditGrant
from billing.services import invoice_finalize, invoice_propose
from billing.wallets import wallet_create
from billing.webhooks import webhook_endpoint_create
from catalog.models import Price
from catalog.services import entitlement_create
from metering.services import api_key_create
from tests.factories import PlanFactory, PriceFactory, PriceTierFactory, ingest, subscribe

SEED = 20261128
EXAMPLES = {GenerationMode.POSITIVE: 20, GenerationMode.NEGATIVE: 10}
BUDGET_SECONDS = 150
CHECKS = [not_a_server_error, response_schema_conformance, status_code_conformance]


def _seed() -> dict[str, str]:
    """Rows of every kind, so lists, details and actions answer with real bodies: a plan with
    a flat, a package and a tiered price, a subscriber with usage, and a finalized invoice.
    Returns, per path prefix, an id that exists."""
    plan = PlanFactory()
    PriceFactory(
        plan=plan,
        type=Price.Type.FIXED,
        billing_model=Price.BillingModel.FLAT_FEE,
        meter=None,
        divide_by=None,
        amount=Decimal("20"),
    )
    package = PriceFactory(plan=plan)
    tier = PriceTierFactory(price__plan=plan, up_to=Decimal("1000"))
    PriceTierFactory(price=tier.price, up_to=None, unit_amount=Decimal("0.5"))
    subscription = subscribe(plan)
    customer = subscription.customer
    ingest(
        {
            "event_name": "tokens",
            "external_customer_id": customer.external_id,
            "properties": {"tokens": "1500"},
        }
    )
    invoice = invoice_finalize(invoice=invoice_propose(subscription=subscription))
    wallet = wallet_create(customer=customer, currency="usd", initial_credits=Decimal(5))
    grant = credit_grant_create(
        name="Monthly", plan=plan, credits=Decimal(1), cadence=CreditGrant.Cadence.RECURRING
    )
    entitlement = entitlement_create(
        plan=plan, feature=package.meter.feature, feature_type="metered", usage_limit=1000
    )
    alert = alert_setting_create(
        entity_type="subscription",
        entity_id=subscription.pk,
        config={"alert_enabled": True, "warning": {"threshold": "1"}},
    )
    return {
        "/v1/entitlements/": entitlement.pk,
        "/v1/alerts/setting/": alert.pk,
        "/v1/customers/external/": customer.external_id,
        "/v1/customers/": customer.pk,
        "/v1/features/": package.meter.feature_id,
        "/v1/plans/": plan.pk,
        "/v1/prices/": package.pk,
        "/v1/subscriptions/": subscription.pk,
        "/v1/invoices/": invoice.pk,
        "/v1/wallets/": wallet.pk,
        "/v1/creditgrants/": grant.pk,
        "/v1/webhooks/endpoints/": webhook_endpoint_create(url="https://hooks.example/").pk,
    }


def _known_path_parameters(operation, known: dict[str, str]) -> dict | None:
    if "{" not in operation.path:
        return None
    for prefix, value in known.items():
        if operation.path.startswith(prefix):
            name = "external_id" if prefix.endswith("external/") else "id"
            return {name: value}
    return None


def _run_operation(operation, mode, *, base_url, session, deadline, findings, path_parameters):
    """Cases valid (POSITIVE) or not (NEGATIVE) by the schema; either way, never a 5xx and
    never an answer the schema does not describe."""
    label = f"{operation.label} ({mode.value}{', seeded ids' if path_parameters else ''})"

    @seed(SEED)
    @settings(
        max_examples=EXAMPLES[mode],
        deadline=None,
        database=None,
        derandomize=False,
        phases=[Phase.explicit, Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    @given(case=operation.as_strategy(mode, path_parameters=path_parameters))
    def run(case):
        if time.monotonic() > deadline:
            return
        try:
            case.call_and_validate(base_url=base_url, session=session, checks=CHECKS)
        except (FailureGroup, AssertionError) as failure:
            findings.setdefault(label, str(failure))
        except requests.RequestException as error:
            findings.setdefault(label, f"request failed: {error}")

    run()


@pytest.fixture
def quiet_requests_log():
    """Thousands of 4xx answers are expected; their log lines would drown a finding."""
    logger = logging.getLogger("django.request")
    level = logger.level
    logger.setLevel(logging.ERROR)
    yield
    logger.setLevel(level)


@pytest.fixture
def request_scoped_connections(monkeypatch):
    """The live server answers each request in a new thread; with persistent connections
    those would outlive the test and keep PostgreSQL from dropping the test database."""
    from django.db import connections

    monkeypatch.setitem(connections.settings["default"], "CONN_MAX_AGE", 0)


@pytest.mark.django_db(transaction=True)
def test_every_operation_answers_as_the_schema_says(
    request_scoped_connections, live_server, quiet_requests_log
):
    _, key = api_key_create(name="schemathesis")
    known = _seed()
    session = requests.Session()
    session.headers["x-api-key"] = key
    schema = schemathesis.openapi.from_url(f"{live_server.url}/v1/schema/?format=json")
    base_url = live_server.url
    findings: dict[str, str] = {}
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) > 30
    started = time.monotonic()
    runs = [(operation, mode, None) for operation in operations for mode in EXAMPLES]
    runs += [
        (operation, GenerationMode.POSITIVE, parameters)
        for operation in operations
        if (parameters := _known_path_parameters(operation, known))
    ]
    for index, (operation, mode, parameters) in enumerate(runs):
        share = (BUDGET_SECONDS - (time.monotonic() - started)) / (len(runs) - index)
        _run_operation(
            operation,
            mode,
            base_url=base_url,
            session=session,
            deadline=time.monotonic() + share,
            findings=findings,
            path_parameters=parameters,
        )
    report = "\n\n".join(f"== {label}\n{text}" for label, text in sorted(findings.items()))
    assert not findings, f"{len(findings)} operations answer unlike the schema:\n\n{report}"
