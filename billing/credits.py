"""Wallet credits on invoices, and the credits plans grant to their subscribers.

A PRE_PAID wallet's credits reduce an invoice's USAGE lines: a draft shows what they would
take now, and finalization takes it for real. A POST_PAID wallet pays a finalized invoice's
amount due. Both happen inside the finalizing transaction, under the wallet's lock, with an
idempotency key per invoice, so a retried finalization consumes nothing twice.
"""

from datetime import datetime, timedelta
from decimal import Decimal

from django.db import IntegrityError, transaction
from django.db.models import F, Q, Sum
from django.utils import timezone

from billing import ledger
from billing.models import (
    CreditGrant,
    CreditGrantApplication,
    Invoice,
    InvoiceLineItem,
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
    return ledger.spendable_worth(ledger.balance(wallet, at=at), wallet)


def _drafted_before(subscription: Subscription) -> Decimal:
    """What the current drafts of the customer's subscriptions made before this one (in its
    currency) count on PRE_PAID credits to pay, as last computed."""
    earlier = Subscription.objects.filter(
        Q(created_at__lt=subscription.created_at)
        | Q(created_at=subscription.created_at, pk__lt=subscription.pk),
        customer_id=subscription.customer_id,
        currency=subscription.currency,
        status=Subscription.Status.ACTIVE,
    )
    per_draft = (
        InvoiceLineItem.objects.filter(
            invoice__subscription__in=earlier,
            invoice__invoice_status=Invoice.Status.DRAFT,
            invoice__period_start=F("invoice__subscription__current_period_start"),
            price_type=Price.Type.USAGE,
        )
        .values("invoice_id")
        .annotate(usage=Sum("amount"))
        .values_list("usage", flat=True)
    )
    return sum((max(usage, ZERO) for usage in per_draft), ZERO)


def prepaid_applicable(*, subscription: Subscription, usage: Decimal, at=None) -> Decimal:
    """What the customer's PRE_PAID credits would take off ``usage`` (a draft's or a
    preview's) now. A customer's drafts share its credits, oldest subscription first, so
    together they never show more than there is."""
    if usage <= 0:
        return ZERO
    wallet = open_wallet(
        customer_id=subscription.customer_id,
        currency=subscription.currency,
        wallet_type=Wallet.Type.PRE_PAID,
    )
    left = spendable(wallet, at=at) - _drafted_before(subscription) if wallet else ZERO
    return max(min(left, usage), ZERO)


def credits_instant(invoice: Invoice, now: datetime) -> datetime:
    """When an invoice's credits are judged expired or not: as its period ends, however late
    it is closed, so credits that expire with the period pay for it."""
    return min(now, invoice.period_end - timedelta(microseconds=1))


def _wallet_pays(
    *, invoice: Invoice, wallet_type: str, most: Decimal, key: str, description: str, at
) -> Decimal:
    """Debit up to ``most`` (in the currency, whole minor units) from the customer's open
    wallet of ``wallet_type``, under its lock; returns what it paid. A retry with the same
    ``key`` pays nothing more and returns the first amount."""
    done = WalletTransaction.objects.filter(idempotency_key=key, invoice=invoice).first()
    if done is not None:
        return done.amount
    wallet = open_wallet(
        customer_id=invoice.customer_id, currency=invoice.currency, wallet_type=wallet_type
    )
    if wallet is None or most <= 0:
        return ZERO
    wallet = ledger.wallet_lock(wallet.pk)
    if wallet.wallet_status != Wallet.Status.ACTIVE:
        return ZERO
    balance = ledger.balance(wallet, at=at)
    paid = min(ledger.spendable_worth(balance, wallet), most)
    if paid <= 0:
        return ZERO
    ledger.debit(
        wallet=wallet,
        # A cent's worth of credits can round to a hair more than the wallet holds.
        credits=min(ledger.to_credits(paid, wallet), balance),
        amount=paid,
        reason=WalletTransaction.Reason.INVOICE_PAYMENT,
        invoice=invoice,
        idempotency_key=key,
        description=description,
        at=at,
    )
    return paid


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
    return _wallet_pays(
        invoice=invoice,
        wallet_type=Wallet.Type.PRE_PAID,
        most=usage,
        key=f"invoice:{invoice.pk}:prepaid",
        description=f"Prepaid credits applied to usage on {invoice.invoice_number}.",
        at=credits_instant(invoice, now),
    )


def invoice_pay_from_wallet(*, invoice: Invoice, now: datetime) -> Decimal:
    """After finalization, in its transaction: a POST_PAID wallet pays what it can of the
    amount remaining. Returns what it paid."""
    if invoice.invoice_type != Invoice.Type.SUBSCRIPTION:
        return ZERO
    return _wallet_pays(
        invoice=invoice,
        wallet_type=Wallet.Type.POST_PAID,
        most=invoice.amount_remaining,
        key=f"invoice:{invoice.pk}:payment",
        description=f"Payment of {invoice.invoice_number}.",
        at=credits_instant(invoice, now),
    )


def invoice_credits_refund(*, invoice: Invoice) -> int:
    """Voiding an invoice gives back the credits its debits took, with their expiry and
    priority, once, unless the wallet is closed; a purchase not yet paid never credits."""
    made = 0
    debits = invoice.wallet_transactions.filter(type=WalletTransaction.Type.DEBIT)
    # A closed wallet was emptied on purpose: what the invoice took stays taken.
    for entry in debits.exclude(wallet__wallet_status=Wallet.Status.CLOSED):
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


def _wallet_for_grants(subscription: Subscription) -> Wallet:
    """The customer's open wallet in the subscription's currency, made PRE_PAID if none."""
    wallet = open_wallet(customer_id=subscription.customer_id, currency=subscription.currency)
    if wallet is not None:
        return wallet
    try:
        with transaction.atomic():
            return Wallet.objects.create(
                customer_id=subscription.customer_id, currency=subscription.currency, name="Credits"
            )
    except IntegrityError:  # another transaction made it first
        return open_wallet(customer_id=subscription.customer_id, currency=subscription.currency)


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
        wallet = _wallet_for_grants(subscription)
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


@transaction.atomic
def credit_grant_create(**fields) -> CreditGrant:
    """A grant, given at once to the active subscriptions it covers for their current period
    (later ones get it when they start); then at each period start, as ``grants_apply`` says."""
    grant = CreditGrant(**fields)
    grant.full_clean()
    grant.save()
    grant_give_now(grant)
    return grant


def grant_give_now(grant: CreditGrant) -> None:
    """A new grant, to the active subscriptions it covers, for their current period."""
    for subscription in grant_subscriptions(grant):
        grants_apply(
            subscription=subscription,
            period_start=subscription.current_period_start,
            period_end=subscription.current_period_end,
        )


def grant_subscriptions(grant: CreditGrant):
    """The active subscriptions a grant covers."""
    covered = Subscription.objects.filter(status=Subscription.Status.ACTIVE)
    if grant.scope == CreditGrant.Scope.PLAN:
        return covered.filter(plan_id=grant.plan_id)
    return covered.filter(pk=grant.subscription_id)


def credit_grant_update(*, grant: CreditGrant, **fields) -> CreditGrant:
    for name, value in fields.items():
        setattr(grant, name, value)
    grant.full_clean()
    grant.save()
    return grant


def credit_grant_archive(*, grant: CreditGrant) -> CreditGrant:
    """No further grants; the credits already given stay."""
    grant.status = CreditGrant.Status.ARCHIVED
    grant.save(update_fields=["status", "updated_at"])
    return grant
