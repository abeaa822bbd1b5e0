"""Issue 13: one evaluator for a subscription's spend, a feature's usage and a wallet's
balance. States go ok → info/warning/in_alarm and back; each change is logged once, with
its alert.state_changed event and an email sent after commit."""

from datetime import timedelta
from decimal import Decimal

import pytest
import time_machine
from django.core import mail
from django.db import transaction
from django.utils import timezone

from billing import alerts, emails, tasks
from billing.models import AlertLog, AlertState, EventType, OutboxEmail, OutboxEvent, Price
from billing.wallets import wallet_create, wallet_top_up
from tests.factories import (
    CustomerFactory,
    MeterFactory,
    PlanFactory,
    PriceFactory,
    SubscriptionFactory,
    ingest,
)

pytestmark = pytest.mark.django_db

D = Decimal
OK, INFO, WARNING, CRITICAL = (
    AlertState.OK,
    AlertState.INFO,
    AlertState.WARNING,
    AlertState.IN_ALARM,
)


@pytest.fixture
def subscription():
    """acme on $15 per million tokens, pro rata, in a period that began a day ago."""
    meter = MeterFactory()
    plan = PlanFactory()
    PriceFactory(plan=plan, meter=meter, amount=D(15), round=Price.Round.NONE)
    day_ago = timezone.now() - timedelta(days=1)
    return SubscriptionFactory(
        customer=CustomerFactory(external_id="acme", name="Acme", email="ops@acme.test"),
        plan=plan,
        start_date=day_ago,
        billing_anchor=day_ago,
    )


def use(n: int, tokens: int, *, recompute=True, subscription=None) -> None:
    ingest(
        {
            "event_id": f"t-{n}",
            "event_name": "tokens",
            "external_customer_id": "acme",
            "timestamp": (timezone.now() - timedelta(minutes=5)).isoformat(),
            "properties": {"tokens": tokens},
        }
    )
    if recompute:
        tasks.subscription_recompute(subscription_id=subscription.pk)


def spend_rule(subscription, **levels):
    config = {"alert_enabled": True, **{k: {"threshold": v} for k, v in levels.items()}}
    return alerts.alert_setting_create(
        entity_type="subscription", entity_id=subscription.pk, config=config
    )


def changes(**filters) -> list[tuple]:
    return [
        (log.sequence, log.previous_status, log.alert_status, log.value)
        for log in AlertLog.objects.filter(**filters).order_by("sequence")
    ]


@pytest.mark.parametrize(
    ("value", "state"),
    [("5", OK), ("10", OK), ("10.01", INFO), ("20.5", WARNING), ("100", CRITICAL)],
)
def test_the_most_severe_level_passed_wins(value, state):
    config = {
        "alert_enabled": True,
        "info": {"threshold": "10", "condition": "above"},
        "warning": {"threshold": "20", "condition": "above"},
        "critical": {"threshold": "99.99", "condition": "above"},
    }
    assert alerts.alert_state_for(config, D(value)) == state
    assert alerts.alert_state_for({**config, "alert_enabled": False}, D(value)) == OK


def test_rules_default_to_above_and_wallets_to_below():
    rule = alerts.alert_config_normalize({"alert_enabled": True, "warning": {"threshold": D(5)}})
    assert rule["warning"] == {"threshold": "5", "condition": "above"}
    assert alerts.alert_state_for({"alert_enabled": True, "warning": {"threshold": "5"}}, D(1)) == (
        WARNING
    )


def test_spend_alert_goes_up_and_back_down_logging_each_change_once(
    subscription, django_capture_on_commit_callbacks
):
    rule = spend_rule(subscription, warning="10", critical="20")
    with django_capture_on_commit_callbacks(execute=True):
        use(1, 1_000_000, subscription=subscription)  # $15: warning
        tasks.subscription_recompute(subscription_id=subscription.pk)  # the same: no log
        use(2, 1_000_000, subscription=subscription)  # $30: critical
        alerts.alert_setting_update(
            setting=rule, config={"alert_enabled": True, "critical": {"threshold": "100"}}
        )  # $30 is under every level now: ok
    assert changes(entity_id=subscription.pk) == [
        (1, OK, WARNING, D(15)),
        (2, WARNING, CRITICAL, D(30)),
        (3, CRITICAL, OK, D(30)),
    ]
    rule.refresh_from_db()
    assert rule.alert_state == OK
    events = OutboxEvent.objects.filter(event_type=EventType.ALERT_STATE_CHANGED)
    assert sorted(e.data["alert_status"] for e in events) == ["in_alarm", "ok", "warning"]
    assert {e.data["entity_id"] for e in events} == {subscription.pk}
    assert [m.to for m in mail.outbox] == [["ops@acme.test"]] * 3
    assert "critical" in mail.outbox[1].subject
    assert OutboxEmail.objects.filter(sent_at__isnull=True).count() == 0


