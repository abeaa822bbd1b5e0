"""The wallet ledger and credits on invoices: consumption order, expiry, idempotency, PRE_PAID
credits on usage lines, POST_PAID payments, refunds on void, plan grants and purchases."""

from datetime import timedelta
from decimal import Decimal

import pytest
import time_machine
from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction
from django.utils import timezone

from billing import alerts, ledger, wallets
from billing.models import (
    CreditConsumption,
    CreditGrant,
    Invoice,
    Wallet,
    WalletTransaction,
)
from billing.services import (
    InvalidTransition,
    invoice_finalize,
    invoice_propose,
    invoice_void,
    periods_close,
)
from catalog.models import Price
from tests.factories import CustomerFactory, PriceFactory, SubscriptionFactory

pytestmark = pytest.mark.django_db
D = Decimal
Reason = WalletTransaction.Reason


def wallet_of(customer, **fields) -> Wallet:
    return wallets.wallet_create(customer=customer, currency="usd", **fields)


def top_up(wallet, credits, reason=Reason.PURCHASED_CREDIT_DIRECT, **fields):
    return wallets.wallet_top_up(wallet=wallet, reason=reason, credits=D(credits), **fields)


def remaining(block) -> Decimal:
    return ledger.blocks(block.wallet).get(pk=block.pk).remaining


def draft_of(subscription) -> Invoice:
    return Invoice.objects.get(subscription=subscription, invoice_status="DRAFT")


# The ledger


def test_debits_consume_by_priority_then_expiry_then_age():
    wallet = wallet_of(CustomerFactory())
    soon = timezone.now() + timedelta(days=2)
    later = timezone.now() + timedelta(days=9)
    never_p1 = top_up(wallet, "5", priority=1)
    later_p1 = top_up(wallet, "5", priority=1, expiry_date=later)
    soon_p1 = top_up(wallet, "5", priority=1, expiry_date=soon)
    no_priority = top_up(wallet, "5")
    first_p0 = top_up(wallet, "5", priority=0)
    debit, _ = ledger.debit(wallet=wallet, credits=D("17"), reason=Reason.MANUAL_BALANCE_DEBIT)
    parts = CreditConsumption.objects.filter(debit=debit).order_by("pk")
    taken = [(c.credit_id, c.credits) for c in parts]
    assert taken == [
        (first_p0.pk, D(5)),
        (soon_p1.pk, D(5)),
        (later_p1.pk, D(5)),
        (never_p1.pk, D(2)),
    ]
    assert remaining(never_p1) == D(3) and remaining(no_priority) == D(5)
    assert ledger.balance(wallet) == D(8)


def test_a_debit_larger_than_the_balance_is_refused_whole():
    wallet = wallet_of(CustomerFactory())
    top_up(wallet, "3")
    with pytest.raises(ledger.InsufficientCredits), transaction.atomic():
        ledger.debit(wallet=wallet, credits=D("3.01"), reason=Reason.MANUAL_BALANCE_DEBIT)
    assert not WalletTransaction.objects.filter(type="debit").exists()
    assert not CreditConsumption.objects.exists()
    assert ledger.balance(wallet) == D(3)


def test_a_replayed_top_up_is_counted_once_and_a_different_one_is_refused():
    wallet = wallet_of(CustomerFactory())
    first = top_up(wallet, "50", idempotency_key="order-1")
    again = top_up(wallet, "50", idempotency_key="order-1")
    assert again.pk == first.pk
    assert ledger.balance(wallet) == D(50)
    with pytest.raises(ValidationError, match="different transaction"):
        top_up(wallet, "60", idempotency_key="order-1")
    assert WalletTransaction.objects.count() == 1


def test_expired_credits_stop_counting_at_expiry_and_leave_once_by_the_beat():
    wallet = wallet_of(CustomerFactory())
    expiry = timezone.now() + timedelta(hours=1)
    expiring = top_up(wallet, "10", expiry_date=expiry)
    top_up(wallet, "4")
    ledger.debit(wallet=wallet, credits=D("3"), reason=Reason.MANUAL_BALANCE_DEBIT)
    assert remaining(expiring) == D(7)
    after = expiry + timedelta(seconds=1)
    assert ledger.balance(wallet, at=after) == D(4)  # before the beat runs
    assert wallets.credits_expire(now=after) == 1
    assert wallets.credits_expire(now=after) == 0
    expired = WalletTransaction.objects.get(transaction_reason=Reason.CREDIT_EXPIRED)
    assert expired.credit_amount == D(7)
    assert remaining(expiring) == D(0)
    assert ledger.balance(wallet, at=after) == D(4)
    with pytest.raises(ledger.InsufficientCredits), transaction.atomic():
        ledger.debit(wallet=wallet, credits=D(5), reason=Reason.MANUAL_BALANCE_DEBIT, at=after)


