"""Issue 12: auto top-up end to end with a real Celery worker. Ingest over HTTP pushes the
real-time balance to the threshold; the recompute the ingest asks for (``billing.tasks``)
checks the customer's wallets, and the top-up is there within 2 s, once per cooldown."""

import time
from datetime import timedelta
from decimal import Decimal

import pytest

from billing import ledger
from billing.models import Wallet, WalletTransaction
from billing.wallets import wallet_balance, wallet_create
from tests.integration.conftest import post, setup, tokens, wait_for, worker  # noqa: F401 (fixtures)

pytestmark = pytest.mark.integration


def auto_top_ups(wallet):
    return WalletTransaction.objects.filter(wallet=wallet, description="Auto top-up")


def topping_up_wallet(subscription):
    """100 credits, topped up by 50 at 20 or below, at most once an hour."""
    return wallet_create(
        customer=subscription.customer,
        currency="usd",
        initial_credits=Decimal(100),
        auto_topup_enabled=True,
        auto_topup_threshold=Decimal(20),
        auto_topup_amount=Decimal(50),
        auto_topup_cooldown=timedelta(hours=1),
    )


def test_a_crossing_ingested_over_http_tops_up_within_2_s_once_per_cooldown(setup):  # noqa: F811
    client, subscription = setup
    wallet = topping_up_wallet(subscription)
    # 5M input tokens: 5 packages of $15 = $75, so 25 credits left, above the threshold.
    assert post(client, "events", tokens("a", 5_000_000)).status_code == 202
    wait_for(lambda: wallet_balance(wallet).current_period_usage == 75, timeout=10)
    time.sleep(1.5)  # the recompute the event asked for has run and checked the wallet
    assert not auto_top_ups(wallet).exists()

    sent = time.monotonic()
    assert post(client, "events", tokens("b", 1_000_000)).status_code == 202  # $90: 10 left
    [block] = wait_for(lambda: list(auto_top_ups(wallet)), timeout=10)
    assert time.monotonic() - sent < 2, "the top-up came more than 2 s after the event"
    assert block.transaction_reason == WalletTransaction.Reason.PURCHASED_CREDIT_DIRECT
    assert block.credit_amount == 50 and ledger.balance(wallet) == 150
    assert Wallet.objects.get(pk=wallet.pk).last_auto_topup_at is not None
    assert wallet_balance(wallet).real_time_balance == 60

    # Crossing again inside the cooldown tops up nothing more.
    assert post(client, "events", tokens("c", 3_000_000)).status_code == 202  # $135: 15 left
    wait_for(lambda: wallet_balance(wallet).current_period_usage == 135, timeout=10)
    time.sleep(2.5)
    assert auto_top_ups(wallet).count() == 1
    assert wallet_balance(wallet).real_time_balance == 15


def test_a_worker_killed_before_the_check_tops_up_once_after_restart(setup, worker):  # noqa: F811
    """The crossing's recompute (and so its wallet check) was queued to a worker that died
    before running it; the next worker sweeps the pending request and tops up exactly once."""
    client, subscription = setup
    worker.stop()
    worker.start(visibility_timeout=60)
    wallet = topping_up_wallet(subscription)
    assert post(client, "events", tokens("k", 6_000_000)).status_code == 202  # $90: 10 left
    worker.kill()  # the recompute waits out its 1 s countdown: it has not run
    assert not auto_top_ups(wallet).exists()
    worker.start(visibility_timeout=60)
    [block] = wait_for(lambda: list(auto_top_ups(wallet)), timeout=10)
    assert block.credit_amount == 50
    time.sleep(2)  # a redelivered or duplicate check would have run by now
    assert auto_top_ups(wallet).count() == 1 and ledger.balance(wallet) == 150
