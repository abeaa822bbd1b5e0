"""Wallets: creating and changing them, top-ups and purchases, the real-time balance, auto
top-up and the low-balance alert state."""

import hashlib
from dataclasses import dataclass
from datetime import datetime
from decimal import ROUND_UP, Decimal

from django.core.cache import cache
from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils import timezone

from billing import alerts, ledger, outbox, services
from billing.models import (
    AlertEntity,
    AlertType,
    EventType,
    Invoice,
    InvoiceLineItem,
    Subscription,
    Wallet,
    WalletTransaction,
)
from billing.signals import wallet_changed_on_commit
from catalog import pricing
from catalog.models import Meter, Price
from catalog.money import minor_unit_exponent
from config.admin import plain_decimal
from metering.models import Customer
from metering.selectors import usage_state

ZERO = Decimal(0)
Reason = WalletTransaction.Reason
PURCHASES = (Reason.PURCHASED_CREDIT_DIRECT, Reason.PURCHASED_CREDIT_INVOICED)
TOP_UP_REASONS = (*PURCHASES, Reason.FREE_CREDIT_GRANT, Reason.PURCHASED_CREDIT_BONUS)
ALERT_ORDER = [state for state in Wallet.AlertState]  # least severe first
AUTO_TOPUP_KEY = "auto-topup:"  # then the instant it fired


EXPIRY_IN_THE_PAST = "The expiry must be in the future."


def expiry_check(expiry: datetime | None, *, field: str = "expiry_date") -> None:
    """New credits must be usable for a while: an expiry, if any, is after now."""
    if expiry is not None and expiry <= timezone.now():
        raise ValidationError({field: EXPIRY_IN_THE_PAST})


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
    expiry_check(initial_credits_expiry, field="initial_credits_expiry")
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
    wallet_changed_on_commit(wallet.customer_id)
    return wallet


CHANGEABLE = {
    "wallet_status",  # active or frozen: closing is terminating
    "name",
    "description",
    "metadata",
    "alert_settings",
    "auto_topup_enabled",
    "auto_topup_threshold",
    "auto_topup_amount",
    "auto_topup_invoicing",
    "auto_topup_cooldown",
}