def test_usage_alert_reads_the_features_quantity_on_the_draft(subscription):
    feature = subscription.plan.prices.get().meter.feature
    rule = alerts.alert_setting_create(
        entity_type="feature",
        entity_id=feature.pk,
        parent_entity_id=subscription.pk,
        config={"alert_enabled": True, "info": {"threshold": "1500000"}},
    )
    use(1, 1_000_000, subscription=subscription)
    assert changes(entity_id=feature.pk) == []
    use(2, 600_000, subscription=subscription)
    assert changes(entity_id=feature.pk, parent_entity_id=subscription.pk) == [
        (1, OK, INFO, D(1_600_000))
    ]
    rule.refresh_from_db()
    assert rule.alert_state == INFO


def test_wallet_balance_alert_is_logged_by_the_same_evaluator(subscription):
    wallet = wallet_create(
        customer=subscription.customer,
        currency="usd",
        initial_credits=D(20),
        alert_settings={"alert_enabled": True, "warning": {"threshold": "10"}},
    )
    use(1, 1_000_000, subscription=subscription)  # real-time 20 - 15 = 5 credits
    wallet_top_up(wallet=wallet, reason="FREE_CREDIT_GRANT", credits=D(50))
    tasks.subscription_recompute(subscription_id=subscription.pk)  # 55 credits: ok again
    assert changes(entity_id=wallet.pk) == [(1, OK, WARNING, D(5)), (2, WARNING, OK, D(55))]
    assert set(AlertLog.objects.values_list("alert_type", flat=True)) == {"low_ongoing_balance"}
    wallet.refresh_from_db()
    assert wallet.alert_state == OK


def test_alert_rules_refuse_what_tally_cannot_evaluate(subscription):
    elsewhere = PlanFactory()
    PriceFactory(plan=elsewhere, meter=MeterFactory(event_name="calls", field=""))
    other = SubscriptionFactory(customer=subscription.customer, plan=elsewhere)
    feature = subscription.plan.prices.get().meter.feature
    cases = [
        ({"entity_type": "wallet", "entity_id": "w"}, "entity_type"),
        ({"entity_type": "feature", "entity_id": feature.pk}, "parent_entity_id"),
        (
            {"entity_type": "feature", "entity_id": feature.pk, "parent_entity_id": other.pk},
            "entity_id",
        ),
        ({"entity_type": "subscription", "entity_id": "nope"}, "entity_id"),
    ]
    for body, field in cases:
        with pytest.raises(alerts.ValidationError) as refused:
            alerts.alert_setting_create(config={"alert_enabled": True}, **body)
        assert field in refused.value.message_dict
    spend_rule(subscription, warning="1")
    with pytest.raises(alerts.ValidationError):
        spend_rule(subscription, warning="2")  # one spend rule per subscription
    assert AlertLog.objects.count() == 0


def test_an_alert_email_is_written_with_its_change_and_not_sent_on_rollback(subscription):
    rule = spend_rule(subscription, warning="10")
    use(1, 1_000_000, recompute=False)
    with pytest.raises(RuntimeError), transaction.atomic():
        tasks.subscription_recompute(subscription_id=subscription.pk)
        assert OutboxEmail.objects.count() == 1  # written, not sent, inside
        raise RuntimeError("the change does not commit")
    assert (AlertLog.objects.count(), OutboxEmail.objects.count(), len(mail.outbox)) == (0, 0, 0)
    rule.refresh_from_db()
    assert rule.alert_state == OK


def test_an_email_is_sent_once_and_the_sweep_sends_one_whose_task_was_lost():
    with transaction.atomic():
        lost = emails.email_queue(key="k-1", to="a@b.test", subject="Hello", body="Hi")
    # Its after-commit task never ran (this test's transaction never commits).
    assert emails.emails_unsent(now=timezone.now()) == []  # too young to be lost
    with time_machine.travel(timezone.now() + timedelta(minutes=1)):
        assert tasks.emails_sweep() == 1
    assert [m.subject for m in mail.outbox] == ["Hello"]
    assert emails.email_deliver(email_id=lost.pk) is False  # already sent
    lost.refresh_from_db()
    assert (lost.attempts, lost.sent_at is not None) == (1, True)
    with transaction.atomic():
        again = emails.email_queue(key="k-1", to="a@b.test", subject="Hello", body="Hi")
    assert again.pk == lost.pk and len(mail.outbox) == 1


def test_a_failed_send_is_recorded_and_left_for_a_retry(settings):
    settings.EMAIL_BACKEND = "tests.billing.test_alerts.FailingBackend"
    with transaction.atomic():
        email = emails.email_queue(key="k-2", to="a@b.test", subject="Hello", body="Hi")
    with pytest.raises(ConnectionError):
        emails.email_deliver(email_id=email.pk)
    email.refresh_from_db()
    assert (email.sent_at, email.attempts, email.last_error) == (None, 1, "SMTP is down")


class FailingBackend:
    def __init__(self, *args, **kwargs):
        pass

    def send_messages(self, messages):
        raise ConnectionError("SMTP is down")
