"""entitlement.exceeded from the real worker's recomputes: once per usage period, a killed
worker and its redelivered tasks included."""

import pytest

from billing.models import EntitlementUsageExceeded, EventType, OutboxEvent
from catalog.models import Feature
from catalog.services import entitlement_create
from tests.integration.conftest import draft_total, post, tokens, wait_for

pytestmark = pytest.mark.integration


def exceeded():
    return list(OutboxEvent.objects.filter(event_type=EventType.ENTITLEMENT_EXCEEDED))


def test_the_worker_emits_exceeded_once_when_usage_reaches_the_limit(setup, worker):
    client, subscription = setup
    feature = Feature.objects.get(lookup_key="o1-input")
    entitlement_create(
        plan=subscription.plan, feature=feature, feature_type="metered", usage_limit=1_000_000
    )
    post(client, "events", tokens("e1", 600_000))
    wait_for(lambda: draft_total(subscription) > 0, timeout=10)
    assert exceeded() == []

    # The crossing event and a burst after it, with the worker killed in the middle.
    assert post(client, "events", tokens("e2", 400_000)).status_code == 202
    batch = [tokens(f"b{i}", 1_000) for i in range(200)]
    assert post(client, "events/bulk", {"events": batch[:100]}).status_code == 202
    worker.kill()
    assert post(client, "events/bulk", {"events": batch[100:]}).status_code == 202
    worker.start()

    (event,) = wait_for(exceeded, timeout=20)
    assert event.data["feature_id"] == feature.pk and event.data["usage_limit"] == 1_000_000
    # 1,200,000 tokens: two packages of $15, once the redelivered recompute has run.
    wait_for(lambda: draft_total(subscription) == 30, timeout=20)
    assert len(exceeded()) == 1
    assert EntitlementUsageExceeded.objects.get().subscription_id == subscription.pk
