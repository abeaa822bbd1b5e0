"""Wallets: creating and changing them, top-ups and purchases, the real-time balance, auto
top-up and the low-balance alert state."""

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils import timezone

from billing import ledger, services
from billing.models import Invoice, InvoiceLineItem, Subscription, Wallet, WalletTransaction
from catalog import pricing
from catalog.money import minor_unit_exponent
from metering.models import Customer

ZERO = Decimal(0)
Reason = WalletTransaction.Reason
PURCHASES = (Reason.PURCHASED_CREDIT_DIRECT, Reason.PURCHASED_CREDIT_INVOICED)
TOP_UP_REASONS = (*PURCHASES, Reason.FREE_CREDIT_GRANT, Reason.PURCHASED_CREDIT_BONUS)
ALERT_LEVELS = (  # most severe first
    ("critical", Wallet.AlertState.IN_ALARM),
    ("warning", Wallet.AlertState.WARNING),
    ("info", Wallet.AlertState.INFO),
)


@transaction.atomic
def wallet_create(
    *,
    customer: Customer,
    currency: str,
    wallet_type: str = Wallet.Type.PRE_PAID,
    initial_credits: Decimal = ZERO,
    initial_credits_expiry: datetime | None = None,
    **fields,
) -> Wallet:
    """A wallet, with its first credits (a free grant) when ``initial_credits`` is given."""
    wallet = Wallet(customer=customer, currency=currency.lower(), wallet_type=wallet_type, **fields)
    wallet.full_clean()
    wallet.save()
    if initial_credits > 0:
        ledger.credit(
            wallet=wallet,
            credits=initial_credits,
            reason=Reason.FREE_CREDIT_GRANT,
            expiry_date=initial_credits_expiry,
            description="Initial credits",
        )
    return wallet


@transaction.atomic
def wallet_update(*, wallet: Wallet, **fields) -> Wallet:
    wallet = ledger.wallet_lock(wallet.pk)
    if wallet.wallet_status == Wallet.Status.CLOSED:
        raise ValidationError("The wallet is closed.")
    for name, value in fields.items():
        setattr(wallet, name, value)
    wallet.full_clean()
    wallet.save()
    return wallet


def _purchase_invoice(*, wallet: Wallet, credits: Decimal, amount: Decimal, now) -> Invoice:
    """A finalized invoice for ``credits``: they become usable when it is paid."""
    invoice = Invoice.objects.create(
        customer_id=wallet.customer_id,
        invoice_type=Invoice.Type.CREDIT,
        billing_reason=Invoice.BillingReason.MANUAL,
        currency=wallet.currency,
        subtotal=amount,
        total=amount,
        period_start=now,
        period_end=now,
    )
    InvoiceLineItem.objects.create(
        invoice=invoice,
        price_type="FIXED",
        invoice_cadence="ADVANCE",
        display_name="Prepaid credits",
        quantity=credits,
        amount=amount,
        currency=wallet.currency,
        period_start=now,
        period_end=now,
        # Lines explain themselves from their snapshot: credits at the wallet's rate.
        terms=pricing.terms_to_json(
            pricing.Terms(billing_model=pricing.FLAT_FEE, amount=wallet.conversion_rate)
        ),
        unit_singular="credit",
        unit_plural="credits",
    )
    return services.invoice_finalize(invoice=invoice)


@transaction.atomic
def wallet_top_up(
    *,
    wallet: Wallet,
    reason: str,
    credits: Decimal | None = None,
    amount: Decimal | None = None,
    priority: int | None = None,
    expiry_date: datetime | None = None,
    idempotency_key: str | None = None,
    description: str = "",
    metadata: dict | None = None,
) -> WalletTransaction:
    """Add credits, given in credits or in the currency. PURCHASED_CREDIT_INVOICED adds them
    pending on a finalized purchase invoice; they count once it is paid. A replayed
    ``idempotency_key`` returns the first top-up and adds nothing."""
    if reason not in TOP_UP_REASONS:
        raise ValidationError({"transaction_reason": f"{reason} is not a top-up reason."})
    wallet = ledger.wallet_lock(wallet.pk)
    if wallet.wallet_status != Wallet.Status.ACTIVE:
        raise ValidationError(
            f"The wallet is {wallet.wallet_status}; only an active one is topped up."
        )
    if (credits is None) == (amount is None):
        raise ValidationError({"credits_to_add": "Give either credits_to_add or amount."})
    if credits is None:
        credits = ledger.to_credits(amount, wallet)
    if credits <= 0:
        raise ValidationError({"credits_to_add": "Top up by more than 0 credits."})
    if idempotency_key:
        done = ledger.replayed(
            wallet, idempotency_key, type=WalletTransaction.Type.CREDIT, credit_amount=credits
        )
        if done is not None:
            return done
    invoice, status = None, WalletTransaction.Status.COMPLETED
    if reason == Reason.PURCHASED_CREDIT_INVOICED:
        price = ledger.to_currency(credits, wallet)
        if price != price.quantize(Decimal(1).scaleb(-minor_unit_exponent(wallet.currency))):
            raise ValidationError(
                {
                    "credits_to_add": f"The credits cost {price:f} {wallet.currency.upper()}, "
                    "which is not a whole amount of the currency to invoice."
                }
            )
        invoice = _purchase_invoice(
            wallet=wallet, credits=credits, amount=price, now=timezone.now()
        )
        status = WalletTransaction.Status.PENDING
    block, _ = ledger.credit(
        wallet=wallet,
        credits=credits,
        reason=reason,
        status=status,
        priority=priority,
        expiry_date=expiry_date,
        invoice=invoice,
        idempotency_key=idempotency_key,
        description=description,
        metadata=metadata,
    )
    return block