def test_the_balance_is_the_credits_less_the_debits_of_completed_blocks():
    wallet = wallet_of(CustomerFactory(), conversion_rate=D("0.01"))
    top_up(wallet, "10000")
    top_up(wallet, "500", reason=Reason.PURCHASED_CREDIT_INVOICED)  # pending: not counted
    wallets.wallet_debit(wallet=wallet, credits=D("1234.5"), description="refund to support")
    assert ledger.balance(wallet) == D("8765.5")
    assert ledger.to_currency(ledger.balance(wallet), wallet) == D("87.655")
    live = wallets.wallet_balance(wallet)
    assert (live.credit_balance, live.balance) == (D("8765.5"), D("87.655"))


def test_a_manual_debit_needs_a_reason():
    wallet = wallet_of(CustomerFactory())
    top_up(wallet, "5")
    with pytest.raises(ValidationError):
        wallets.wallet_debit(wallet=wallet, credits=D(1), description="  ")
    assert ledger.balance(wallet) == D(5)


def test_the_database_refuses_a_second_open_wallet_in_a_currency():
    customer = CustomerFactory()
    wallet_of(customer)
    with pytest.raises(ValidationError):
        wallet_of(customer)
    with pytest.raises(IntegrityError), transaction.atomic():
        Wallet.objects.create(customer=customer, currency="usd")


def test_terminating_debits_what_is_left_and_closes():
    customer = CustomerFactory()
    wallet = wallet_of(customer)
    top_up(wallet, "12.5")
    wallets.wallet_terminate(wallet=wallet)
    wallet.refresh_from_db()
    assert wallet.wallet_status == Wallet.Status.CLOSED
    assert ledger.balance(wallet) == 0
    assert wallet.transactions.get(type="debit").transaction_reason == Reason.WALLET_TERMINATION
    with pytest.raises(ValidationError):
        top_up(wallet, "1")
    assert wallet_of(customer).pk != wallet.pk  # a closed wallet frees the currency


def test_a_wallet_with_an_unpaid_purchase_is_not_terminated():
    wallet = wallet_of(CustomerFactory())
    top_up(wallet, "5")
    block = top_up(wallet, "40", reason=Reason.PURCHASED_CREDIT_INVOICED)
    with pytest.raises(ValidationError, match="unpaid"):
        wallets.wallet_terminate(wallet=wallet)
    wallet.refresh_from_db()
    assert wallet.wallet_status == Wallet.Status.ACTIVE and ledger.balance(wallet) == D(5)
    wallets.invoice_payment_update(invoice=block.invoice, payment_status="SUCCEEDED")
    wallets.wallet_terminate(wallet=wallet)
    assert ledger.balance(wallet) == 0


# PRE_PAID credits on invoices (acme's draft is $202.50 of usage)


def test_a_draft_shows_the_credits_that_would_apply_now(o1_subscriptions):
    acme = o1_subscriptions["acme"]
    wallet = wallet_of(acme.customer)
    top_up(wallet, "100")
    top_up(wallet, "10", reason=Reason.FREE_CREDIT_GRANT, expiry_date=acme.current_period_end)
    draft = invoice_propose(subscription=acme)
    assert (draft.subtotal, draft.total_prepaid_credits_applied, draft.total) == (
        D("202.50"),
        D("110.00"),
        D("92.50"),
    )
    assert draft.amount_due == D("92.50")
    assert ledger.balance(wallet) == D(110)  # a draft consumes nothing


def test_finalizing_consumes_the_credits_once(o1_subscriptions):
    acme = o1_subscriptions["acme"]
    wallet = wallet_of(acme.customer)
    promo = top_up(wallet, "10", reason=Reason.FREE_CREDIT_GRANT, priority=0)
    top_up(wallet, "100")
    invoice = invoice_finalize(invoice=draft_of(acme))
    assert invoice.invoice_status == Invoice.Status.FINALIZED
    assert (invoice.subtotal, invoice.total_prepaid_credits_applied, invoice.total) == (
        D("202.50"),
        D("110.00"),
        D("92.50"),
    )
    assert invoice.payment_status == Invoice.PaymentStatus.PENDING
    debit = invoice.wallet_transactions.get()
    assert (debit.type, debit.credit_amount, debit.transaction_reason) == (
        "debit",
        D(110),
        Reason.INVOICE_PAYMENT,
    )
    assert debit.consumptions.order_by("pk").first().credit_id == promo.pk
    assert ledger.balance(wallet) == 0
    with pytest.raises(InvalidTransition):
        invoice_finalize(invoice=invoice)
    assert WalletTransaction.objects.filter(type="debit").count() == 1


