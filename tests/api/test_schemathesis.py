"""The schema tells the truth: schemathesis calls every operation of ``/v1/schema/`` on a
live server and checks each answer against it.

Bounded so it fits in ``make test``: a fixed seed, ``EXAMPLES`` cases per operation and a
time budget shared by the operations. Every finding is collected and printed, then the
test fails.
"""

import logging
import time

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, Phase, given, seed, settings
from schemathesis.checks import not_a_server_error
from schemathesis.errors import FailureGroup
from schemathesis.specs.openapi.checks import (
    response_schema_conformance,
    status_code_conformance,
)

from metering.services import api_key_create

SEED = 20261128
EXAMPLES = 25
BUDGET_SECONDS = 150
CHECKS = [not_a_server_error, response_schema_conformance, status_code_conformance]


def _run_operation(operation, *, base_url, session, deadline, findings):
    @seed(SEED)
    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        database=None,
        derandomize=False,
        phases=[Phase.explicit, Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    @given(case=operation.as_strategy())
    def run(case):
        if time.monotonic() > deadline:
            return
        try:
            case.call_and_validate(base_url=base_url, session=session, checks=CHECKS)
        except (FailureGroup, AssertionError) as failure:
            findings.setdefault(operation.label, str(failure))
        except requests.RequestException as error:
            findings.setdefault(operation.label, f"request failed: {error}")

    run()


@pytest.fixture
def quiet_requests_log():
    """Thousands of 4xx answers are expected; their log lines would drown a finding."""
    logger = logging.getLogger("django.request")
    level = logger.level
    logger.setLevel(logging.ERROR)
    yield
    logger.setLevel(level)


@pytest.mark.django_db(transaction=True)
def test_every_operation_answers_as_the_schema_says(live_server, quiet_requests_log):
    _, key = api_key_create(name="schemathesis")
    session = requests.Session()
    session.headers["x-api-key"] = key
    schema = schemathesis.openapi.from_url(f"{live_server.url}/v1/schema/?format=json")
    base_url = live_server.url
    findings: dict[str, str] = {}
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) > 30
    started = time.monotonic()
    for index, operation in enumerate(operations):
        share = (BUDGET_SECONDS - (time.monotonic() - started)) / (len(operations) - index)
        _run_operation(
            operation,
            base_url=base_url,
            session=session,
            deadline=time.monotonic() + share,
            findings=findings,
        )
    report = "\n\n".join(f"== {label}\n{text}" for label, text in sorted(findings.items()))
    assert not findings, f"{len(findings)} operations answer unlike the schema:\n\n{report}"