@transaction.atomic
def wallet_debit(*, wallet: Wallet, credits: Decimal, description: str, idempotency_key=None):
    """An operator's manual debit, with the reason in ``description``."""
    if not description.strip():
        raise ValidationError({"description": "Say why the credits are taken."})
    entry, _ = ledger.debit(
        wallet=wallet,
        credits=credits,
        reason=Reason.MANUAL_BALANCE_DEBIT,
        idempotency_key=idempotency_key,
        description=description,
    )
    return entry


@transaction.atomic
def wallet_terminate(*, wallet: Wallet) -> Wallet:
    """Debit what is left and close the wallet; unpaid purchases into it are left to fail."""
    wallet = ledger.wallet_lock(wallet.pk)
    if wallet.wallet_status == Wallet.Status.CLOSED:
        raise ValidationError("The wallet is already closed.")
    left = ledger.balance(wallet)
    if left > 0:
        ledger.debit(
            wallet=wallet,
            credits=left,
            reason=Reason.WALLET_TERMINATION,
            idempotency_key=f"terminate:{wallet.pk}",
            description="Wallet terminated",
        )
    wallet.wallet_status = Wallet.Status.CLOSED
    wallet.save(update_fields=["wallet_status", "updated_at"])
    return wallet


@transaction.atomic
def invoice_payment_update(
    *, invoice: Invoice, payment_status: str, amount: Decimal | None = None
) -> Invoice:
    """Record a payment outside Tally. SUCCEEDED pays what remains (``amount``, if given,
    must be that) and makes a purchase's credits usable; a paid invoice stays paid."""
    invoice = Invoice.objects.select_for_update().get(pk=invoice.pk)
    paid = Invoice.PaymentStatus
    allowed = (paid.PENDING, paid.SUCCEEDED, paid.FAILED)
    if payment_status not in allowed:
        raise ValidationError({"payment_status": f"Give one of {', '.join(allowed)}."})
    if invoice.invoice_status != Invoice.Status.FINALIZED:
        raise services.InvalidTransition(
            f"Only a FINALIZED invoice is paid; this one is {invoice.invoice_status}."
        )
    if invoice.payment_status == Invoice.PaymentStatus.SUCCEEDED:
        if payment_status == Invoice.PaymentStatus.SUCCEEDED and amount in (None, ZERO):
            return invoice  # a replay
        raise services.InvalidTransition("The invoice is already paid.")
    if payment_status == Invoice.PaymentStatus.SUCCEEDED:
        remaining = invoice.amount_remaining
        if amount is not None and amount != remaining:
            raise ValidationError(
                {"amount": f"SUCCEEDED pays what remains: {remaining:f}, not {amount:f}."}
            )
        invoice.amount_paid += remaining
        invoice.paid_at = timezone.now()
        for block in invoice.wallet_transactions.filter(
            type=WalletTransaction.Type.CREDIT, transaction_status=WalletTransaction.Status.PENDING
        ):
            ledger.wallet_lock(block.wallet_id)
            block.transaction_status = WalletTransaction.Status.COMPLETED
            block.save(update_fields=["transaction_status", "updated_at"])
    elif amount is not None:
        raise ValidationError({"amount": f"amount goes with SUCCEEDED, not {payment_status}."})
    invoice.payment_status = payment_status
    invoice.save()
    return invoice


@dataclass(frozen=True)
class Balance:
    wallet: Wallet
    credit_balance: Decimal  # the ledger's, in credits
    balance: Decimal  # the same in the currency
    current_period_usage: Decimal  # what the open periods would draw from it now
    as_of: datetime

    @property
    def real_time_balance(self) -> Decimal:
        return self.balance - self.current_period_usage

    @property
    def real_time_credit_balance(self) -> Decimal:
        return ledger.to_credits(self.real_time_balance, self.wallet)