def test_credits_beyond_the_usage_leave_the_rest_in_the_wallet(o1_subscriptions):
    acme = o1_subscriptions["acme"]
    wallet = wallet_of(acme.customer)
    top_up(wallet, "500")
    invoice = invoice_finalize(invoice=draft_of(acme))
    assert invoice.invoice_status == Invoice.Status.FINALIZED  # not SKIPPED: it used credits
    assert (invoice.total_prepaid_credits_applied, invoice.total, invoice.amount_due) == (
        D("202.50"),
        D("0.00"),
        D(0),
    )
    assert ledger.balance(wallet) == D("297.50")


def test_credits_are_spent_in_whole_cents_only(o1_subscriptions):
    acme = o1_subscriptions["acme"]
    wallet = wallet_of(acme.customer, conversion_rate=D("0.001"))  # a credit is a tenth of a cent
    top_up(wallet, "12345")  # $12.345
    invoice = invoice_finalize(invoice=draft_of(acme))
    assert invoice.total_prepaid_credits_applied == D("12.34")
    assert invoice.total == D("190.16")
    assert ledger.balance(wallet) == D(5)  # half a cent stays


def test_prepaid_credits_never_pay_fixed_fees():
    customer = CustomerFactory()
    fee = PriceFactory(type=Price.Type.FIXED, meter=None, billing_model="FLAT_FEE", amount=D(20))
    sub = SubscriptionFactory(customer=customer, plan=fee.plan)
    wallet = wallet_of(customer)
    top_up(wallet, "100")
    with time_machine.travel(sub.current_period_end + timedelta(minutes=1)):
        periods_close(now=timezone.now())
    closed = Invoice.objects.get(subscription=sub, invoice_status="FINALIZED")
    assert (closed.subtotal, closed.total_prepaid_credits_applied) == (D(20), D(0))
    assert ledger.balance(wallet) == D(100)


def test_the_database_keeps_a_finalized_invoices_credits(o1_subscriptions):
    acme = o1_subscriptions["acme"]
    top_up(wallet_of(acme.customer), "10")
    invoice = invoice_finalize(invoice=draft_of(acme))
    with pytest.raises(Exception, match="closed invoice"), transaction.atomic():
        Invoice.objects.filter(pk=invoice.pk).update(total_prepaid_credits_applied=D(0))


def test_voiding_gives_back_the_credits_with_their_expiry_and_priority(o1_subscriptions):
    acme = o1_subscriptions["acme"]
    wallet = wallet_of(acme.customer)
    expiry = timezone.now() + timedelta(days=5)
    top_up(wallet, "30", priority=2, expiry_date=expiry)
    top_up(wallet, "20")
    invoice = invoice_finalize(invoice=draft_of(acme))
    assert ledger.balance(wallet) == 0
    invoice_void(invoice=invoice)
    refunds = wallet.transactions.filter(transaction_reason=Reason.INVOICE_VOID_REFUND)
    assert sorted((r.credit_amount, r.priority, r.expiry_date) for r in refunds) == sorted(
        [(D(30), 2, expiry), (D(20), None, None)]
    )
    assert ledger.balance(wallet) == D(50)


# POST_PAID wallets pay finalized invoices


def test_a_post_paid_wallet_pays_what_it_can(o1_subscriptions):
    acme = o1_subscriptions["acme"]
    wallet = wallet_of(acme.customer, wallet_type=Wallet.Type.POST_PAID)
    top_up(wallet, "150")
    invoice = invoice_finalize(invoice=draft_of(acme))
    assert invoice.total_prepaid_credits_applied == 0
    assert (invoice.total, invoice.amount_paid, invoice.amount_remaining) == (
        D("202.50"),
        D(150),
        D("52.50"),
    )
    assert invoice.payment_status == Invoice.PaymentStatus.PENDING
    wallets.invoice_payment_update(invoice=invoice, payment_status="SUCCEEDED")
    invoice.refresh_from_db()
    assert (invoice.amount_paid, invoice.payment_status) == (D("202.50"), "SUCCEEDED")


