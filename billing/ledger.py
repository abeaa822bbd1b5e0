"""The wallet ledger: credit blocks, debits that consume them in order, and the balance.

Every write locks the wallet's row first, so one wallet's ledger changes one transaction at a
time: a debit sees every block committed before it, and an idempotency key is checked and
stored under the same lock. Nothing here stores a balance: it is the sum of the usable
blocks' remaining credits, and a block's remaining credits are its amount less what debits
consumed of it.
"""

from collections import defaultdict
from datetime import datetime
from decimal import ROUND_DOWN, ROUND_HALF_UP, Decimal

from django.core.exceptions import ValidationError
from django.db import connection, transaction
from django.db.models import (
    DecimalField,
    Exists,
    F,
    OuterRef,
    Q,
    QuerySet,
    Subquery,
    Sum,
    Value,
)
from django.db.models.functions import Coalesce
from django.utils import timezone

from billing import outbox
from billing.models import (
    CreditConsumption,
    EventType,
    Invoice,
    Subscription,
    Wallet,
    WalletTransaction,
)
from billing.signals import wallet_changed_on_commit
from catalog.money import minor_unit_exponent

PLACES = Decimal("1e-12")  # the ledger's precision, in credits and in currency
LIMIT = Decimal("1e16")  # its fields hold 16 digits before the point
ZERO = Decimal(0)
Reason = WalletTransaction.Reason


class InsufficientCredits(ValidationError):
    pass


def spendable_worth(credits: Decimal, wallet: Wallet) -> Decimal:
    """What ``credits`` can pay, in whole minor units of the wallet's currency: their exact
    worth rounded down, so never more than there is."""
    return round_down(credits * wallet.conversion_rate, wallet.currency)


def to_currency(credits: Decimal, wallet: Wallet) -> Decimal:
    return (credits * wallet.conversion_rate).quantize(PLACES, ROUND_HALF_UP)


def to_credits(amount: Decimal, wallet: Wallet, rounding=ROUND_HALF_UP) -> Decimal:
    return (amount / wallet.conversion_rate).quantize(PLACES, rounding)


def fits(credits: Decimal, wallet: Wallet) -> bool:
    """Whether a block of ``credits`` and its worth fit the ledger's fields."""
    return credits < LIMIT and credits * wallet.conversion_rate < LIMIT


def round_down(amount: Decimal, currency: str) -> Decimal:
    """What of ``amount`` can be spent in the currency: never more than there is."""
    return amount.quantize(Decimal(1).scaleb(-minor_unit_exponent(currency)), ROUND_DOWN)


def wallet_lock(wallet_id: str) -> Wallet:
    """The wallet, locked until the transaction ends. Call inside ``transaction.atomic``."""
    return Wallet.objects.select_for_update().get(pk=wallet_id)


def consumed():
    """Of a credit block, what debits took of it (0 if none)."""
    return Coalesce(
        Subquery(
            CreditConsumption.objects.filter(credit=OuterRef("pk"))
            .values("credit")
            .annotate(total=Sum("credits"))
            .values("total"),
            output_field=DecimalField(max_digits=28, decimal_places=12),
        ),
        Value(ZERO),
        output_field=DecimalField(max_digits=28, decimal_places=12),
    )


def with_remaining(transactions: QuerySet) -> QuerySet:
    """Transactions annotated with ``remaining``: a credit's amount less what debits took."""
    return transactions.annotate(remaining=F("credit_amount") - consumed())


def blocks(wallet: Wallet) -> QuerySet:
    """The wallet's completed credit blocks, each annotated with ``remaining``."""
    return with_remaining(
        WalletTransaction.objects.filter(
            wallet=wallet,
            type=WalletTransaction.Type.CREDIT,
            transaction_status=WalletTransaction.Status.COMPLETED,
        )
    )


def _unexpired(at: datetime) -> Q:
    return Q(expiry_date__isnull=True) | Q(expiry_date__gt=at)


def usable_blocks(wallet: Wallet, *, at: datetime | None = None) -> QuerySet:
    """Blocks with credits left that have not expired at ``at``, in the order they are
    consumed: priority (lower first, none last), then earliest expiry (none last), then age."""
    at = at or timezone.now()
    return (
        blocks(wallet)
        .filter(_unexpired(at), remaining__gt=0)
        .order_by(
            F("priority").asc(nulls_last=True),
            F("expiry_date").asc(nulls_last=True),
            "created_at",
            "id",
        )
    )


