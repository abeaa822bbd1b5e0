"""Wallet credits on invoices, and the credits plans grant to their subscribers.

A PRE_PAID wallet's credits reduce an invoice's USAGE lines: a draft shows what they would
take now, and finalization takes it for real. A POST_PAID wallet pays a finalized invoice's
amount due. Both happen inside the finalizing transaction, under the wallet's lock, with an
idempotency key per invoice, so a retried finalization consumes nothing twice.
"""

from datetime import datetime, timedelta
from decimal import Decimal

from django.utils import timezone

from billing import ledger
from billing.models import (
    CreditGrant,
    CreditGrantApplication,
    Invoice,
    Subscription,
    Wallet,
    WalletTransaction,
)
from billing.periods import add_months
from catalog.models import Price

ZERO = Decimal(0)


def open_wallet(*, customer_id: str, currency: str, wallet_type: str | None = None):
    """The customer's wallet in ``currency`` that is not closed, if any (there is one at most)."""
    wallets = Wallet.objects.filter(customer_id=customer_id, currency=currency.lower()).exclude(
        wallet_status=Wallet.Status.CLOSED
    )
    if wallet_type is not None:
        wallets = wallets.filter(wallet_type=wallet_type)
    return wallets.first()


def usage_amount(amounts_by_type) -> Decimal:
    """What the USAGE lines of an invoice add up to, never below zero: what credits may pay."""
    return max(sum((a for t, a in amounts_by_type if t == Price.Type.USAGE), ZERO), ZERO)


def spendable(wallet: Wallet | None, *, at: datetime | None = None) -> Decimal:
    """What an active wallet's credits are worth now, in whole minor units of its currency."""
    if wallet is None or wallet.wallet_status != Wallet.Status.ACTIVE:
        return ZERO
    worth = ledger.to_currency(ledger.balance(wallet, at=at), wallet)
    return ledger.round_down(worth, wallet.currency)


def prepaid_applicable(*, customer_id: str, currency: str, usage: Decimal, at=None) -> Decimal:
    """What the customer's PRE_PAID credits would take off ``usage`` now."""
    if usage <= 0:
        return ZERO
    wallet = open_wallet(
        customer_id=customer_id, currency=currency, wallet_type=Wallet.Type.PRE_PAID
    )
    return min(spendable(wallet, at=at), usage)


def invoice_wallets_lock(*, invoice: Invoice) -> None:
    """At finalization, before the invoice takes its number: lock the wallets it may draw
    on. A purchase of credits locks its wallet and then numbers its invoice, so every
    transaction takes a wallet's lock before the numbering's, never after."""
    if invoice.invoice_type != Invoice.Type.SUBSCRIPTION:
        return
    wallets = Wallet.objects.filter(customer_id=invoice.customer_id, currency=invoice.currency)
    list(wallets.exclude(wallet_status=Wallet.Status.CLOSED).order_by("pk").select_for_update())


def invoice_credits_consume(*, invoice: Invoice, usage: Decimal, now: datetime) -> Decimal:
    """At finalization, in its transaction: debit the PRE_PAID credits that pay ``usage``
    (the invoice's USAGE lines). Returns the amount applied; a retry applies nothing twice."""
    if invoice.invoice_type != Invoice.Type.SUBSCRIPTION:
        return ZERO
    key = f"invoice:{invoice.pk}:prepaid"
    done = WalletTransaction.objects.filter(idempotency_key=key, invoice=invoice).first()
    if done is not None:
        return done.amount
    wallet = open_wallet(
        customer_id=invoice.customer_id,
        currency=invoice.currency,
        wallet_type=Wallet.Type.PRE_PAID,
    )
    if wallet is None or usage <= 0:
        return ZERO
    wallet = ledger.wallet_lock(wallet.pk)
    applied = min(spendable(wallet, at=now), usage)
    if applied <= 0:
        return ZERO
    ledger.debit(
        wallet=wallet,
        credits=ledger.to_credits(applied, wallet),
        reason=WalletTransaction.Reason.INVOICE_PAYMENT,
        invoice=invoice,
        idempotency_key=key,
        description=f"Prepaid credits applied to usage on {invoice.invoice_number or invoice.pk}.",
        at=now,
    )
    return applied


