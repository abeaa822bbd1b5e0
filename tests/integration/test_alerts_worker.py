"""Issue 13 with a real worker: an event that crosses an alert and a budget is evaluated by
the recompute within 2 s; their emails leave after commit from the worker; an email whose
task was lost is sent once the beat sweep asks again."""

import time
from datetime import timedelta
from decimal import Decimal

import pytest
from django.db import transaction
from django.utils import timezone

from billing import alerts, budgets, emails, tasks
from billing.models import AlertLog, Budget, OutboxEmail
from tests.integration.conftest import post, tokens, wait_for

pytestmark = pytest.mark.integration


def test_an_event_crossing_an_alert_and_a_budget_is_evaluated_within_2_s(setup):
    client, subscription = setup
    customer = subscription.customer
    customer.email = "ops@acme.test"
    customer.save()
    alerts.alert_setting_create(
        entity_type="subscription",
        entity_id=subscription.pk,
        config={"alert_enabled": True, "warning": {"threshold": "20"}},
    )
    budgets.budget_set(
        customer=customer, amount=Decimal(25), currency="usd", alert_percents=[80], hard_cap=True
    )
    sent = time.monotonic()
    assert post(client, "events", tokens("cross", 2_000_000)).status_code == 202  # $30

    def crossed():
        return AlertLog.objects.filter(alert_status="warning").exists() and (
            Budget.objects.filter(capped=True).exists()
        )

    wait_for(crossed, timeout=10, interval=0.05)
    assert time.monotonic() - sent < 2
    assert budgets.budget_capped(customer_id=customer.pk)

    def mailed():
        return OutboxEmail.objects.filter(sent_at__isnull=False).count() == 2

    wait_for(mailed, timeout=10)  # the alert's and the 80 % budget email, sent by the worker
    assert sorted(OutboxEmail.objects.values_list("subject", flat=True)) == [
        "80% of your budget for your account is used",
        "Spend this period alert for Acme AI: warning",
    ]


def test_an_email_whose_task_was_lost_is_sent_after_the_sweep(setup, worker):
    from config.celery import app

    worker.stop()
    with transaction.atomic():
        email = emails.email_queue(key="lost", to="ops@acme.test", subject="Hi", body="Hello")
    app.control.purge()  # its task is lost with the broker's queue
    OutboxEmail.objects.filter(pk=email.pk).update(created_at=timezone.now() - timedelta(minutes=1))
    worker.start()
    assert tasks.emails_sweep() == 1  # what beat runs every minute

    def sent():
        return OutboxEmail.objects.filter(pk=email.pk, sent_at__isnull=False).exists()

    wait_for(sent, timeout=15)
    email.refresh_from_db()
    assert email.attempts == 1  # sent once