def open_period_usage(wallet: Wallet) -> Decimal:
    """What the customer's open periods in the wallet's currency would draw from it if they
    closed now: a PRE_PAID wallet pays their USAGE lines, a POST_PAID one their totals."""
    subscriptions = Subscription.objects.filter(
        customer_id=wallet.customer_id,
        currency=wallet.currency,
        status=Subscription.Status.ACTIVE,
    ).select_related("customer")
    drawn = ZERO
    for subscription in subscriptions:
        proposal = services.invoice_compute(
            subscription=subscription,
            period_start=subscription.current_period_start,
            period_end=subscription.current_period_end,
            closed_early=False,
        )
        if wallet.wallet_type == Wallet.Type.PRE_PAID:
            drawn += proposal.usage
        else:
            drawn += max(proposal.total, ZERO)
    return drawn


def wallet_balance(wallet: Wallet, *, now: datetime | None = None) -> Balance:
    """The ledger's balance and, live from usage, what the open periods would take of it."""
    now = now or timezone.now()
    credit_balance = ledger.balance(wallet, at=now)
    usage = ZERO
    if wallet.wallet_status == Wallet.Status.ACTIVE:
        usage = open_period_usage(wallet)
    return Balance(
        wallet=wallet,
        credit_balance=credit_balance,
        balance=ledger.to_currency(credit_balance, wallet),
        current_period_usage=usage,
        as_of=now,
    )


def alert_state_for(settings: dict, credit_balance: Decimal) -> str:
    """The most severe level whose threshold the balance is below (or above, per its
    condition); ``ok`` when alerts are off or none is crossed."""
    if not settings or not settings.get("alert_enabled"):
        return Wallet.AlertState.OK
    for level, state in ALERT_LEVELS:
        rule = settings.get(level) or {}
        if rule.get("threshold") in (None, ""):
            continue
        threshold = Decimal(str(rule["threshold"]))
        above = rule.get("condition", "below") == "above"
        if (credit_balance > threshold) if above else (credit_balance < threshold):
            return state
    return Wallet.AlertState.OK


def wallet_check(*, wallet_id: str, now: datetime | None = None) -> WalletTransaction | None:
    """After usage or a ledger change: update the alert state and top up automatically when
    the real-time balance has fallen to the threshold. The wallet's lock makes concurrent
    checks run one after another, so one crossing tops up once. Returns the top-up, if any."""
    now = now or timezone.now()
    with transaction.atomic():
        wallet = ledger.wallet_lock(wallet_id)
        if wallet.wallet_status != Wallet.Status.ACTIVE:
            return None
        live = wallet_balance(wallet, now=now)
        topped = None
        if _auto_topup_due(wallet, live.real_time_credit_balance, now):
            topped = wallet_top_up(
                wallet=wallet,
                reason=(
                    Reason.PURCHASED_CREDIT_INVOICED
                    if wallet.auto_topup_invoicing
                    else Reason.PURCHASED_CREDIT_DIRECT
                ),
                credits=wallet.auto_topup_amount,
                idempotency_key=f"auto:{wallet.pk}:{now.isoformat()}",
                description="Auto top-up",
            )
            wallet.last_auto_topup_at = now
            live = wallet_balance(wallet, now=now)
        state = alert_state_for(wallet.alert_settings, live.real_time_credit_balance)
        if topped is not None or state != wallet.alert_state:
            wallet.alert_state = state
            wallet.save(update_fields=["alert_state", "last_auto_topup_at", "updated_at"])
        return topped


def _auto_topup_due(wallet: Wallet, real_time_credits: Decimal, now: datetime) -> bool:
    if not wallet.auto_topup_enabled or not (wallet.auto_topup_amount or 0) > 0:
        return False
    if wallet.auto_topup_threshold is None or real_time_credits > wallet.auto_topup_threshold:
        return False
    if wallet.last_auto_topup_at and now < wallet.last_auto_topup_at + wallet.auto_topup_cooldown:
        return False
    # An invoiced top-up still unpaid is on its way: another would only add another invoice.
    return not wallet.transactions.filter(
        transaction_status=WalletTransaction.Status.PENDING,
        transaction_reason=Reason.PURCHASED_CREDIT_INVOICED,
        description="Auto top-up",
    ).exists()


def customer_wallets_check(*, customer_id: str) -> int:
    """``wallet_check`` for each active wallet of a customer; returns the top-ups made."""
    ids = Wallet.objects.filter(
        customer_id=customer_id, wallet_status=Wallet.Status.ACTIVE
    ).values_list("pk", flat=True)
    return sum(wallet_check(wallet_id=pk) is not None for pk in ids)


def credits_expire(*, now: datetime) -> int:
    return ledger.expire_due(now=now)