def test_a_post_paid_wallet_with_enough_marks_the_invoice_paid(o1_subscriptions):
    acme = o1_subscriptions["acme"]
    wallet = wallet_of(acme.customer, wallet_type=Wallet.Type.POST_PAID)
    top_up(wallet, "1000")
    invoice = invoice_finalize(invoice=draft_of(acme))
    assert (invoice.amount_paid, invoice.payment_status) == (D("202.50"), "SUCCEEDED")
    assert invoice.paid_at is not None
    assert ledger.balance(wallet) == D("797.50")


# Purchases


def test_an_invoiced_purchase_credits_once_paid():
    customer = CustomerFactory()
    wallet = wallet_of(customer, conversion_rate=D("0.5"))
    block = top_up(wallet, "40", reason=Reason.PURCHASED_CREDIT_INVOICED)
    invoice = block.invoice
    assert (invoice.invoice_type, invoice.invoice_status, invoice.total) == (
        "CREDIT",
        "FINALIZED",
        D(20),
    )
    assert invoice.invoice_number.startswith("INV-")
    assert block.transaction_status == "pending" and ledger.balance(wallet) == 0
    with pytest.raises(ValidationError):
        wallets.invoice_payment_update(invoice=invoice, payment_status="SUCCEEDED", amount=D(19))
    wallets.invoice_payment_update(invoice=invoice, payment_status="SUCCEEDED")
    assert ledger.balance(wallet) == D(40)
    wallets.invoice_payment_update(invoice=invoice, payment_status="SUCCEEDED")  # a replay
    assert ledger.balance(wallet) == D(40)
    with pytest.raises(InvalidTransition):
        invoice_void(invoice=Invoice.objects.get(pk=invoice.pk))


def test_voiding_an_unpaid_purchase_fails_its_credits():
    wallet = wallet_of(CustomerFactory())
    block = top_up(wallet, "40", reason=Reason.PURCHASED_CREDIT_INVOICED)
    invoice_void(invoice=block.invoice)
    block.refresh_from_db()
    assert block.transaction_status == "failed"
    with pytest.raises(InvalidTransition):
        wallets.invoice_payment_update(
            invoice=Invoice.objects.get(pk=block.invoice_id), payment_status="SUCCEEDED"
        )
    assert ledger.balance(wallet) == 0


def test_an_invoiced_purchase_must_cost_whole_cents():
    wallet = wallet_of(CustomerFactory(), conversion_rate=D("0.001"))
    with pytest.raises(ValidationError, match="whole amount"):
        top_up(wallet, "1", reason=Reason.PURCHASED_CREDIT_INVOICED)
    assert not Invoice.objects.exists() and not WalletTransaction.objects.exists()


# Plan grants


def test_a_recurring_grant_is_given_each_period_once():
    fee = PriceFactory(type=Price.Type.FIXED, meter=None, billing_model="FLAT_FEE", amount=D(20))
    CreditGrant.objects.create(
        name="Monthly credits",
        plan=fee.plan,
        credits=D(5),
        cadence=CreditGrant.Cadence.RECURRING,
        expiration_type=CreditGrant.Expiry.BILLING_CYCLE,
        priority=0,
    )
    CreditGrant.objects.create(
        name="Welcome", plan=fee.plan, credits=D(50), cadence=CreditGrant.Cadence.ONETIME
    )
    sub = SubscriptionFactory(plan=fee.plan)
    wallet = Wallet.objects.get(customer=sub.customer)
    first = wallet.transactions.get(description__startswith="Monthly")
    assert (first.credit_amount, first.expiry_date) == (D(5), sub.current_period_end)
    assert ledger.balance(wallet) == D(55)
    end = sub.current_period_end
    with time_machine.travel(end + timedelta(minutes=1)):
        periods_close(now=timezone.now())
        periods_close(now=timezone.now())
        assert ledger.balance(wallet) == D(55)  # the first 5 expired, 5 new
    sub.refresh_from_db()
    grants = wallet.transactions.filter(transaction_reason=Reason.SUBSCRIPTION_CREDIT_GRANT)
    assert grants.count() == 3
    assert grants.filter(expiry_date=sub.current_period_end).count() == 1


def test_an_archived_grant_is_not_given():
    fee = PriceFactory(type=Price.Type.FIXED, meter=None, billing_model="FLAT_FEE", amount=D(20))
    CreditGrant.objects.create(
        name="Old",
        plan=fee.plan,
        credits=D(5),
        cadence=CreditGrant.Cadence.RECURRING,
        status=CreditGrant.Status.ARCHIVED,
    )
    sub = SubscriptionFactory(plan=fee.plan)
    assert not Wallet.objects.filter(customer=sub.customer).exists()