def invoice_pay_from_wallet(*, invoice: Invoice, now: datetime) -> Decimal:
    """After finalization, in its transaction: a POST_PAID wallet pays what it can of the
    amount remaining. Returns what it paid."""
    if invoice.invoice_type != Invoice.Type.SUBSCRIPTION or invoice.amount_remaining <= 0:
        return ZERO
    wallet = open_wallet(
        customer_id=invoice.customer_id,
        currency=invoice.currency,
        wallet_type=Wallet.Type.POST_PAID,
    )
    if wallet is None:
        return ZERO
    wallet = ledger.wallet_lock(wallet.pk)
    paid = min(spendable(wallet, at=now), invoice.amount_remaining)
    if paid <= 0:
        return ZERO
    _, created = ledger.debit(
        wallet=wallet,
        credits=ledger.to_credits(paid, wallet),
        reason=WalletTransaction.Reason.INVOICE_PAYMENT,
        invoice=invoice,
        idempotency_key=f"invoice:{invoice.pk}:payment",
        description=f"Payment of {invoice.invoice_number or invoice.pk}.",
        at=now,
    )
    return paid if created else ZERO


def invoice_credits_refund(*, invoice: Invoice) -> int:
    """Voiding an invoice gives back the credits its debits took, with their expiry and
    priority, once; a purchase not yet paid never credits."""
    made = 0
    for entry in invoice.wallet_transactions.filter(type=WalletTransaction.Type.DEBIT):
        made += ledger.refund(
            debit_entry=entry,
            reason=WalletTransaction.Reason.INVOICE_VOID_REFUND,
            idempotency_key=f"void:{entry.pk}",
        )
    invoice.wallet_transactions.filter(
        type=WalletTransaction.Type.CREDIT, transaction_status=WalletTransaction.Status.PENDING
    ).update(transaction_status=WalletTransaction.Status.FAILED, updated_at=timezone.now())
    return made


def _grant_expiry(grant: CreditGrant, start: datetime, end: datetime) -> datetime | None:
    if grant.expiration_type == CreditGrant.Expiry.BILLING_CYCLE:
        return end
    if grant.expiration_type == CreditGrant.Expiry.DURATION:
        n, unit = grant.expiration_duration or 0, grant.expiration_duration_unit
        if unit == CreditGrant.DurationUnit.MONTH:
            return add_months(start, n)
        if unit == CreditGrant.DurationUnit.YEAR:
            return add_months(start, 12 * n)
        return start + timedelta(days=n * (7 if unit == CreditGrant.DurationUnit.WEEK else 1))
    return None


def subscription_grants(subscription: Subscription):
    return CreditGrant.objects.filter(status=CreditGrant.Status.PUBLISHED).filter(
        plan_id=subscription.plan_id, scope=CreditGrant.Scope.PLAN
    ) | CreditGrant.objects.filter(
        status=CreditGrant.Status.PUBLISHED,
        subscription=subscription,
        scope=CreditGrant.Scope.SUBSCRIPTION,
    )


def grants_apply(*, subscription: Subscription, period_start: datetime, period_end: datetime):
    """Give the subscription its grants for the period that starts at ``period_start``:
    RECURRING ones each period, ONETIME ones once. Call in the transaction that opens the
    period; a grant already given for it is not given again."""
    given = 0
    for grant in subscription_grants(subscription):
        applications = CreditGrantApplication.objects.filter(grant=grant, subscription=subscription)
        if grant.cadence == CreditGrant.Cadence.ONETIME and applications.exists():
            continue
        if applications.filter(period_start=period_start).exists():
            continue
        wallet = open_wallet(customer_id=subscription.customer_id, currency=subscription.currency)
        if wallet is None:
            wallet = Wallet.objects.create(
                customer_id=subscription.customer_id,
                currency=subscription.currency,
                name="Credits",
            )
        block, _ = ledger.credit(
            wallet=wallet,
            credits=grant.credits,
            reason=WalletTransaction.Reason.SUBSCRIPTION_CREDIT_GRANT,
            priority=grant.priority,
            expiry_date=_grant_expiry(grant, period_start, period_end),
            idempotency_key=f"grant:{grant.pk}:{subscription.pk}:{period_start.isoformat()}",
            description=f"{grant.name} ({subscription.plan})",
        )
        CreditGrantApplication.objects.create(
            grant=grant,
            subscription=subscription,
            period_start=period_start,
            period_end=period_end,
            transaction=block,
        )
        given += 1
    return given
