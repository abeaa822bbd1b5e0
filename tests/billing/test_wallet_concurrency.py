"""Issue 12: the wallet ledger under real concurrency on PostgreSQL. Threads with their own
connections start together at a barrier; whatever the interleaving, the ledger stays exact:
a key tops up once, debits take what their consumptions say, no block goes below zero, and
one crossing of the auto top-up threshold tops up once."""

import random
import threading
import time
from datetime import timedelta
from decimal import Decimal

import pytest
from django.core.exceptions import ValidationError
from django.db import transaction
from django.db.models import Sum
from django.utils import timezone

from billing import ledger, services
from billing.models import (
    CreditConsumption,
    CreditGrant,
    CreditGrantApplication,
    Invoice,
    Subscription,
    Wallet,
    WalletTransaction,
)
from billing.wallets import wallet_check, wallet_create, wallet_debit, wallet_top_up
from catalog.models import Price
from metering.ingestion import event_parse, events_ingest, meters_by_event_name
from tests.billing.test_late_usage import finish, in_thread, require_postgresql
from tests.factories import (
    CustomerFactory,
    MeterFactory,
    PlanFactory,
    PriceFactory,
    SubscriptionFactory,
    ingest,
)

pytestmark = pytest.mark.django_db(transaction=True)

Reason = WalletTransaction.Reason
CREDIT, DEBIT = WalletTransaction.Type.CREDIT, WalletTransaction.Type.DEBIT
COMPLETED = WalletTransaction.Status.COMPLETED


@pytest.fixture
def plan():
    """$15 per million tokens, pro rata: 1M tokens of usage is $15.00."""
    plan = PlanFactory()
    PriceFactory(plan=plan, meter=MeterFactory(), amount=Decimal(15), round=Price.Round.NONE)
    return plan


@pytest.fixture
def subscription(plan):
    require_postgresql()
    day_ago = timezone.now() - timedelta(days=1)
    return SubscriptionFactory(
        customer=CustomerFactory(external_id="acme"),
        plan=plan,
        start_date=day_ago,
        billing_anchor=day_ago,
    )


@pytest.fixture
def wallet(subscription):
    return wallet_create(
        customer=subscription.customer, currency="usd", initial_credits=Decimal(100)
    )


def tokens(n: int, amount: int) -> dict:
    return {
        "event_id": f"t-{n}",
        "event_name": "tokens",
        "external_customer_id": "acme",
        "timestamp": (timezone.now() - timedelta(minutes=5)).isoformat(),
        "properties": {"tokens": amount},
    }


def ingest_raw(*raws):
    meters = meters_by_event_name()
    events_ingest(events=[event_parse(r, meters=meters, now=timezone.now()) for r in raws])


def race(n: int, target) -> list:
    """``target(i)`` in ``n`` threads released together; their results, errors raised."""
    barrier = threading.Barrier(n)

    def run(i):
        barrier.wait(10)
        return target(i)

    threads = [in_thread(run, i) for i in range(n)]
    return [finish(t, timeout=60) for t in threads]


def race_outcomes(n: int, target) -> list:
    """As ``race``, with each thread's error returned in place of its result."""

    def guarded(i):
        try:
            return target(i)
        except ValidationError as error:
            return error

    return race(n, guarded)


def assert_ledger_exact(wallet: Wallet) -> None:
    """Each debit took exactly its amount from blocks; no block below zero or consumed while
    not completed; the balance is completed credits less debits, less what is left of
    expired blocks whose debit waits for the customer's open period to close."""
    entries = WalletTransaction.objects.filter(wallet=wallet)
    for entry in entries.filter(type=DEBIT):
        took = entry.consumptions.aggregate(total=Sum("credits"))["total"]
        assert took == entry.credit_amount, entry
    for block in entries.filter(type=CREDIT):
        consumed = block.consumed_by.aggregate(total=Sum("credits"))["total"] or 0
        assert 0 <= consumed <= block.credit_amount, block
        if consumed:
            assert block.transaction_status == COMPLETED, block
    credited = entries.filter(type=CREDIT, transaction_status=COMPLETED).aggregate(
        total=Sum("credit_amount")
    )["total"] or Decimal(0)
    debited = entries.filter(type=DEBIT).aggregate(total=Sum("credit_amount"))["total"] or 0
    now = timezone.now()
    lapsed = ledger.blocks(wallet).filter(expiry_date__lte=now)
    waiting = sum((block.remaining for block in lapsed), Decimal(0))
    assert ledger.balance(wallet, at=now) == credited - debited - waiting


