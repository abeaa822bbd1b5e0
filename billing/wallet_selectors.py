"""What the admin and the portal show of wallets: the ledger, its blocks' remaining credits and
what each debit took. Reads only; the balance itself is ``billing.wallets.wallet_balance``."""

from decimal import Decimal

from django.db.models import Prefetch, QuerySet

from billing import ledger
from billing.models import CreditConsumption, WalletTransaction


def ledger_entries(
    *,
    wallets,
    type: str | None = None,
    status: str | None = None,
    reason: str | None = None,
) -> QuerySet:
    """The wallets' transactions, newest first, each with ``consumed`` (of a credit block, what
    debits took of it) and its debits' ``consumptions`` (which blocks they drew on)."""
    entries = WalletTransaction.objects.filter(wallet__in=wallets)
    if type:
        entries = entries.filter(type=type)
    if status:
        entries = entries.filter(transaction_status=status)
    if reason:
        entries = entries.filter(transaction_reason=reason)
    return (
        entries.select_related("wallet", "invoice")
        .annotate(consumed=ledger.consumed())
        .prefetch_related(
            Prefetch(
                "consumptions",
                queryset=CreditConsumption.objects.select_related("credit").order_by("pk"),
            )
        )
        .order_by("-created_at", "-id")
    )


def block_remaining(entry: WalletTransaction) -> Decimal | None:
    """What is left of a completed credit block (expired or not); None for anything else.
    ``entry`` comes from ``ledger_entries``."""
    if (
        entry.type != WalletTransaction.Type.CREDIT
        or entry.transaction_status != WalletTransaction.Status.COMPLETED
    ):
        return None
    return entry.credit_amount - entry.consumed
