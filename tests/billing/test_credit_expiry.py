"""Issue 12: expired credits. A block stops counting the moment it expires, before any beat
runs; the beat task debits what is left of it once (CREDIT_EXPIRED), never below zero, even
when several runs race on PostgreSQL."""

import time
from datetime import timedelta
from decimal import Decimal

import pytest
from django.db import transaction
from django.db.models import Sum
from django.utils import timezone

from billing import ledger, services, tasks
from billing.models import Invoice, WalletTransaction
from billing.wallets import wallet_balance, wallet_create, wallet_debit
from tests.billing.test_late_usage import require_postgresql
from tests.billing.test_wallet_concurrency import (  # noqa: F401 (fixtures)
    assert_ledger_exact,
    plan,
    race,
    subscription,
    tokens,
)
from tests.factories import CustomerFactory, ingest

Reason = WalletTransaction.Reason
EXPIRED = Reason.CREDIT_EXPIRED


def expired_debits(wallet):
    return WalletTransaction.objects.filter(wallet=wallet, transaction_reason=EXPIRED)


def top_up(wallet, credits, expiry, priority=None):
    with transaction.atomic():
        block, _ = ledger.credit(
            wallet=wallet,
            credits=Decimal(credits),
            reason=Reason.FREE_CREDIT_GRANT,
            expiry_date=expiry,
            priority=priority,
        )
    return block


@pytest.mark.django_db
def test_an_expired_block_counts_nowhere_before_the_beat_runs():
    now = timezone.now()
    wallet = wallet_create(customer=CustomerFactory(), currency="usd")
    top_up(wallet, 10, now + timedelta(days=30))
    gone = top_up(wallet, 7, now - timedelta(seconds=1), priority=1)  # first in line, expired
    assert ledger.balance(wallet) == 10
    assert wallet_balance(wallet).credit_balance == 10
    assert not expired_debits(wallet).exists()  # the beat has not run
    with pytest.raises(ledger.InsufficientCredits):
        wallet_debit(wallet=wallet, credits=Decimal(11), description="more than is usable")
    debit = wallet_debit(wallet=wallet, credits=Decimal(4), description="usage")
    assert {c.credit_id for c in debit.consumptions.all()} != {gone.pk}
    assert not gone.consumed_by.exists()


@pytest.mark.django_db
def test_the_beat_task_debits_each_expired_remainder_once():
    now = timezone.now()
    wallet = wallet_create(customer=CustomerFactory(), currency="usd")
    first = top_up(wallet, 10, now + timedelta(minutes=5), priority=1)
    never = top_up(wallet, 5, None)
    wallet_debit(wallet=wallet, credits=Decimal(3), description="usage")  # from ``first``
    spent = top_up(wallet, 2, now + timedelta(minutes=5))
    wallet_debit(wallet=wallet, credits=Decimal(7), description="usage")  # the rest of first
    wallet_debit(wallet=wallet, credits=Decimal(2), description="usage")  # all of ``spent``
    assert ledger.balance(wallet) == 5  # what is left of ``never``; nothing expired yet
    late = top_up(wallet, Decimal("4.5"), now - timedelta(seconds=1))
    assert tasks.credits_expire() == 1  # only ``late`` has something left
    [debit] = expired_debits(wallet)
    assert debit.credit_amount == Decimal("4.5")
    assert [(c.credit_id, c.credits) for c in debit.consumptions.all()] == [
        (late.pk, Decimal("4.5"))
    ]
    assert tasks.credits_expire() == 0  # again: nothing
    assert ledger.balance(wallet) == 5 and not never.consumed_by.exists()
    # Blocks used up before they expired leave with no debit.
    assert not expired_debits(wallet).filter(consumptions__credit__in=[first, spent]).exists()
    assert_ledger_exact(wallet)


@pytest.mark.django_db(transaction=True)
def test_concurrent_expiry_runs_debit_each_block_once():
    require_postgresql()
    now = timezone.now()
    # No open period: one would hold the debit until it closes (``ledger.expire_due``).
    wallet = wallet_create(customer=CustomerFactory(), currency="usd")
    soon = now + timedelta(milliseconds=500)
    blocks = [top_up(wallet, n + 1, soon) for n in range(6)]
    # Takes the first two blocks (1 + 2) whole: they have nothing left to expire.
    wallet_debit(wallet=wallet, credits=Decimal(3), description="usage before expiry")
    top_up(wallet, 100, None)
    time.sleep(max(0.0, (soon - timezone.now()).total_seconds()) + 0.05)
    left_before = {b.pk: b.credit_amount for b in blocks}
    for part in WalletTransaction.objects.get(description="usage before expiry").consumptions.all():
        left_before[part.credit_id] -= part.credits
    made = race(4, lambda i: ledger.expire_due(now=timezone.now()))
    assert sum(made) == 4 == sum(1 for left in left_before.values() if left > 0)
    for block in blocks:
        debits = expired_debits(wallet).filter(consumptions__credit=block)
        assert debits.count() == (1 if left_before[block.pk] > 0 else 0)
        consumed = block.consumed_by.aggregate(total=Sum("credits"))["total"] or 0
        assert consumed == block.credit_amount  # all gone, none below zero
    assert ledger.balance(wallet) == 100
    assert_ledger_exact(wallet)


@pytest.mark.django_db(transaction=True)
def test_expiry_racing_a_finalization_takes_each_credit_once(subscription):  # noqa: F811
    """A block that expires while an invoice is finalized is either consumed by it (it was
    usable then) or expired, never both."""
    now = timezone.now()
    wallet = wallet_create(customer=subscription.customer, currency="usd")
    top_up(wallet, 20, now + timedelta(milliseconds=400))
    top_up(wallet, 40, None)
    ingest(tokens(1, 2_000_000))  # $30 of usage
    draft = Invoice.objects.get(subscription=subscription, invoice_status="DRAFT")

    def work(i):
        if i == 0:
            return services.invoice_finalize(invoice=draft)
        for _ in range(10):
            ledger.expire_due(now=timezone.now())

    race(3, work)
    invoice = Invoice.objects.get(pk=draft.pk)
    assert invoice.total_prepaid_credits_applied == 30
    ledger.expire_due(now=now + timedelta(seconds=1))
    assert expired_debits(wallet).count() <= 1
    # What lapsed is debited once the open period closes (``ledger.expire_due``); until then
    # it counts nowhere.
    lapsed = ledger.blocks(wallet).filter(expiry_date__lte=timezone.now())
    left = sum((b.remaining for b in lapsed), Decimal(0))
    expired = sum(d.credit_amount for d in expired_debits(wallet))
    assert ledger.balance(wallet) + expired + left == 30
    assert_ledger_exact(wallet)