# Auto top-up and alert state


def test_auto_top_up_fires_at_the_threshold_once_per_cooldown(o1_subscriptions):
    acme = o1_subscriptions["acme"]  # $202.50 of usage in the open period
    wallet = wallet_of(
        acme.customer,
        auto_topup_enabled=True,
        auto_topup_threshold=D(10),
        auto_topup_amount=D(100),
        auto_topup_cooldown=timedelta(hours=1),
    )
    top_up(wallet, "300")  # real-time: 97.50
    assert wallets.wallet_check(wallet_id=wallet.pk) is None
    wallets.wallet_debit(wallet=wallet, credits=D(90), description="adjustment")  # 7.50
    topped = wallets.wallet_check(wallet_id=wallet.pk)
    assert topped.credit_amount == D(100)
    assert topped.transaction_reason == Reason.PURCHASED_CREDIT_DIRECT
    assert wallets.wallet_check(wallet_id=wallet.pk) is None  # 107.50: armed again
    wallets.wallet_debit(wallet=wallet, credits=D(105), description="adjustment")
    assert wallets.wallet_check(wallet_id=wallet.pk) is None  # cooling down
    with time_machine.travel(timezone.now() + timedelta(hours=1, seconds=1)):
        assert wallets.wallet_check(wallet_id=wallet.pk) is not None


def test_the_real_time_balance_subtracts_the_open_periods_usage(o1_subscriptions):
    acme = o1_subscriptions["acme"]
    wallet = wallet_of(acme.customer)
    top_up(wallet, "250")
    live = wallets.wallet_balance(wallet)
    assert (live.balance, live.current_period_usage, live.real_time_balance) == (
        D(250),
        D("202.50"),
        D("47.50"),
    )


@pytest.mark.parametrize(
    ("balance", "state"),
    [("100", "ok"), ("49.99", "info"), ("19", "warning"), ("4.99", "in_alarm"), ("-1", "in_alarm")],
)
def test_the_alert_state_is_the_most_severe_threshold_crossed(balance, state):
    settings = {
        "alert_enabled": True,
        "alert_threshold_type": "absolute",
        "info": {"threshold": "50", "condition": "below"},
        "warning": {"threshold": "20", "condition": "below"},
        "critical": {"threshold": "5", "condition": "below"},
    }
    assert alerts.alert_state_for(settings, D(balance)) == state
    assert alerts.alert_state_for({**settings, "alert_enabled": False}, D(balance)) == "ok"


# Found in review: each failed before its fix.


def close_period_of(subscription):
    with time_machine.travel(subscription.current_period_end + timedelta(minutes=1)):
        wallets.credits_expire(now=timezone.now())  # the expiry beat may run first
        periods_close(now=timezone.now())
    return Invoice.objects.get(
        subscription=subscription, invoice_status="FINALIZED", billing_reason="SUBSCRIPTION_CYCLE"
    )


def test_credits_expiring_at_period_end_pay_that_periods_usage(o1_subscriptions):
    acme = o1_subscriptions["acme"]
    wallet = wallet_of(acme.customer)
    top_up(wallet, "10", reason=Reason.FREE_CREDIT_GRANT, expiry_date=acme.current_period_end)
    assert invoice_propose(subscription=acme).total_prepaid_credits_applied == D(10)
    invoice = close_period_of(acme)
    assert (invoice.total_prepaid_credits_applied, invoice.total) == (D(10), D("192.50"))
    assert ledger.balance(wallet) == 0
    assert not wallet.transactions.filter(transaction_reason=Reason.CREDIT_EXPIRED).exists()


def test_credits_expired_mid_period_pay_nothing_at_its_close(o1_subscriptions):
    acme = o1_subscriptions["acme"]
    wallet = wallet_of(acme.customer)
    top_up(wallet, "10", expiry_date=acme.current_period_end - timedelta(days=1))
    invoice = close_period_of(acme)
    assert invoice.total_prepaid_credits_applied == 0
    assert not wallet.transactions.filter(transaction_reason=Reason.CREDIT_EXPIRED).exists()
    wallets.credits_expire(now=timezone.now() + timedelta(days=40))  # once the period closed
    assert wallet.transactions.get(transaction_reason=Reason.CREDIT_EXPIRED).credit_amount == 10


