"""The events Tally emits, each with the change it reports, and their payloads."""

from datetime import timedelta
from decimal import Decimal as D

import pytest
import time_machine
from django.utils import timezone
from django.utils.dateparse import parse_datetime

from billing import ledger, services, wallets
from billing.models import EventType, Invoice, OutboxEvent, Wallet, WalletTransaction
from tests.billing.test_wallets import draft_of, top_up, wallet_of
from tests.factories import CustomerFactory, SubscriptionFactory

pytestmark = pytest.mark.django_db
Reason = WalletTransaction.Reason


def emitted(event_type: EventType) -> list[dict]:
    rows = OutboxEvent.objects.filter(event_type=event_type).order_by("created_at", "pk")
    return [row.data for row in rows]


def test_finalizing_emits_invoice_finalized_and_the_wallets_payment(o1_subscriptions):
    acme = o1_subscriptions["acme"]
    top_up(wallet_of(acme.customer, wallet_type=Wallet.Type.POST_PAID), "150")
    invoice = services.invoice_finalize(invoice=draft_of(acme))
    expected = {
        "invoice_id": invoice.pk,
        "invoice_number": invoice.invoice_number,
        "customer_id": acme.customer_id,
        "external_customer_id": "acme",
        "subscription_id": acme.pk,
        "invoice_type": "SUBSCRIPTION",
        "invoice_status": "FINALIZED",
        "payment_status": "PENDING",
        "currency": "usd",
        "subtotal": "202.5",
        "total": "202.5",
        "amount_due": "202.5",
        "amount_paid": "150",
        "amount_remaining": "52.5",
    }
    assert emitted(EventType.INVOICE_FINALIZED) == [expected]
    assert emitted(EventType.INVOICE_PAYMENT_UPDATED) == [expected]
    assert OutboxEvent.objects.filter(event_type=EventType.INVOICE_FINALIZED).get().customer_id


def test_an_unpaid_finalization_emits_no_payment_and_a_skipped_invoice_nothing(
    o1_subscriptions, o1_plan
):
    services.invoice_finalize(invoice=draft_of(o1_subscriptions["acme"]))
    assert len(emitted(EventType.INVOICE_FINALIZED)) == 1
    assert emitted(EventType.INVOICE_PAYMENT_UPDATED) == []
    idle = SubscriptionFactory(customer=CustomerFactory(), plan=o1_plan)
    skipped = services.invoice_finalize(invoice=services.invoice_propose(subscription=idle))
    assert skipped.invoice_status == Invoice.Status.SKIPPED
    assert len(emitted(EventType.INVOICE_FINALIZED)) == 1


def test_a_payment_and_a_void_emit_their_events(o1_subscriptions):
    invoice = services.invoice_finalize(invoice=draft_of(o1_subscriptions["acme"]))
    wallets.invoice_payment_update(invoice=invoice, payment_status="FAILED")
    wallets.invoice_payment_update(invoice=invoice, payment_status="FAILED")  # no change
    other = services.invoice_finalize(invoice=draft_of(o1_subscriptions["globex"]))
    services.invoice_void(invoice=other)
    paid = emitted(EventType.INVOICE_PAYMENT_UPDATED)
    assert [(p["invoice_id"], p["payment_status"]) for p in paid] == [(invoice.pk, "FAILED")]
    (voided,) = emitted(EventType.INVOICE_VOIDED)
    assert (voided["invoice_id"], voided["invoice_status"], voided["payment_status"]) == (
        other.pk,
        "VOIDED",
        "VOIDED",
    )


def test_credits_made_usable_emit_wallet_topped_up_once_each():
    customer = CustomerFactory(external_id="acme")
    wallet = wallet_of(customer, conversion_rate=D("0.5"))
    direct = top_up(wallet, "10")
    bought = top_up(wallet, "40", reason=Reason.PURCHASED_CREDIT_INVOICED)
    assert [e["transaction_id"] for e in emitted(EventType.WALLET_TOPPED_UP)] == [direct.pk]
    wallets.invoice_payment_update(invoice=bought.invoice, payment_status="SUCCEEDED")
    assert emitted(EventType.WALLET_TOPPED_UP)[1] == {
        "wallet_id": wallet.pk,
        "customer_id": customer.pk,
        "external_customer_id": "acme",
        "currency": "usd",
        "wallet_status": "active",
        "transaction_id": bought.pk,
        "transaction_reason": "PURCHASED_CREDIT_INVOICED",
        "credits": "40",
        "amount": "20",
    }
    (payment,) = emitted(EventType.INVOICE_PAYMENT_UPDATED)
    assert (payment["invoice_type"], payment["payment_status"]) == ("CREDIT", "SUCCEEDED")


