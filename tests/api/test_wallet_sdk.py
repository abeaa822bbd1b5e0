"""The official flexprice SDK, unchanged, drives a prepaid wallet end to end against a live
Tally: create, grant, top up with priority and expiry, ingest, the real-time balance,
finalize, the ledger, an invoiced purchase paid."""

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from flexprice.models import errors

from tests.api.test_sdk import fp, o1_catalog  # noqa: F401  (fp is the live SDK client)

pytestmark = pytest.mark.django_db(transaction=True)


def stamp(moment: datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")


def test_sdk_drives_a_prepaid_wallet_from_top_up_to_the_finalized_invoice(fp):  # noqa: F811
    features, plan, _ = o1_catalog(fp)
    customer = fp.customers.create_customer(external_id="acme", name="Acme AI")
    now = datetime.now(UTC)

    wallet = fp.wallets.create_wallet(
        external_customer_id="acme",
        currency="usd",
        wallet_type="PRE_PAID",
        description="Prepaid credits",
        alert_settings={
            "alert_enabled": True,
            "alert_threshold_type": "absolute",
            "critical": {"threshold": "0", "condition": "below"},
        },
    )
    assert (wallet.customer_id, wallet.wallet_status, wallet.credit_balance) == (
        customer.id,
        "active",
        "0",
    )
    with pytest.raises(errors.ErrorResponse) as twice:
        fp.wallets.create_wallet(external_customer_id="acme", currency="usd")
    assert twice.value.data.code == "already_exists"

    # $5 of free credits each period, consumed first, expiring at period end.
    grant = fp.credit_grants.create_credit_grant(
        name="Monthly free credits",
        scope="PLAN",
        plan_id=plan.id,
        credits="5",
        cadence="RECURRING",
        expiration_type="BILLING_CYCLE",
        priority=0,
    )
    assert [g.id for g in fp.credit_grants.get_plan_credit_grants(id=plan.id).items] == [grant.id]
    subscription = fp.subscriptions.create_subscription(
        plan_id=plan.id,
        currency="usd",
        billing_period="MONTHLY",
        external_customer_id="acme",
        start_date=now - timedelta(hours=1),
    )

    bought = fp.wallets.top_up_wallet(
        id=wallet.id,
        transaction_reason="PURCHASED_CREDIT_DIRECT",
        credits_to_add="50",
        priority=2,
        idempotency_key="order-1",
    )
    promo_expiry = stamp(now + timedelta(days=60))
    promo = fp.wallets.top_up_wallet(
        id=wallet.id,
        transaction_reason="FREE_CREDIT_GRANT",
        credits_to_add="12.34",
        priority=1,
        expiry_date_utc=promo_expiry,
    )
    replay = fp.wallets.top_up_wallet(
        id=wallet.id,
        transaction_reason="PURCHASED_CREDIT_DIRECT",
        credits_to_add="50",
        priority=2,
        idempotency_key="order-1",
    )
    assert replay.wallet_transaction.id == bought.wallet_transaction.id
    assert promo.wallet_transaction.expiry_date == datetime.fromisoformat(promo_expiry)
    assert promo.wallet_transaction.priority == 1
    assert fp.wallets.get_wallet_balance(id=wallet.id).credit_balance == "67.34"  # 5 + 12.34 + 50

    fp.events.ingest_events_bulk(
        events=[
            {
                "event_name": "tokens",
                "external_customer_id": "acme",
                "event_id": f"w-{n}",
                "timestamp": stamp(now - timedelta(minutes=5)),
                "properties": {"model": "OpenAI O1", "prompt_type": kind, "tokens": tokens},
            }
            for n, (kind, tokens) in enumerate([("input", "2000000"), ("output", "500000")])
        ]
    )
    # By hand: 2 input packages × $15 + 1 output package × $60 = $90 of usage now.
    live = fp.wallets.get_wallet_balance(id=wallet.id)
    assert (live.balance, live.credit_balance, live.current_period_usage) == (
        "67.34",
        "67.34",
        "90",
    )
    assert (live.real_time_balance, live.real_time_credit_balance) == ("-22.66", "-22.66")
    listed = fp.wallets.get_customer_wallets(lookup_key="acme", include_real_time_balance=True)
    assert [(w.id, w.real_time_balance) for w in listed] == [(wallet.id, "-22.66")]
    preview = fp.invoices.get_invoice_preview(subscription_id=subscription.id)
    assert (preview.subtotal, preview.total_prepaid_credits_applied, preview.total) == (
        "90.00",
        "67.34",
        "22.66",
    )

    draft = fp.invoices.query_invoice(subscription_id=subscription.id).items[0]
    fp.invoices.finalize_invoice(id=draft.id)
    invoice = fp.invoices.get_invoice(id=draft.id)
    assert (invoice.invoice_status, invoice.invoice_type) == ("FINALIZED", "SUBSCRIPTION")
    assert (invoice.subtotal, invoice.total_prepaid_credits_applied, invoice.total) == (
        "90.00",
        "67.34",
        "22.66",
    )
    assert (invoice.amount_due, invoice.amount_remaining) == ("22.66", "22.66")
    assert fp.wallets.get_wallet(id=wallet.id).credit_balance == "0"

    debits = fp.wallets.get_wallet_transactions(id_path_parameter=wallet.id, type_="debit")
    (debit,) = debits.items
    assert (debit.transaction_reason, debit.credit_amount, debit.amount) == (
        "INVOICE_PAYMENT",
        "67.34",
        "67.34",
    )
    assert (debit.reference_type, debit.reference_id) == ("INVOICE", invoice.id)
    granted = fp.wallets.get_wallet_transactions(
        id_path_parameter=wallet.id, transaction_reason="SUBSCRIPTION_CREDIT_GRANT"
    ).items[0]
    # Consumed in priority order: the grant (0), the promotion (1), the purchase (2).
    assert [(c.credit_transaction_id, c.credits) for c in debit.consumption_breakdown] == [
        (granted.id, "5"),
        (promo.wallet_transaction.id, "12.34"),
        (bought.wallet_transaction.id, "50"),
    ]
    searched = fp.wallets.query_wallet_transaction(reference_id=invoice.id)
    assert [t.id for t in searched.items] == [debit.id]

    # An invoiced purchase: pending until its invoice is paid, then usable.
    purchase = fp.wallets.top_up_wallet(
        id=wallet.id, transaction_reason="PURCHASED_CREDIT_INVOICED", credits_to_add="20"
    )
    assert purchase.wallet_transaction.transaction_status == "pending"
    assert fp.invoices.get_invoice(id=purchase.invoice_id).invoice_type == "CREDIT"
    assert fp.wallets.get_wallet(id=wallet.id).credit_balance == "0"
    with pytest.raises(errors.ErrorResponse) as wrong:
        fp.invoices.update_invoice_payment_status(
            id=purchase.invoice_id, payment_status="SUCCEEDED", amount="19.99"
        )
    assert "20.00" in wrong.value.data.message
    paid = fp.invoices.update_invoice_payment_status(
        id=purchase.invoice_id, payment_status="SUCCEEDED", amount="20.00"
    )
    assert (paid.payment_status, paid.amount_paid, paid.amount_remaining) == (
        "SUCCEEDED",
        "20.00",
        "0.00",
    )
    assert fp.wallets.get_wallet(id=wallet.id).credit_balance == "20"

    fp.credit_grants.delete_credit_grant(id=grant.id)
    assert fp.credit_grants.get_credit_grant(id=grant.id).status == "archived"
    closed = fp.wallets.terminate_wallet(id=wallet.id)
    assert (closed.wallet_status, closed.credit_balance) == ("closed", "0")
    assert Decimal(fp.wallets.get_wallet_balance(id=wallet.id).balance) == 0