def test_parallel_top_ups_with_one_key_add_one_block(wallet):
    blocks = race(
        8,
        lambda i: wallet_top_up(
            wallet=wallet,
            reason=Reason.PURCHASED_CREDIT_DIRECT,
            credits=Decimal("12.5"),
            idempotency_key="purchase-1",
        ),
    )
    assert len({b.pk for b in blocks}) == 1
    assert WalletTransaction.objects.filter(idempotency_key="purchase-1").count() == 1
    assert ledger.balance(wallet) == Decimal("112.5")
    assert_ledger_exact(wallet)


def test_parallel_invoiced_top_ups_with_one_key_make_one_invoice(wallet):
    blocks = race(
        6,
        lambda i: wallet_top_up(
            wallet=wallet,
            reason=Reason.PURCHASED_CREDIT_INVOICED,
            credits=Decimal(20),
            idempotency_key="buy-1",
        ),
    )
    assert len({b.pk for b in blocks}) == 1
    assert Invoice.objects.filter(invoice_type=Invoice.Type.CREDIT).count() == 1
    assert ledger.balance(wallet) == 100  # pending until paid


def test_parallel_distinct_top_ups_all_count(wallet):
    race(
        8,
        lambda i: wallet_top_up(
            wallet=wallet,
            reason=Reason.PURCHASED_CREDIT_DIRECT,
            credits=Decimal(i + 1),
            idempotency_key=f"purchase-{i}",
        ),
    )
    assert ledger.balance(wallet) == 100 + sum(range(1, 9))
    assert_ledger_exact(wallet)


def test_parallel_debits_never_overdraw(wallet):
    outcomes = race_outcomes(
        10,
        lambda i: wallet_debit(wallet=wallet, credits=Decimal(15), description=f"manual {i}"),
    )
    taken = [o for o in outcomes if isinstance(o, WalletTransaction)]
    assert len(taken) == 6  # 6 × 15 = 90 of 100; a seventh would need 105
    assert all(isinstance(o, ledger.InsufficientCredits) for o in outcomes if o not in taken)
    assert ledger.balance(wallet) == 10
    assert_ledger_exact(wallet)


def test_an_invoiced_top_up_and_a_finalization_do_not_deadlock(subscription, wallet):
    """A purchase locks the wallet and then finalizes its purchase invoice; a subscription's
    finalization holds the customer's usage fence and then locks the wallet. The purchase
    invoice reads no usage, so it must not wait for the fence."""
    ingest(tokens(1, 2_000_000))
    draft = Invoice.objects.get(subscription=subscription, invoice_status="DRAFT")
    locked, go = threading.Event(), threading.Event()

    def purchase():
        with transaction.atomic():
            ledger.wallet_lock(wallet.pk)
            locked.set()
            go.wait(10)
            return wallet_top_up(
                wallet=wallet, reason=Reason.PURCHASED_CREDIT_INVOICED, credits=Decimal(10)
            )

    buying = in_thread(purchase)
    assert locked.wait(10)
    finalizing = in_thread(lambda: services.invoice_finalize(invoice=draft))
    time.sleep(0.5)  # finalization takes the fence, then waits for the wallet
    go.set()
    block = finish(buying)
    invoice = finish(finalizing)
    assert block.transaction_status == WalletTransaction.Status.PENDING
    assert invoice.total_prepaid_credits_applied == Decimal("30.00")
    assert_ledger_exact(wallet)


def payments(wallet):
    return WalletTransaction.objects.filter(
        wallet=wallet, transaction_reason=Reason.INVOICE_PAYMENT
    )


def test_finalizing_twice_at_once_consumes_once(subscription, wallet):
    ingest(tokens(1, 2_000_000))
    draft = Invoice.objects.get(subscription=subscription, invoice_status="DRAFT")
    outcomes = race_outcomes(4, lambda i: services.invoice_finalize(invoice=draft))
    finalized = [o for o in outcomes if isinstance(o, Invoice)]
    assert len(finalized) == 1
    assert all(isinstance(o, services.InvalidTransition) for o in outcomes if o not in finalized)
    assert payments(wallet).get().amount == Decimal("30.00")
    assert Invoice.objects.get(pk=draft.pk).total_prepaid_credits_applied == Decimal("30.00")
    assert ledger.balance(wallet) == 70
    assert_ledger_exact(wallet)


