"""The outbox: events about money, written with the change they report (DESIGN: side
effects leave through an outbox)."""

from functools import partial

from django.db import transaction

from billing.models import (
    AlertLog,
    Budget,
    EventType,
    Invoice,
    OutboxEvent,
    Subscription,
    Wallet,
    WalletTransaction,
)
from billing.webhook_tasks import webhook_event_dispatch
from config.admin import plain_decimal
from metering.models import Customer


def event_emit(
    *, event_type: EventType | str, data: dict, customer_id: str | None = None
) -> OutboxEvent:
    """Record an event in the caller's transaction: it exists if and only if the change
    it reports committed."""
    event_type = EventType(event_type)
    if not transaction.get_connection().in_atomic_block:
        raise RuntimeError("event_emit must run inside the transaction of its change")
    event = OutboxEvent.objects.create(event_type=event_type, data=data, customer_id=customer_id)
    # Robust: a broker down must not fail a committed change; the sweep dispatches it later.
    transaction.on_commit(partial(webhook_event_dispatch.delay, event.pk), robust=True)
    return event


# Payloads: ids, the customer's external id, amounts as plain decimal strings, currency and
# status; a receiver fetches the rest from the API.


def _customer(customer_id: str) -> dict:
    external_id = Customer.objects.values_list("external_id", flat=True).get(pk=customer_id)
    return {"customer_id": customer_id, "external_customer_id": external_id}


def invoice_emit(*, event_type: EventType, invoice: Invoice) -> OutboxEvent:
    data = {
        "invoice_id": invoice.pk,
        "invoice_number": invoice.invoice_number,
        **_customer(invoice.customer_id),
        "subscription_id": invoice.subscription_id,
        "invoice_type": invoice.invoice_type,
        "invoice_status": invoice.invoice_status,
        "payment_status": invoice.payment_status,
        "currency": invoice.currency,
        "subtotal": plain_decimal(invoice.subtotal),
        "total": plain_decimal(invoice.total),
        "amount_due": plain_decimal(invoice.amount_due),
        "amount_paid": plain_decimal(invoice.amount_paid),
        "amount_remaining": plain_decimal(invoice.amount_remaining),
    }
    return event_emit(event_type=event_type, data=data, customer_id=invoice.customer_id)


def wallet_emit(
    *, event_type: EventType, wallet: Wallet, entry: WalletTransaction | None = None, **extra
) -> OutboxEvent:
    """A wallet's event; ``entry`` is the ledger entry behind it (a top-up, an expiry)."""
    data = {
        "wallet_id": wallet.pk,
        **_customer(wallet.customer_id),
        "currency": wallet.currency,
        "wallet_status": wallet.wallet_status,
        **extra,
    }
    if entry is not None:
        data |= {
            "transaction_id": entry.pk,
            "transaction_reason": entry.transaction_reason,
            "credits": plain_decimal(entry.credit_amount),
            "amount": plain_decimal(entry.amount),
        }
    return event_emit(event_type=event_type, data=data, customer_id=wallet.customer_id)


def subscription_emit(*, event_type: EventType, subscription: Subscription) -> OutboxEvent:
    data = {
        "subscription_id": subscription.pk,
        **_customer(subscription.customer_id),
        "plan_id": subscription.plan_id,
        "currency": subscription.currency,
        "subscription_status": subscription.status,
        "start_date": subscription.start_date,
        "end_date": subscription.end_date,
        "cancel_at_period_end": subscription.cancel_at_period_end,
    }
    return event_emit(event_type=event_type, data=data, customer_id=subscription.customer_id)


def alert_emit(*, log: AlertLog) -> OutboxEvent:
    """A change of an alert's state (``billing.alerts``)."""
    data = {
        "alert_log_id": log.pk,
        **_customer(log.customer_id),
        "alert_type": log.alert_type,
        "alert_status": log.alert_status,
        "previous_status": log.previous_status,
        "entity_type": log.entity_type,
        "entity_id": log.entity_id,
        "parent_entity_id": log.parent_entity_id,
        "value": plain_decimal(log.value),
    }
    return event_emit(
        event_type=EventType.ALERT_STATE_CHANGED, data=data, customer_id=log.customer_id
    )


def budget_emit(*, budget: Budget, percent: int) -> OutboxEvent:
    """A customer budget's threshold reached, once per period (``billing.budgets``)."""
    data = {
        "budget_id": budget.pk,
        **_customer(budget.customer_id),
        "feature_id": budget.feature_id,
        "percent": percent,
        "currency": budget.currency,
        "amount": plain_decimal(budget.amount),
        "spent": plain_decimal(budget.spent),
        "capped": budget.capped,
    }
    return event_emit(
        event_type=EventType.BUDGET_THRESHOLD_REACHED, data=data, customer_id=budget.customer_id
    )