def test_a_wallet_worth_a_rounded_up_cent_still_pays(o1_subscriptions):
    acme = o1_subscriptions["acme"]
    wallet = wallet_of(acme.customer, conversion_rate=D("0.3"))
    top_up(wallet, "3.333333333333")  # 0.9999999999999 USD
    top_up(wallet, "3.333333333333")
    assert ledger.balance(wallet) == D("6.666666666666")
    invoice = invoice_finalize(invoice=draft_of(acme))
    assert invoice.total_prepaid_credits_applied == D("1.99")
    assert invoice.wallet_transactions.get().amount == D("1.99")


def test_credits_bought_for_an_amount_are_worth_at_least_that_amount(o1_subscriptions):
    acme = o1_subscriptions["acme"]
    wallet = wallet_of(acme.customer, conversion_rate=D("0.3"))
    for _ in range(2):
        wallets.wallet_top_up(wallet=wallet, reason=Reason.PURCHASED_CREDIT_DIRECT, amount=D(1))
    invoice = invoice_finalize(invoice=draft_of(acme))
    assert invoice.total_prepaid_credits_applied == D("2.00")
    assert ledger.balance(wallet) == D("1e-12")  # rounded up twice, 2 × 3.333333333334


def test_the_debit_records_the_amount_applied_whatever_the_rate(o1_subscriptions):
    acme = o1_subscriptions["acme"]
    wallet = wallet_of(acme.customer, conversion_rate=D(7))
    top_up(wallet, "100")
    invoice = invoice_finalize(invoice=draft_of(acme))
    debit = invoice.wallet_transactions.get()
    assert (invoice.total_prepaid_credits_applied, debit.amount) == (D("202.50"), D("202.50"))
    assert debit.credit_amount == D("28.928571428571")


def test_one_subscription_failing_to_close_does_not_stop_the_others(o1_subscriptions, monkeypatch):
    from billing import services

    acme, globex = o1_subscriptions["acme"], o1_subscriptions["globex"]
    real = services.invoice_finalize

    def finalize(*, invoice):
        if invoice.subscription_id == acme.pk:
            raise RuntimeError("boom")
        return real(invoice=invoice)

    monkeypatch.setattr(services, "invoice_finalize", finalize)
    with time_machine.travel(globex.current_period_end + timedelta(minutes=1)):
        assert periods_close(now=timezone.now()) == 1
    assert Invoice.objects.filter(subscription=globex, invoice_status="FINALIZED").exists()
    assert draft_of(acme).period_start == acme.current_period_start


def test_a_customers_drafts_share_its_credits(o1_plan):
    from tests.factories import ingest

    customer = CustomerFactory()
    start = timezone.now() - timedelta(hours=1)
    first = SubscriptionFactory(customer=customer, plan=o1_plan, start_date=start)
    second = SubscriptionFactory(customer=customer, plan=o1_plan, start_date=start)
    ingest(
        {
            "event_id": "big",
            "event_name": "tokens",
            "external_customer_id": customer.external_id,
            "timestamp": timezone.now().isoformat(),
            "properties": {"model": "OpenAI O1", "prompt_type": "input", "tokens": 2_000_000},
        }
    )
    top_up(wallet_of(customer), "40")
    drafts = [invoice_propose(subscription=s) for s in (first, second)]
    assert [d.subtotal for d in drafts] == [D(30), D(30)]
    assert [d.total_prepaid_credits_applied for d in drafts] == [D(30), D(10)]
    assert invoice_propose(subscription=first).total_prepaid_credits_applied == D(30)


def test_an_invoice_paid_in_full_by_credits_is_paid(o1_subscriptions):
    acme = o1_subscriptions["acme"]
    top_up(wallet_of(acme.customer), "500")
    invoice = invoice_finalize(invoice=draft_of(acme))
    assert (invoice.payment_status, invoice.amount_remaining) == ("SUCCEEDED", D(0))
    assert invoice.paid_at is not None


def test_voiding_after_the_wallet_closed_voids_without_a_refund(o1_subscriptions):
    acme = o1_subscriptions["acme"]
    wallet = wallet_of(acme.customer)
    top_up(wallet, "20")
    invoice = invoice_finalize(invoice=draft_of(acme))
    wallets.wallet_terminate(wallet=wallet)
    invoice = invoice_void(invoice=invoice)
    assert invoice.invoice_status == "VOIDED"
    assert ledger.balance(wallet) == 0
    assert not wallet.transactions.filter(transaction_reason=Reason.INVOICE_VOID_REFUND).exists()