def exact(credits) -> Decimal:
    """A number from the database at the ledger's precision: a no-op on PostgreSQL, whose
    numerics are exact; on SQLite (development only), whose raw reads and sums are floats,
    it drops their float residue."""
    if credits is None:
        return ZERO
    if not isinstance(credits, Decimal):
        credits = Decimal(repr(credits))  # the shortest text that reads back as the float
    return credits.quantize(PLACES)


def balances_by_reason(wallet_ids, *, at: datetime | None = None) -> dict[str, dict]:
    """For each wallet, the credits it can spend at ``at`` by the reason they were given:
    its unexpired completed blocks, less what debits took of them. One plain statement for
    any number of wallets: a page of them, or one on the real-time balance's hot path."""
    ids = list(wallet_ids)
    left = {pk: defaultdict(lambda: ZERO) for pk in ids}
    if not ids:
        return {}
    block, taken = WalletTransaction._meta.db_table, CreditConsumption._meta.db_table
    at = connection.ops.adapt_datetimefield_value(at or timezone.now())
    with connection.cursor() as cursor:
        cursor.execute(
            f"""SELECT t.wallet_id, t.transaction_reason, t.credit_amount,
                       (SELECT sum(c.credits) FROM {taken} c WHERE c.credit_id = t.id)
                  FROM {block} t
                 WHERE t.wallet_id IN ({", ".join(["%s"] * len(ids))})
                   AND t.type = %s AND t.transaction_status = %s
                   AND (t.expiry_date IS NULL OR t.expiry_date > %s)""",
            [*ids, WalletTransaction.Type.CREDIT, WalletTransaction.Status.COMPLETED, at],
        )
        for wallet_id, reason, amount, consumed in cursor.fetchall():
            left[wallet_id][reason] += exact(amount) - exact(consumed)
    return {pk: dict(by_reason) for pk, by_reason in left.items()}


def balance_by_reason(wallet: Wallet, *, at: datetime | None = None) -> dict[str, Decimal]:
    return balances_by_reason([wallet.pk], at=at)[wallet.pk]


def balance(wallet: Wallet, *, at: datetime | None = None) -> Decimal:
    """The credits the wallet can spend at ``at``."""
    return sum(balance_by_reason(wallet, at=at).values(), ZERO)


def replayed(wallet: Wallet, key: str | None, **expected) -> WalletTransaction | None:
    """The transaction an idempotency key already made, if the request is the same one."""
    if not key:
        return None
    done = WalletTransaction.objects.filter(wallet=wallet, idempotency_key=key).first()
    if done is None:
        return None
    for name, value in expected.items():
        if value is not None and getattr(done, name) != value:
            raise ValidationError(
                {"idempotency_key": f"{key!r} was used for a different transaction."}
            )
    return done


def credit(
    *,
    wallet: Wallet,
    credits: Decimal,
    reason: str,
    amount: Decimal | None = None,
    status: str = WalletTransaction.Status.COMPLETED,
    priority: int | None = None,
    expiry_date: datetime | None = None,
    invoice: Invoice | None = None,
    idempotency_key: str | None = None,
    description: str = "",
    metadata: dict | None = None,
) -> tuple[WalletTransaction, bool]:
    """Add a block of credits, worth ``amount`` when it was bought for that (credits × rate
    may be a hair off); a replayed idempotency key returns the first one, not created."""
    wallet = wallet_lock(wallet.pk)
    done = replayed(
        wallet, idempotency_key, type=WalletTransaction.Type.CREDIT, credit_amount=credits
    )
    if done is not None:
        return done, False
    if wallet.wallet_status == Wallet.Status.CLOSED:
        raise ValidationError("The wallet is closed.")
    if credits <= 0:
        raise ValidationError({"credits": "Credits must be more than 0."})
    if not fits(credits, wallet):
        raise ValidationError({"credits": f"The ledger holds less than {LIMIT:,f} per block."})
    block = WalletTransaction.objects.create(
        wallet=wallet,
        type=WalletTransaction.Type.CREDIT,
        transaction_status=status,
        transaction_reason=reason,
        credit_amount=credits,
        amount=to_currency(credits, wallet) if amount is None else amount,
        priority=priority,
        expiry_date=expiry_date,
        invoice=invoice,
        idempotency_key=idempotency_key or None,
        description=description,
        metadata=metadata or {},
    )
    wallet_changed_on_commit(wallet.customer_id)
    if status == WalletTransaction.Status.COMPLETED:
        credits_usable_emit(block=block)
    return block, True


