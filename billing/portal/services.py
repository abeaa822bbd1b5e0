"""What a customer does in the portal: buying credits."""

from decimal import Decimal

from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction

from billing.models import Wallet, WalletTransaction
from billing.portal.selectors import portal_subscription, portal_wallet
from billing.wallets import wallet_create, wallet_top_up
from metering.models import Customer


def _wallet_to_buy_into(customer: Customer) -> Wallet:
    """The open wallet the portal shows; without one, a new PRE_PAID wallet in the currency
    of the customer's subscription (a concurrent request may have just made it)."""
    subscription = portal_subscription(customer)
    wallet = portal_wallet(customer, subscription)
    if wallet is not None:
        return wallet
    if subscription is None:
        raise ValidationError("There is no subscription or wallet to buy credits for.")
    try:
        with transaction.atomic():
            return wallet_create(
                customer=customer, currency=subscription.currency, name="Prepaid credits"
            )
    except (IntegrityError, ValidationError):
        wallet = portal_wallet(customer, subscription)
        if wallet is None:
            raise
        return wallet


@transaction.atomic
def credits_buy(*, customer: Customer, credits: Decimal, idempotency_key: str) -> WalletTransaction:
    """An invoiced purchase (PURCHASED_CREDIT_INVOICED): a finalized invoice and pending credits
    that become usable when it is paid. The form's key makes a second submit a replay."""
    return wallet_top_up(
        wallet=_wallet_to_buy_into(customer),
        reason=WalletTransaction.Reason.PURCHASED_CREDIT_INVOICED,
        credits=credits,
        idempotency_key=f"portal:{idempotency_key}",
        description="Bought in the portal",
    )