def test_auto_top_up_fires_once_per_crossing(o1_subscriptions):
    acme = o1_subscriptions["acme"]  # $202.50 of usage
    wallet = wallet_of(
        acme.customer, auto_topup_enabled=True, auto_topup_threshold=D(10), auto_topup_amount=D(5)
    )
    top_up(wallet, "207.50")  # real-time: 5
    assert wallets.wallet_check(wallet_id=wallet.pk).credit_amount == D(5)  # real-time: 10
    assert wallets.wallet_check(wallet_id=wallet.pk) is None  # still the same crossing
    top_up(wallet, "1")  # above the threshold again: re-armed
    assert wallets.wallet_check(wallet_id=wallet.pk) is None
    wallets.wallet_debit(wallet=wallet, credits=D(2), description="adjustment")
    assert wallets.wallet_check(wallet_id=wallet.pk) is not None


def test_an_invoiced_auto_top_up_must_cost_whole_cents():
    with pytest.raises(ValidationError, match="whole"):
        wallet_of(
            CustomerFactory(),
            conversion_rate=D("0.001"),
            auto_topup_enabled=True,
            auto_topup_invoicing=True,
            auto_topup_threshold=D(10),
            auto_topup_amount=D(12345),
        )
    assert not Wallet.objects.exists()


def test_a_grant_expiring_after_a_duration_needs_one():
    fee = PriceFactory(type=Price.Type.FIXED, meter=None, billing_model="FLAT_FEE", amount=D(20))
    grant = CreditGrant(
        name="x",
        plan=fee.plan,
        credits=D(5),
        cadence=CreditGrant.Cadence.ONETIME,
        expiration_type=CreditGrant.Expiry.DURATION,
    )
    with pytest.raises(ValidationError) as error:
        grant.full_clean()
    assert set(error.value.message_dict) == {"expiration_duration", "expiration_duration_unit"}


def test_a_wallets_currency_rate_and_type_do_not_change():
    wallet = wallet_of(CustomerFactory())
    top_up(wallet, "10")
    for name, value in (
        ("conversion_rate", D(2)),
        ("currency", "eur"),
        ("wallet_type", "POST_PAID"),
    ):
        with pytest.raises(ValidationError):
            wallets.wallet_update(wallet=wallet, **{name: value})
    wallet.refresh_from_db()
    assert (wallet.conversion_rate, wallet.currency, wallet.wallet_type) == (1, "usd", "PRE_PAID")


def test_revenue_counts_usage_once_not_again_as_credits_bought(o1_subscriptions):
    from billing import overview as ov

    acme = o1_subscriptions["acme"]
    wallet = wallet_of(acme.customer)
    bought = top_up(wallet, "60", reason=Reason.PURCHASED_CREDIT_INVOICED)
    wallets.invoice_payment_update(invoice=bought.invoice, payment_status="SUCCEEDED")
    assert invoice_propose(subscription=acme).total == D("142.50")
    assert ov.revenue_proposed() == {"usd": D("217.50")}  # spend, however it is paid
    assert [c.amount for c in ov.top_customers()] == [D("202.50"), D("15.00")]
    invoice_finalize(invoice=draft_of(acme))
    now = timezone.now() + timedelta(seconds=1)
    start = ov.month_start(now)
    assert ov.revenue_billed(start=start, end=now) == {"usd": D("202.50")}
    by_plan = ov.revenue_by_plan(start=start, end=now)
    assert [(r.name, r.billed) for r in by_plan] == [(acme.plan.name, D("202.50"))]
    assert sum(r.billed for r in ov.revenue_by_feature(start=start, end=now)) == D("202.50")


def event(customer, n, tokens, prompt_type="input"):
    return {
        "event_id": f"rt-{n}",
        "event_name": "tokens",
        "external_customer_id": customer.external_id,
        "timestamp": timezone.now().isoformat(),
        "properties": {"model": "OpenAI O1", "prompt_type": prompt_type, "tokens": tokens},
    }


def test_the_real_time_balance_sees_every_change_it_depends_on_at_once(o1_subscriptions):
    from billing.services import subscription_period_close_early
    from tests.factories import ingest

    acme = o1_subscriptions["acme"]
    wallet = wallet_of(acme.customer)
    top_up(wallet, "1000")

    def usage():
        return wallets.wallet_balance(wallet).current_period_usage

    assert usage() == D("202.50")
    ingest(event(acme.customer, 1, 1_000_000), fold=False)  # unfolded
    assert usage() == D("217.50")
    ingest(event(acme.customer, 2, 1_000_000))  # and a fold
    assert usage() == D("232.50")
    PriceFactory(plan=acme.plan, meter=acme.plan.prices.first().meter, amount=D(1))
    assert usage() == D("239.50")  # and $1 per million input tokens: 7
    early = subscription_period_close_early(subscription=acme, now=timezone.now())
    assert usage() == 0  # the continuing part has no usage of its own yet
    invoice_void(invoice=early)
    assert usage() == D("239.50")  # what the voided part billed falls to this part