def test_a_voided_invoice_refund_is_not_a_top_up(o1_subscriptions):
    acme = o1_subscriptions["acme"]
    top_up(wallet_of(acme.customer), "1000")
    invoice = services.invoice_finalize(invoice=draft_of(acme))
    services.invoice_void(invoice=invoice)
    reasons = {e["transaction_reason"] for e in emitted(EventType.WALLET_TOPPED_UP)}
    assert reasons == {"PURCHASED_CREDIT_DIRECT"}
    assert WalletTransaction.objects.filter(transaction_reason=Reason.INVOICE_VOID_REFUND)


def test_a_worsening_alert_state_emits_wallet_balance_low_once():
    alerts = {"alert_enabled": True, "warning": {"threshold": "20"}, "critical": {"threshold": "5"}}
    wallet = wallet_of(CustomerFactory(), alert_settings=alerts)
    top_up(wallet, "30")
    wallets.wallet_check(wallet_id=wallet.pk)
    wallets.wallet_debit(wallet=wallet, credits=D(15), description="test")
    wallets.wallet_check(wallet_id=wallet.pk)
    wallets.wallet_check(wallet_id=wallet.pk)  # unchanged: no second event
    wallets.wallet_debit(wallet=wallet, credits=D(12), description="test")
    wallets.wallet_check(wallet_id=wallet.pk)
    top_up(wallet, "100")
    wallets.wallet_check(wallet_id=wallet.pk)  # better: not a low balance
    states = [
        (e["previous_alert_state"], e["alert_state"], e["real_time_credit_balance"])
        for e in emitted(EventType.WALLET_BALANCE_LOW)
    ]
    assert states == [("ok", "warning", "15"), ("warning", "in_alarm", "3")]


def test_expired_credits_emit_wallet_credits_expired():
    wallet = wallet_of(CustomerFactory())
    block = top_up(wallet, "10", expiry_date=timezone.now() + timedelta(hours=1))
    wallets.wallet_debit(wallet=wallet, credits=D(4), description="test")
    with time_machine.travel(timezone.now() + timedelta(hours=2)):
        assert wallets.credits_expire(now=timezone.now()) == 1
        assert wallets.credits_expire(now=timezone.now()) == 0
    (expired,) = emitted(EventType.WALLET_CREDITS_EXPIRED)
    entry = WalletTransaction.objects.get(transaction_reason=Reason.CREDIT_EXPIRED)
    assert (expired["expired_transaction_id"], expired["transaction_id"]) == (block.pk, entry.pk)
    assert (expired["credits"], expired["transaction_reason"]) == ("6", "CREDIT_EXPIRED")
    assert ledger.balance(wallet) == 0


def test_subscribing_and_cancelling_emit_their_events(o1_plan):
    customer = CustomerFactory(external_id="acme")
    subscription = services.subscription_create(customer=customer, plan=o1_plan)
    services.subscription_cancel(subscription=subscription)
    (created,) = emitted(EventType.SUBSCRIPTION_CREATED)
    (cancelled,) = emitted(EventType.SUBSCRIPTION_CANCELLED)
    assert created["subscription_id"] == cancelled["subscription_id"] == subscription.pk
    assert (created["external_customer_id"], created["plan_id"]) == ("acme", o1_plan.pk)
    assert (created["subscription_status"], created["cancel_at_period_end"]) == ("active", False)
    assert (cancelled["subscription_status"], cancelled["cancel_at_period_end"]) == (
        "active",
        True,
    )
    subscription.refresh_from_db()
    end = subscription.end_date
    assert parse_datetime(cancelled["end_date"]) == end.replace(
        microsecond=end.microsecond // 1000 * 1000  # JSON keeps milliseconds
    )
