"""Issue 13: /v1/alerts refuses what Tally does not implement with a 400 naming it, and
stores nothing half-done."""

from datetime import timedelta
from decimal import Decimal

import pytest
from django.utils import timezone

from billing import alerts
from billing.models import AlertLog, AlertSetting, Price
from tests.api.asserts import assert_error
from tests.factories import (
    CustomerFactory,
    MeterFactory,
    PlanFactory,
    PriceFactory,
    SubscriptionFactory,
)

pytestmark = pytest.mark.django_db


@pytest.fixture
def subscription():
    plan = PlanFactory()
    PriceFactory(plan=plan, meter=MeterFactory(), amount=Decimal(15), round=Price.Round.NONE)
    start = timezone.now() - timedelta(days=1)
    return SubscriptionFactory(
        customer=CustomerFactory(external_id="acme"), plan=plan, start_date=start
    )


def create(api_client, **body):
    return api_client.post("/v1/alerts/setting", body, format="json")


@pytest.mark.parametrize(
    ("body", "path"),
    [
        ({"group_id": "g"}, ("group_id",)),
        ({"entity_type": "subscription_line_item"}, ("entity_type",)),
        ({"parent_entity_type": "feature"}, ("parent_entity_type",)),
        ({"parent_entity_id": "SUB"}, ("parent_entity_id",)),
        ({"config": {"alert_enabled": True, "warning": {"threshold": "lots"}}}, ("config",)),
        ({"config": {"warning": {"threshold": "1", "window": "1h"}}}, ("config", "warning")),
        ({"config": {"alert_threshold_type": "percentage"}}, ("config", "alert_threshold_type")),
        ({"config": {"critical": {"threshold": "1", "condition": "equal"}}}, ("config",)),
    ],
)
def test_a_rule_tally_cannot_evaluate_is_refused(api_client, subscription, body, path):
    sent = {"entity_type": "subscription", "entity_id": subscription.pk, "config": {}, **body}
    if sent.get("parent_entity_id") == "SUB":
        sent["parent_entity_id"] = subscription.pk
    assert_error(create(api_client, **sent), 400, *path)
    assert not AlertSetting.objects.exists()


def test_a_second_spend_rule_is_refused_and_an_unknown_id_is_404(api_client, subscription):
    body = {"entity_type": "subscription", "entity_id": subscription.pk, "config": {}}
    assert create(api_client, **body).status_code == 201
    assert_error(create(api_client, **body), 400)
    assert AlertSetting.objects.count() == 1
    assert_error(api_client.get("/v1/alerts/setting/alert_nope"), 404)
    put = api_client.put("/v1/alerts/setting/alert_nope", {"config": {}}, format="json")
    assert_error(put, 404)
    assert_error(api_client.delete("/v1/alerts/setting/alert_nope"), 404)


def test_an_update_needs_its_config_and_nothing_else(api_client, subscription):
    rule = alerts.alert_setting_create(
        entity_type="subscription", entity_id=subscription.pk, config={"alert_enabled": True}
    )
    url = f"/v1/alerts/setting/{rule.pk}"
    assert_error(api_client.put(url, {}, format="json"), 400, "config")
    assert_error(
        api_client.put(url, {"config": {}, "entity_id": "x"}, format="json"), 400, "entity_id"
    )
    rule.refresh_from_db()
    assert rule.config["alert_enabled"] is True


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"sort": [{"field": "created_at"}]}, "sort"),
        ({"expand": "customer"}, "expand"),
        ({"alert_status": "critical"}, "alert_status"),  # Flexprice's name is in_alarm
        ({"limit": 0}, "limit"),
        ({"offset": -1}, "offset"),
        ({"start_time": "yesterday"}, "start_time"),
    ],
)
def test_the_log_search_refuses_what_it_does_not_implement(api_client, body, field):
    assert_error(api_client.post("/v1/alerts/search", body, format="json"), 400, field)


def test_the_log_search_filters_by_status_and_time(api_client, subscription):
    from billing.models import AlertState

    for n, status in enumerate([AlertState.WARNING, AlertState.OK]):
        AlertLog.objects.create(
            customer=subscription.customer,
            entity_type="subscription",
            entity_id=subscription.pk,
            alert_type="subscription_spend",
            alert_status=status,
            previous_status=AlertState.OK if n == 0 else AlertState.WARNING,
            sequence=n + 1,
            value=Decimal("12.5"),
            created_at=timezone.now() - timedelta(hours=2 - n),
        )
    found = api_client.post("/v1/alerts/search", {"alert_status": "warning"}, format="json")
    assert [i["alert_info"]["value_at_time"] for i in found.json()["items"]] == ["12.5"]
    recent = (timezone.now() - timedelta(minutes=90)).isoformat()
    later = api_client.post("/v1/alerts/search", {"start_time": recent}, format="json").json()
    assert [i["alert_status"] for i in later["items"]] == ["ok"]
    assert later["pagination"] == {"total": 1, "limit": 50, "offset": 0}
