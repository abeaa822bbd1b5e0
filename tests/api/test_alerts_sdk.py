"""Issue 13: the official flexprice SDK, unchanged, sets alerts on a subscription's spend, on
a feature's usage and on a wallet's balance against a live Tally, and reads their log."""

from datetime import UTC, datetime, timedelta

import pytest
from flexprice.models import errors

from tests.api.test_sdk import fp, o1_catalog  # noqa: F401  (fp is the live SDK client)

pytestmark = pytest.mark.django_db(transaction=True)


def stamp(moment: datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")


def tokens(fp, n: int, kind: str, amount: int) -> None:  # noqa: F811
    fp.events.ingest_events_bulk(
        events=[
            {
                "event_name": "tokens",
                "external_customer_id": "acme",
                "event_id": f"a-{n}",
                "timestamp": stamp(datetime.now(UTC) - timedelta(minutes=5)),
                "properties": {"model": "OpenAI O1", "prompt_type": kind, "tokens": str(amount)},
            }
        ]
    )


def test_sdk_alert_settings_and_the_alert_log(fp):  # noqa: F811
    features, plan, _ = o1_catalog(fp)
    customer = fp.customers.create_customer(external_id="acme", name="Acme AI")
    subscription = fp.subscriptions.create_subscription(
        plan_id=plan.id,
        currency="usd",
        billing_period="MONTHLY",
        external_customer_id="acme",
        start_date=datetime.now(UTC) - timedelta(hours=1),
    )
    spend = fp.alert_settings.create_alert_settings(
        entity_type="subscription",
        entity_id=subscription.id,
        config={
            "alert_enabled": True,
            "alert_threshold_type": "absolute",
            "warning": {"threshold": "50"},
            "critical": {"threshold": "100", "condition": "above"},
        },
    )
    assert (spend.entity_type, spend.entity_id, spend.enabled) == (
        "subscription",
        subscription.id,
        True,
    )
    assert spend.config.warning.condition == "above"  # spend alerts as it grows
    usage = fp.alert_settings.create_alert_settings(
        entity_type="feature",
        entity_id=features["input"].id,
        parent_entity_type="subscription",
        parent_entity_id=subscription.id,
        config={"alert_enabled": True, "info": {"threshold": "1000000"}},
    )
    assert (usage.parent_entity_id, usage.parent_entity_type) == (subscription.id, "subscription")
    wallet = fp.wallets.create_wallet(
        external_customer_id="acme",
        currency="usd",
        initial_credits_to_load="80",
        alert_settings={"alert_enabled": True, "warning": {"threshold": "0"}},
    )

    tokens(fp, 1, "input", 2_000_000)  # $30: usage passes its info level; spend is ok
    tokens(fp, 2, "output", 500_000)  # + $60 = $90: spend's warning; the wallet is below 0

    logs = fp.alerts.query_alert_log(customer_id=customer.id).items
    changes = sorted((log.entity_type, log.alert_type, log.alert_status) for log in logs)
    assert changes == [
        ("feature", "feature_usage", "info"),
        ("subscription", "subscription_spend", "warning"),
        ("wallet", "low_ongoing_balance", "warning"),
    ]
    spent = next(log for log in logs if log.entity_type == "subscription")
    assert spent.alert_info.alert_settings.warning.threshold == "50"
    assert spent.alert_info.timestamp
    assert fp.alerts.query_alert_log(entity_id=wallet.id).items[0].wallet is None

    # The same state again logs nothing; a higher threshold brings spend back to ok.
    tokens(fp, 3, "output", 1)  # still one package of output: $90
    assert len(fp.alerts.query_alert_log(customer_id=customer.id).items) == 3
    fp.alert_settings.update_alert_settings(
        id=spend.id, config={"alert_enabled": True, "warning": {"threshold": "500"}}
    )
    back = fp.alerts.query_alert_log(entity_id=subscription.id, limit=1).items[0]
    assert (back.alert_status, back.alert_info.alert_settings.warning.threshold) == ("ok", "500")
    assert fp.alert_settings.get_alert_settings(id=spend.id).config.warning.threshold == "500"

    found = fp.alert_settings.query_alert_settings(parent_entity_id=subscription.id).items
    assert [s.id for s in found] == [usage.id]
    fp.alert_settings.delete_alert_settings(id=usage.id)
    with pytest.raises(errors.ErrorResponse) as gone:
        fp.alert_settings.get_alert_settings(id=usage.id)
    assert gone.value.data.http_status_code == 404


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"entity_type": "group", "entity_id": "grp_1"}, "entity_type"),
        ({"entity_type": "wallet", "entity_id": "wallet_1"}, "entity_type"),
        ({"entity_type": "subscription", "entity_id": "subs_nope"}, "entity_id"),
        (
            {
                "entity_type": "subscription",
                "entity_id": "SUB",
                "config": {"alert_threshold_type": "percentage"},
            },
            "config",
        ),
        ({"entity_type": "feature", "entity_id": "FEATURE"}, "parent_entity_id"),
    ],
)
def test_sdk_alert_settings_refuse_what_tally_does_not_evaluate(fp, body, field):  # noqa: F811
    features, plan, _ = o1_catalog(fp)
    fp.customers.create_customer(external_id="acme", name="Acme AI")
    subscription = fp.subscriptions.create_subscription(
        plan_id=plan.id, currency="usd", billing_period="MONTHLY", external_customer_id="acme"
    )
    ids = {"SUB": subscription.id, "FEATURE": features["input"].id}
    body = {"config": {"alert_enabled": True}, **body}
    body["entity_id"] = ids.get(body["entity_id"], body["entity_id"])
    with pytest.raises(errors.ErrorResponse) as refused:
        fp.alert_settings.create_alert_settings(**body)
    assert refused.value.data.http_status_code == 400
    assert field in refused.value.raw_response.json()["error"]["details"]
