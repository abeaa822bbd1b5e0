"""Billing's Celery tasks, and the coalesced requests that queue a draft's recompute."""

from celery import shared_task
from django.utils import timezone

from billing import alerts, budgets, emails, entitlements, selectors, services, wallets
from config.coalesce import Coalescer

RECOMPUTE_DELAY_SECONDS = 1


def _queue_recompute(subscription_id: str) -> None:
    invoice_recompute.apply_async((subscription_id,), countdown=RECOMPUTE_DELAY_SECONDS)


recompute_requests = Coalescer(
    "recompute", countdown=RECOMPUTE_DELAY_SECONDS, queue=_queue_recompute
)


def invoices_refresh_request(*, external_customer_ids) -> int:
    """Ask for a recompute of these customers' drafts, coalescing bursts into one task."""
    ids = selectors.active_subscription_ids(external_customer_ids=list(external_customer_ids))
    return sum(recompute_requests.request(subscription_id) for subscription_id in ids)


def subscription_recompute(*, subscription_id: str):
    """The task's body: requests from its start on queue another run."""
    with recompute_requests.running(subscription_id):
        invoice = services.subscription_recompute(subscription_id=subscription_id)
        if invoice is not None:
            wallets.customer_wallets_check(customer_id=invoice.customer_id)
            entitlements.entitlements_exceeded_record(subscription_id=subscription_id)
            alerts.subscription_alerts_check(subscription_id=subscription_id)
            budgets.customer_budgets_check(customer_id=invoice.customer_id)
        return invoice


@shared_task(acks_late=True)
def invoice_recompute(subscription_id: str) -> None:
    subscription_recompute(subscription_id=subscription_id)


@shared_task
def periods_close() -> int:
    closed = services.periods_close(now=timezone.now())
    budgets.budgets_refresh()  # a new period re-arms budgets and lifts their caps
    return closed


@shared_task
def drafts_refresh() -> int:
    """Safety net: queue a recompute for every request still pending (its task was lost),
    and recompute drafts whose customer has events their last computation did not read."""
    recompute_requests.sweep()
    ids = selectors.stale_draft_subscription_ids()
    for subscription_id in ids:
        subscription_recompute(subscription_id=subscription_id)
    return len(ids)


@shared_task
def credits_expire() -> int:
    """Debit what is left of expired credit blocks, then re-check those wallets' state."""
    return wallets.credits_expire(now=timezone.now())


@shared_task(autoretry_for=(Exception,), retry_backoff=5, max_retries=5)
def email_send(email_id: str) -> bool:
    """After its commit; if every retry fails, the beat sweep tries again."""
    return emails.email_deliver(email_id=email_id)


@shared_task
def emails_sweep() -> int:
    """Safety net: send the emails whose task was lost (a worker killed, a broker down)."""
    ids = emails.emails_unsent(now=timezone.now())
    for email_id in ids:
        email_send.delay(email_id)
    return len(ids)