@transaction.atomic
def wallet_update(*, wallet: Wallet, **fields) -> Wallet:
    """Change what does not revalue the ledger: its currency, type and rate stay."""
    fixed = sorted(set(fields) - CHANGEABLE)
    if fixed:
        raise ValidationError({name: f"A wallet's {name} does not change." for name in fixed})
    wallet = ledger.wallet_lock(wallet.pk)
    if wallet.wallet_status == Wallet.Status.CLOSED:
        raise ValidationError("The wallet is closed.")
    if fields.get("wallet_status") == Wallet.Status.CLOSED:
        raise ValidationError({"wallet_status": "A wallet is closed by terminating it."})
    for name, value in fields.items():
        setattr(wallet, name, value)
    wallet.full_clean()
    wallet.save()
    wallet_changed_on_commit(wallet.customer_id)
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
    expiry_check(expiry_date)
    wallet = ledger.wallet_lock(wallet.pk)
    if wallet.wallet_status != Wallet.Status.ACTIVE:
        raise ValidationError(
            f"The wallet is {wallet.wallet_status}; only an active one is topped up."
        )
    if (credits is None) == (amount is None):
        raise ValidationError({"credits_to_add": "Give either credits_to_add or amount."})
    given = "credits_to_add" if amount is None else "amount"
    sent = credits if amount is None else amount
    if sent <= 0:
        raise ValidationError({given: "Top up by more than 0 credits."})
    if not (
        sent < ledger.LIMIT and ledger.fits(credits or amount / wallet.conversion_rate, wallet)
    ):
        raise ValidationError({given: f"The ledger holds less than {ledger.LIMIT:,f} per block."})
    if credits is None:
        # Rounded up: credits bought for an amount are worth at least that amount.
        credits = ledger.to_credits(amount, wallet, rounding=ROUND_UP)
    else:
        amount = ledger.to_currency(credits, wallet)
    if idempotency_key:
        done = ledger.replayed(
            wallet, idempotency_key, type=WalletTransaction.Type.CREDIT, credit_amount=credits
        )
        if done is not None:
            return done
    invoice, status = None, WalletTransaction.Status.COMPLETED
    if reason == Reason.PURCHASED_CREDIT_INVOICED:
        if amount != amount.quantize(Decimal(1).scaleb(-minor_unit_exponent(wallet.currency))):
            raise ValidationError(
                {
                    given: f"The credits cost {amount.normalize():f} "
                    f"{wallet.currency.upper()}, which is not a whole amount to invoice."
                }
            )
        invoice = _purchase_invoice(
            wallet=wallet, credits=credits, amount=amount, now=timezone.now()
        )
        status = WalletTransaction.Status.PENDING
    block, _ = ledger.credit(
        wallet=wallet,
        credits=credits,
        amount=amount,
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
def wallet_purchase(
    *,
    wallet: Wallet,
    bonus_credits: Decimal | None = None,
    bonus_expiry_date: datetime | None = None,
    **top_up,
) -> tuple[WalletTransaction, WalletTransaction | None]:
    """``wallet_top_up``, with bonus credits: a PURCHASED_CREDIT_BONUS block that comes with
    the purchase, pending on its invoice until it is paid. A replayed ``idempotency_key``
    returns both blocks and adds nothing; a replay asking for another bonus is refused."""
    wallet = ledger.wallet_lock(wallet.pk)
    key = top_up.get("idempotency_key")
    replay = bool(key) and wallet.transactions.filter(idempotency_key=key).exists()
    purchase = wallet_top_up(wallet=wallet, **top_up)
    bonus_key = f"{key}:bonus" if key else None
    if replay:
        bonus = wallet.transactions.filter(idempotency_key=bonus_key).first()
        asked = bonus_credits or ZERO
        if (bonus.credit_amount if bonus else ZERO) != asked:
            raise ValidationError(
                {"idempotency_key": f"{key!r} was used for a different transaction."}
            )
        return purchase, bonus
    if bonus_credits is None:
        return purchase, None
    if purchase.transaction_reason not in PURCHASES:
        raise ValidationError(
            {"bonus_credits_to_add": "Bonus credits come with a purchase (PURCHASED_CREDIT_*)."}
        )
    bonus, _ = ledger.credit(
        wallet=wallet,
        credits=bonus_credits,
        reason=Reason.PURCHASED_CREDIT_BONUS,
        status=purchase.transaction_status,
        expiry_date=bonus_expiry_date,
        invoice=purchase.invoice,
        idempotency_key=bonus_key,
        description=f"Bonus with {purchase.pk}",
        metadata={"parent_transaction_id": purchase.pk},
    )
    return purchase, bonus


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
    """Debit what is left and close the wallet. Refused while a purchase of credits into it
    is unpaid: its credits would have nowhere to go."""
    wallet = ledger.wallet_lock(wallet.pk)
    if wallet.wallet_status == Wallet.Status.CLOSED:
        raise ValidationError("The wallet is already closed.")
    pending = wallet.transactions.filter(transaction_status=WalletTransaction.Status.PENDING)
    if pending.exists():
        numbers = ", ".join(pending.values_list("invoice__invoice_number", flat=True))
        raise ValidationError(
            f"A purchase of credits into the wallet is unpaid ({numbers}): mark it paid or "
            "void it first."
        )
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
            wallet_changed_on_commit(invoice.customer_id)
            ledger.credits_usable_emit(block=block)
    elif amount is not None:
        raise ValidationError({"amount": f"amount goes with SUCCEEDED, not {payment_status}."})
    changed = invoice.payment_status != payment_status
    invoice.payment_status = payment_status
    invoice.save()
    if changed:
        outbox.invoice_emit(event_type=EventType.INVOICE_PAYMENT_UPDATED, invoice=invoice)
    return invoice


@dataclass(frozen=True)
class Balance:
    wallet: Wallet
    credit_balance: Decimal  # the ledger's, in credits
    balance: Decimal  # the same in the currency
    current_period_usage: Decimal  # what the open periods would draw from it now
    as_of: datetime
    by_reason: dict  # the ledger's balance in credits, by the reason they were given

    @property
    def purchased(self) -> Decimal:
        """Of the credit balance, what was bought; the rest was given."""
        return sum((v for r, v in self.by_reason.items() if r in PURCHASES), ZERO)

    @property
    def real_time_balance(self) -> Decimal:
        return self.balance - self.current_period_usage

    @property
    def real_time_credit_balance(self) -> Decimal:
        return ledger.to_credits(self.real_time_balance, self.wallet)


OPEN_USAGE_CACHE_SECONDS = 3600


def open_period_usage(wallet: Wallet) -> Decimal:
    """What the customer's open periods in the wallet's currency would draw from it if they
    closed now: a PRE_PAID wallet pays their USAGE lines, a POST_PAID one their totals.

    Cached under everything it depends on, read in two small queries: the subscriptions'
    periods, the parts of their cycles closed early and their plans' prices and meters
    (``_open_periods_signature``), and the customer's usage state, which any event committed
    or folded moves. A value is stored only if both were the same after reading it."""

    def signature() -> tuple:
        periods = _open_periods_signature(wallet)
        external_id = periods[0][0] if periods else None
        return periods, external_id and usage_state(external_customer_id=external_id)

    before = signature()
    if not before[0]:  # no open subscription in the currency
        return ZERO
    identity = [str(wallet.wallet_type), wallet.customer_id, before]
    key = "tally:open-usage:" + hashlib.sha256(repr(identity).encode()).hexdigest()
    drawn = cache.get(key)
    if drawn is None:
        subscriptions = Subscription.objects.filter(
            customer_id=wallet.customer_id,
            currency=wallet.currency,
            status=Subscription.Status.ACTIVE,
        ).select_related("customer")
        drawn = _open_period_usage(wallet, subscriptions)
        if signature() == before:
            cache.set(key, drawn, OPEN_USAGE_CACHE_SECONDS)
    return drawn


def _open_periods_signature(wallet: Wallet) -> list[tuple]:
    """Per open subscription of the wallet's customer and currency, in one plain statement
    (the real-time balance's hot path, where compiling ORM subqueries costs more than running
    them): the customer's external id as it is now, the period and end, when a part of the
    cycle closed early last changed (a void counts), and the plan's prices and their meters
    (count and latest change)."""
    sub, invoice = Subscription._meta.db_table, Invoice._meta.db_table
    price, meter = Price._meta.db_table, Meter._meta.db_table
    customer = Customer._meta.db_table
    rows = Subscription.objects.raw(
        f"""
        SELECT s.id, c.external_id AS external, s.plan_id, s.current_period_start,
               s.current_period_end, s.cancel_at_period_end, s.end_date,
               (SELECT max(i.updated_at) FROM {invoice} i
                 WHERE i.subscription_id = s.id AND i.closed_early = %s) AS parts,
               (SELECT count(*) FROM {price} p WHERE p.plan_id = s.plan_id) AS prices,
               (SELECT max(p.updated_at) FROM {price} p WHERE p.plan_id = s.plan_id) AS priced,
               (SELECT max(m.updated_at) FROM {price} p JOIN {meter} m ON m.id = p.meter_id
                 WHERE p.plan_id = s.plan_id) AS metered
          FROM {sub} s JOIN {customer} c ON c.id = s.customer_id
         WHERE s.customer_id = %s AND s.currency = %s AND s.status = %s
         ORDER BY s.id""",
        [True, wallet.customer_id, wallet.currency, Subscription.Status.ACTIVE],
    )
    return [
        (r.external, r.pk, r.plan_id, r.current_period_start, r.current_period_end)
        + (r.cancel_at_period_end, r.end_date, r.parts, r.prices, r.priced, r.metered)
        for r in rows
    ]


def _open_period_usage(wallet: Wallet, subscriptions) -> Decimal:
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


def wallet_balance(
    wallet: Wallet, *, now: datetime | None = None, usage=True, by_reason=None
) -> Balance:
    """The ledger's balance (``by_reason`` if already read, as ``ledger.balances_by_reason``
    gives it) and, live from usage, what the open periods would take of it (unless
    ``usage`` is off: then nothing)."""
    now = now or timezone.now()
    if by_reason is None:
        by_reason = ledger.balance_by_reason(wallet, at=now)
    credit_balance = sum(by_reason.values(), ZERO)
    drawn = ZERO
    if usage and wallet.wallet_status == Wallet.Status.ACTIVE:
        drawn = open_period_usage(wallet)
    return Balance(
        wallet=wallet,
        credit_balance=credit_balance,
        balance=ledger.to_currency(credit_balance, wallet),
        current_period_usage=drawn,
        as_of=now,
        by_reason=by_reason,
    )


def wallet_check(*, wallet_id: str, now: datetime | None = None) -> WalletTransaction | None:
    """After usage or a ledger change: update the alert state, and top up automatically when
    the real-time balance has fallen to the threshold. The wallet's lock makes concurrent
    checks run one after another, and a top-up disarms the wallet until its real-time balance
    is above the threshold again: one crossing tops up once. Returns the top-up, if any."""
    now = now or timezone.now()
    with transaction.atomic():
        wallet = ledger.wallet_lock(wallet_id)
        if wallet.wallet_status != Wallet.Status.ACTIVE:
            return None
        before = (wallet.alert_state, wallet.auto_topup_armed)
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
                idempotency_key=f"{AUTO_TOPUP_KEY}{now.isoformat()}",
                description="Auto top-up",
            )
            wallet.last_auto_topup_at, wallet.auto_topup_armed = now, False
            live = wallet_balance(wallet, now=now)
        elif wallet.auto_topup_threshold is not None:
            wallet.auto_topup_armed |= live.real_time_credit_balance > wallet.auto_topup_threshold
        alert_state = alerts.alert_state_for(wallet.alert_settings, live.real_time_credit_balance)
        if alert_state != wallet.alert_state:
            alerts.alert_change_record(
                customer=wallet.customer,
                entity_type=AlertEntity.WALLET,
                entity_id=wallet.pk,
                alert_type=AlertType.LOW_ONGOING_BALANCE,
                config=wallet.alert_settings,
                before=wallet.alert_state,
                after=alert_state,
                value=live.real_time_credit_balance,
            )
        wallet.alert_state = alert_state
        if ALERT_ORDER.index(wallet.alert_state) > ALERT_ORDER.index(before[0]):
            outbox.wallet_emit(
                event_type=EventType.WALLET_BALANCE_LOW,
                wallet=wallet,
                alert_state=wallet.alert_state,
                previous_alert_state=before[0],
                real_time_credit_balance=plain_decimal(live.real_time_credit_balance),
            )
        if topped is not None or (wallet.alert_state, wallet.auto_topup_armed) != before:
            wallet.save(
                update_fields=[
                    "alert_state",
                    "auto_topup_armed",
                    "last_auto_topup_at",
                    "updated_at",
                ]
            )
        return topped


def _auto_topup_due(wallet: Wallet, real_time_credits: Decimal, now: datetime) -> bool:
    if not (wallet.auto_topup_enabled and wallet.auto_topup_armed):
        return False
    if not (wallet.auto_topup_amount or 0) > 0 or wallet.auto_topup_threshold is None:
        return False
    if real_time_credits > wallet.auto_topup_threshold:
        return False
    last = wallet.last_auto_topup_at
    return last is None or now >= last + wallet.auto_topup_cooldown


def customer_wallets_check(*, customer_id: str) -> int:
    """``wallet_check`` for each active wallet of a customer; returns the top-ups made."""
    ids = Wallet.objects.filter(
        customer_id=customer_id, wallet_status=Wallet.Status.ACTIVE
    ).values_list("pk", flat=True)
    return sum(wallet_check(wallet_id=pk) is not None for pk in ids)


def credits_expire(*, now: datetime) -> int:
    return ledger.expire_due(now=now)
