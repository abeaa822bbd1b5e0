"""A buy-credits form submitted twice at once (a double click) buys once, and a customer
without a wallet gets one, on PostgreSQL where the requests really run at the same time."""

import os
import threading
from decimal import Decimal

import pytest
from django.db import connection

from billing.models import Invoice, Wallet, WalletTransaction
from billing.portal.services import credits_buy
from metering.models import Customer

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def postgres():
    if connection.vendor != "postgresql":
        reason = "concurrent purchases need PostgreSQL (DATABASE_URL=postgres://…)"
        if os.environ.get("CI"):
            pytest.fail(reason)
        pytest.skip(reason)


def buy_at_once(customer, *, threads: int, key: str):
    start, blocks, errors = threading.Barrier(threads), [], []

    def run():
        start.wait()
        try:
            blocks.append(credits_buy(customer=customer, credits=Decimal(20), idempotency_key=key))
        except Exception as error:  # reported below: any failure fails the test
            errors.append(error)
        finally:
            connection.close()

    workers = [threading.Thread(target=run) for _ in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=60)
    return blocks, errors


def test_the_same_form_submitted_six_times_at_once_buys_once(postgres, o1_subscriptions):
    globex = Customer.objects.get(external_id="globex")  # no wallet yet
    blocks, errors = buy_at_once(globex, threads=6, key="f" * 32)
    assert errors == []
    assert len(blocks) == 6 and len({b.pk for b in blocks}) == 1
    assert Wallet.objects.filter(customer=globex).count() == 1
    assert WalletTransaction.objects.filter(wallet__customer=globex).count() == 1
    assert Invoice.objects.filter(customer=globex, invoice_type="CREDIT").count() == 1