def test_any_change_to_the_credits_refreshes_the_drafts(
    o1_subscriptions, django_capture_on_commit_callbacks
):
    acme = o1_subscriptions["acme"]
    with django_capture_on_commit_callbacks(execute=True):
        wallet = wallet_of(acme.customer)
        top_up(wallet, "50")
    assert draft_of(acme).total_prepaid_credits_applied == D(50)
    with django_capture_on_commit_callbacks(execute=True):
        wallets.wallet_debit(wallet=wallet, credits=D(20), description="correction")
    assert draft_of(acme).total_prepaid_credits_applied == D(30)
    with django_capture_on_commit_callbacks(execute=True):
        wallets.wallet_update(wallet=wallet, wallet_status=Wallet.Status.FROZEN)
    assert draft_of(acme).total_prepaid_credits_applied == 0


def test_new_credits_cannot_expire_in_the_past():
    customer = CustomerFactory()
    past = timezone.now() - timedelta(seconds=1)
    with pytest.raises(ValidationError, match="future"):
        wallet_of(customer, initial_credits=D(5), initial_credits_expiry=past)
    wallet = wallet_of(customer)
    with pytest.raises(ValidationError, match="future"):
        top_up(wallet, "5", expiry_date=past)
    assert not WalletTransaction.objects.exists()


def test_credits_bought_for_an_amount_record_and_invoice_that_amount():
    wallet = wallet_of(CustomerFactory(), conversion_rate=D(3))
    direct = wallets.wallet_top_up(
        wallet=wallet, reason=Reason.PURCHASED_CREDIT_DIRECT, amount=D(10)
    )
    assert (direct.credit_amount, direct.amount) == (D("3.333333333334"), D(10))
    bought = wallets.wallet_top_up(
        wallet=wallet, reason=Reason.PURCHASED_CREDIT_INVOICED, amount=D(10)
    )
    assert (bought.amount, bought.invoice.total) == (D(10), D(10))
    with pytest.raises(ValidationError) as error:
        wallets.wallet_top_up(
            wallet=wallet, reason=Reason.PURCHASED_CREDIT_INVOICED, amount=D("10.005")
        )
    assert set(error.value.message_dict) == {"amount"}


def test_a_grant_expires_within_ten_years_of_its_grant():
    fee = PriceFactory(type=Price.Type.FIXED, meter=None, billing_model="FLAT_FEE", amount=D(20))
    grant = CreditGrant(
        name="x",
        plan=fee.plan,
        credits=D(5),
        cadence=CreditGrant.Cadence.ONETIME,
        expiration_type=CreditGrant.Expiry.DURATION,
        expiration_duration=3651,
        expiration_duration_unit=CreditGrant.DurationUnit.DAY,
    )
    with pytest.raises(ValidationError) as error:
        grant.full_clean()
    assert set(error.value.message_dict) == {"expiration_duration"}


def test_the_real_time_balance_follows_a_renamed_customer(o1_subscriptions):
    acme = o1_subscriptions["acme"]
    wallet = wallet_of(acme.customer)
    assert wallets.wallet_balance(wallet).current_period_usage == D("202.50")
    acme.customer.external_id = "acme-renamed"
    acme.customer.save()
    assert wallets.wallet_balance(wallet).current_period_usage == 0


def test_the_real_time_balance_reads_the_external_id_afresh_not_from_a_held_wallet(
    o1_subscriptions,
):
    acme = o1_subscriptions["acme"]
    held = Wallet.objects.select_related("customer").get(pk=wallet_of(acme.customer).pk)
    assert wallets.wallet_balance(held).current_period_usage == D("202.50")
    Customer = type(acme.customer)
    Customer.objects.filter(pk=acme.customer.pk).update(external_id="acme-renamed")
    assert held.customer.external_id == "acme"  # what the held object still says
    assert wallets.wallet_balance(held).current_period_usage == 0


def test_a_cached_real_time_balance_costs_three_queries(
    o1_subscriptions, django_assert_num_queries
):
    acme = o1_subscriptions["acme"]
    wallet = wallet_of(acme.customer)
    top_up(wallet, "300")
    assert wallets.wallet_balance(wallet).real_time_balance == D("97.50")
    # the ledger, the open periods' signature and the customer's usage state
    with django_assert_num_queries(3):
        assert wallets.wallet_balance(wallet).real_time_balance == D("97.50")