def test_a_finalization_retried_after_a_crash_consumes_once(subscription, wallet):
    ingest(tokens(1, 2_000_000))
    draft = Invoice.objects.get(subscription=subscription, invoice_status="DRAFT")

    class Crash(Exception):
        pass

    with pytest.raises(Crash), transaction.atomic():
        services.invoice_finalize(invoice=draft)
        assert payments(wallet).count() == 1
        raise Crash  # the process dies before the commit
    assert not payments(wallet).exists() and ledger.balance(wallet) == 100
    invoice = services.invoice_finalize(invoice=draft)
    # Consuming again for the same invoice (a retried step) applies what was applied, once.
    from billing.credits import invoice_credits_consume

    again = invoice_credits_consume(invoice=invoice, usage=Decimal(30), now=timezone.now())
    assert again == invoice.total_prepaid_credits_applied == Decimal("30.00")
    assert payments(wallet).count() == 1 and ledger.balance(wallet) == 70
    assert_ledger_exact(wallet)


def auto_topup(wallet, **fields):
    """Turn auto top-up on (after the usage that crossed, which eager tasks would check)."""
    defaults = {"auto_topup_threshold": Decimal(20), "auto_topup_amount": Decimal(50)}
    Wallet.objects.filter(pk=wallet.pk).update(auto_topup_enabled=True, **{**defaults, **fields})


def auto_top_ups(wallet):
    return WalletTransaction.objects.filter(wallet=wallet, type=CREDIT, description="Auto top-up")


@pytest.mark.parametrize("cooldown", [timedelta(0), timedelta(hours=1)])
def test_concurrent_checks_of_one_crossing_top_up_once(subscription, wallet, cooldown):
    ingest(tokens(1, 6_000_000))  # $90 of usage: 100 - 90 = 10 ≤ 20
    auto_topup(wallet, auto_topup_cooldown=cooldown)
    made = race(8, lambda i: wallet_check(wallet_id=wallet.pk))
    assert sum(m is not None for m in made) == 1
    assert auto_top_ups(wallet).count() == 1
    assert ledger.balance(wallet) == 150
    assert Wallet.objects.get(pk=wallet.pk).last_auto_topup_at is not None
    assert_ledger_exact(wallet)


def test_concurrent_checks_with_an_invoiced_top_up_buy_once(subscription, wallet):
    ingest(tokens(1, 6_000_000))
    auto_topup(wallet, auto_topup_invoicing=True)  # no cooldown: the unpaid purchase stops more
    made = race(8, lambda i: wallet_check(wallet_id=wallet.pk))
    assert sum(m is not None for m in made) == 1
    [block] = auto_top_ups(wallet)
    assert block.transaction_status == WalletTransaction.Status.PENDING
    assert Invoice.objects.filter(invoice_type=Invoice.Type.CREDIT).count() == 1
    race(4, lambda i: wallet_check(wallet_id=wallet.pk))  # still below, still unpaid
    assert auto_top_ups(wallet).count() == 1


def test_ingest_finalize_top_ups_and_checks_together_leave_the_ledger_exact(subscription, wallet):
    auto_topup(wallet, auto_topup_cooldown=timedelta(hours=1))
    ingest(tokens(0, 1_000_000))
    draft = Invoice.objects.get(subscription=subscription, invoice_status="DRAFT")
    rng = random.Random(12)
    batches = [
        [tokens(b * 50 + i + 1, rng.randint(1, 10_000)) for i in range(50)] for b in range(8)
    ]

    def work(i):
        if i < 4:  # ingest
            for batch in batches[i::4]:
                ingest_raw(*batch)
        elif i == 4:
            return services.invoice_finalize(invoice=draft)
        elif i < 8:
            for n in range(5):
                wallet_top_up(
                    wallet=wallet,
                    reason=Reason.PURCHASED_CREDIT_DIRECT,
                    credits=Decimal("1.25"),
                    idempotency_key=f"t{i}-{n % 3}",  # some replays
                )
        else:
            for _ in range(5):
                wallet_check(wallet_id=wallet.pk)

    results = race(10, work)
    invoice = results[4]
    assert invoice.invoice_status == Invoice.Status.FINALIZED
    [payment] = payments(wallet)
    assert payment.amount == invoice.total_prepaid_credits_applied == invoice.subtotal
    assert invoice.total == 0
    purchases = WalletTransaction.objects.filter(
        wallet=wallet, transaction_reason=Reason.PURCHASED_CREDIT_DIRECT
    ).exclude(description="Auto top-up")
    assert purchases.count() == 9  # 3 keys × 3 threads
    assert auto_top_ups(wallet).count() <= 1
    expected = 100 + Decimal("11.25") + 50 * auto_top_ups(wallet).count() - invoice.subtotal
    assert ledger.balance(wallet) == expected
    assert_ledger_exact(wallet)


