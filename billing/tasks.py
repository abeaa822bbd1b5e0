from celery import shared_task
from django.utils import timezone

from billing import services


@shared_task(acks_late=True)
def invoice_recompute(subscription_id: str) -> None:
    services.subscription_recompute(subscription_id=subscription_id)


@shared_task
def periods_close() -> int:
    return services.periods_close(now=timezone.now())


@shared_task
def drafts_refresh() -> int:
    """Safety net: recompute drafts older than their customers' newest events."""
    return services.stale_drafts_refresh()