def credits_usable_emit(*, block: WalletTransaction) -> None:
    """wallet.topped_up, when a block's credits become usable: top-ups, purchases once
    paid, grants and bonuses; not a voided invoice's refund, which only gives back."""
    if block.transaction_reason != Reason.INVOICE_VOID_REFUND:
        outbox.wallet_emit(event_type=EventType.WALLET_TOPPED_UP, wallet=block.wallet, entry=block)


def debit(
    *,
    wallet: Wallet,
    credits: Decimal,
    reason: str,
    invoice: Invoice | None = None,
    idempotency_key: str | None = None,
    description: str = "",
    at: datetime | None = None,
    only: WalletTransaction | None = None,
    amount: Decimal | None = None,
) -> tuple[WalletTransaction, bool]:
    """Take ``credits`` from the usable blocks in order (from ``only``, if given), or refuse
    the whole debit when there are fewer. ``amount`` is what they paid in the currency, when
    known exactly (credits × rate may be a hair off). A replayed idempotency key returns the
    first one."""
    wallet = wallet_lock(wallet.pk)
    done = replayed(
        wallet, idempotency_key, type=WalletTransaction.Type.DEBIT, credit_amount=credits
    )
    if done is not None:
        return done, False
    if credits <= 0:
        raise ValidationError({"credits": "Credits must be more than 0."})
    source = usable_blocks(wallet, at=at)
    if only is not None:
        source = blocks(wallet).filter(pk=only.pk, remaining__gt=0)
    taken, needed = [], credits
    for block in source:
        take = min(exact(block.remaining), needed)
        if take <= 0:
            continue
        taken.append((block, take))
        needed -= take
        if needed == 0:
            break
    if needed > 0:
        raise InsufficientCredits(
            f"The wallet has {credits - needed:f} credits; {credits:f} are needed."
        )
    entry = WalletTransaction.objects.create(
        wallet=wallet,
        type=WalletTransaction.Type.DEBIT,
        transaction_reason=reason,
        credit_amount=credits,
        amount=to_currency(credits, wallet) if amount is None else amount,
        invoice=invoice,
        idempotency_key=idempotency_key or None,
        description=description,
    )
    CreditConsumption.objects.bulk_create(
        CreditConsumption(debit=entry, credit=block, credits=take) for block, take in taken
    )
    wallet_changed_on_commit(wallet.customer_id)
    return entry, True


def expire_due(*, now: datetime) -> int:
    """Debit what is left of every block expired by ``now``, once per block. A block waits
    while its customer has a period open that began before it expired: closing that period
    may still take it (see ``credits.invoice_credits_consume``)."""
    expired = 0
    unclosed = Subscription.objects.filter(
        customer_id=OuterRef("wallet__customer_id"),
        currency=OuterRef("wallet__currency"),
        status=Subscription.Status.ACTIVE,
        current_period_start__lt=OuterRef("expiry_date"),
    )
    lapsed = WalletTransaction.objects.filter(
        type=WalletTransaction.Type.CREDIT,
        transaction_status=WalletTransaction.Status.COMPLETED,
        expiry_date__lte=now,
    ).exclude(Exists(unclosed))
    due = with_remaining(lapsed).filter(remaining__gt=0).values_list("pk", "wallet_id")
    for block_id, wallet_id in list(due[:1000]):
        with transaction.atomic():
            wallet = wallet_lock(wallet_id)
            block = blocks(wallet).get(pk=block_id)
            if exact(block.remaining) <= 0:
                continue  # consumed or expired meanwhile
            entry, created = debit(
                wallet=wallet,
                credits=exact(block.remaining),
                reason=Reason.CREDIT_EXPIRED,
                idempotency_key=f"expire:{block.pk}",
                description=f"Credits of {block.pk} expired at {block.expiry_date:%Y-%m-%d %H:%M}.",
                only=block,
            )
            if created:
                outbox.wallet_emit(
                    event_type=EventType.WALLET_CREDITS_EXPIRED,
                    wallet=wallet,
                    entry=entry,
                    expired_transaction_id=block.pk,
                )
            expired += created
    return expired


def refund(*, debit_entry: WalletTransaction, reason: str, idempotency_key: str) -> int:
    """Give back what a debit consumed, block by block, with each block's priority and expiry.
    Returns how many blocks were made (0 on a replay)."""
    made = 0
    for part in debit_entry.consumptions.select_related("credit").order_by("pk"):
        _, created = credit(
            wallet=debit_entry.wallet,
            credits=part.credits,
            reason=reason,
            priority=part.credit.priority,
            expiry_date=part.credit.expiry_date,
            invoice=debit_entry.invoice,
            idempotency_key=f"{idempotency_key}:{part.credit_id}",
            description=f"Refund of {debit_entry.pk}.",
        )
        made += created
    return made