def test_stress_random_interleavings_keep_the_ledger_exact(subscription, wallet):
    """Rounds of five threads, each doing a random ledger operation, for a few seconds."""
    auto_topup(wallet, auto_topup_threshold=Decimal(40), auto_topup_amount=Decimal(25))
    rng = random.Random(2026)
    deadline = time.monotonic() + 4
    rounds = 0
    events = iter(range(1, 10**6))
    while time.monotonic() < deadline:
        ops = [rng.choice("tkdcei") for _ in range(5)]
        amounts = [Decimal(rng.randint(1, 3000)) / 100 for _ in range(5)]
        now = timezone.now()

        def op(i, ops=ops, amounts=amounts, r=rounds, now=now):
            kind, credits = ops[i], amounts[i]
            if kind == "t":
                return wallet_top_up(
                    wallet=wallet,
                    reason=Reason.PURCHASED_CREDIT_DIRECT,
                    credits=credits,
                    expiry_date=now + timedelta(milliseconds=rng.choice([300, 10**8])),
                )
            if kind == "k":  # a replayed key within the round
                return wallet_top_up(
                    wallet=wallet,
                    reason=Reason.FREE_CREDIT_GRANT,
                    credits=Decimal(3),
                    idempotency_key=f"round-{r}",
                )
            if kind == "d":
                return wallet_debit(wallet=wallet, credits=credits, description="stress")
            if kind == "c":
                return wallet_check(wallet_id=wallet.pk)
            if kind == "e":
                return ledger.expire_due(now=timezone.now())
            return ingest_raw(tokens(next(events) + 1000 * r, int(credits * 1000)))

        race_outcomes(5, op)
        rounds += 1
        keyed = WalletTransaction.objects.filter(
            wallet=wallet, idempotency_key=f"round-{rounds - 1}"
        )
        assert keyed.count() <= 1
    time.sleep(0.3)
    ledger.expire_due(now=timezone.now())
    assert rounds >= 5
    assert_ledger_exact(wallet)
    assert not CreditConsumption.objects.filter(credits__lte=0).exists()


def test_a_recurring_grant_is_given_once_a_period_when_periods_close_twice_at_once(plan):
    require_postgresql()
    CreditGrant.objects.create(
        name="Monthly credits",
        plan=plan,
        credits=Decimal(5),
        cadence=CreditGrant.Cadence.RECURRING,
        expiration_type=CreditGrant.Expiry.BILLING_CYCLE,
    )
    subscription = SubscriptionFactory(
        customer=CustomerFactory(external_id="acme"),
        plan=plan,
        start_date=timezone.now() - timedelta(days=1),
    )
    assert CreditGrantApplication.objects.filter(subscription=subscription).count() == 1
    ended = timezone.now() - timedelta(seconds=1)
    Subscription.objects.filter(pk=subscription.pk).update(current_period_end=ended)
    closed = race(3, lambda i: services.periods_close(now=timezone.now()))
    assert sorted(closed) == [0, 0, 1]
    applications = CreditGrantApplication.objects.filter(subscription=subscription)
    assert sorted(a.period_start for a in applications)[1] == ended
    assert applications.count() == 2
    grants = WalletTransaction.objects.filter(transaction_reason=Reason.SUBSCRIPTION_CREDIT_GRANT)
    assert grants.count() == 2 and sum(g.credit_amount for g in grants) == 10
    assert {a.transaction_id for a in applications} == {g.pk for g in grants}
